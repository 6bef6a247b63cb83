"""Shared fixtures: the wire test vectors, free ports, subprocess helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from socat import SocatPairs

VECTORS_PATH = Path(__file__).with_name("vectors.json")


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    return json.loads(VECTORS_PATH.read_text())


@pytest.fixture
def socat(tmp_path: Path) -> Iterator[SocatPairs]:
    """Virtual serial pairs (socat ptys) under tmp_path, stopped after the test."""
    with SocatPairs(tmp_path) as pairs:
        yield pairs
