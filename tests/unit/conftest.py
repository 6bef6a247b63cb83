"""Fixtures of the sans-I/O tests: a fake clock and a gateway core that runs on it."""

from __future__ import annotations

import pytest
from fakes import FakeClock

from sig.core.gateway import GatewayCore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def core(clock: FakeClock) -> GatewayCore:
    return GatewayCore("gw", request_timeout=5.0, clock=clock)
