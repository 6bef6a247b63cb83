"""Fixtures of the integration tests.

``rig`` is a SerialRig (gateway, socat ptys, emulated devices) closed after
the test; ``gateway`` an in-process ServerRouter on a free 127.0.0.1 port,
stopped after it. A test module that needs another kind of rig defines its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from serial_rig import SerialRig

from sig.routers.gateway import ServerRouter


@pytest.fixture
async def rig() -> AsyncIterator[SerialRig]:
    r = SerialRig()
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture
async def gateway() -> AsyncIterator[ServerRouter]:
    router = ServerRouter("127.0.0.1", 0)
    await router.start()
    try:
        yield router
    finally:
        await router.stop()
