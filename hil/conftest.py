"""Fixtures of the hil/ suite; the rig itself is in rig.py.

Every case that uses ``rig`` runs once per device kind of this session
(rig.device_kinds(): the board, or posix_device and the QEMU firmware).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rig import Rig, build_device, device_kinds, stack_peaks

_built: dict[str, Path] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "hil" in str(item.fspath):
            item.add_marker(pytest.mark.hil)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device_kind" in metafunc.fixturenames:
        metafunc.parametrize("device_kind", device_kinds())


@pytest.fixture
def device_binary(device_kind: str) -> Path:
    """The kind's device, built once per session."""
    if device_kind not in _built:
        _built[device_kind] = build_device(device_kind)
    return _built[device_kind]


@pytest.fixture
def rig(
    tmp_path: Path, device_kind: str, device_binary: Path, request: pytest.FixtureRequest
) -> Iterator[Rig]:
    r = Rig(tmp_path, device_kind, device_binary, case=request.node.name)
    try:
        yield r
    finally:
        r.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The QEMU firmware's stack high-water mark over the cases that ran it."""
    if not stack_peaks.peaks:
        return
    worst = max(stack_peaks.peaks, key=lambda case: stack_peaks.peaks[case])
    terminalreporter.write_line(
        f"hil: nRF51 firmware stack high-water mark {stack_peaks.peaks[worst]} B of"
        f" {stack_peaks.reserved} B reserved (deepest in {worst}; {len(stack_peaks.peaks)} cases)"
    )
