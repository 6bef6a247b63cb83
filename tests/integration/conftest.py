"""Fixtures of the integration tests.

``rig`` is a SerialRig (gateway, socat ptys, emulated devices) closed after
the test; a test module that needs another kind of rig defines its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from serial_rig import SerialRig


@pytest.fixture
async def rig() -> AsyncIterator[SerialRig]:
    r = SerialRig()
    try:
        yield r
    finally:
        await r.close()
