"""Fixtures of the hil/ suite; the rig itself is in rig.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rig import Rig, build_device


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "hil" in str(item.fspath):
            item.add_marker(pytest.mark.hil)


@pytest.fixture(scope="session")
def device_binary() -> Path:
    return build_device()


@pytest.fixture
def rig(tmp_path: Path, device_binary: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, device_binary)
    try:
        yield r
    finally:
        r.close()
