"""The C device library on its targets: the C test suite on a Cortex-M0 and an AVR, and
the stack the sensor firmware really uses.

Each suite runs in the host profile and the shipped defaults, and on the Cortex-M0 also
in the reliable profile (SIG_CONFIG_RELIABLE).
(a) ``make -C firmware_bridge target-m0-test TP=<profile>`` builds the suite for the
nRF51 (Cortex-M0) with arm-none-eabi-gcc; QEMU's ``microbit`` machine runs it, its UART0
on stdout, and semihosting returns the runner's exit status. (b) ``target-avr-test``
builds it for an ATmega2560 with avr-gcc (16-bit int and size_t, 32-bit double); simavr
runs it through ``simavr_run`` (libsimavr), the firmware's USART0 on stdout and its exit
status as the runner's. Both: the exit status, every test's ``ok`` line, the names
of the tests the target leaves out (firmware_bridge/targets/targets.mk) and the
final "N passed, M failed" line are checked, each run under a timeout. (c) The
sensor sketch as nRF51 firmware in QEMU, driven through a gateway: its painted
stack is read back from QEMU's RAM.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware_bridge"
TB = FW / "build" / "targets"
sys.path.insert(0, str(ROOT / "hil"))

from rig import QEMU, SENDER, Rig, build_device  # noqa: E402

import sig  # noqa: E402

#: Seconds a whole suite may take in its simulator (a few here; bounded on a loaded machine).
RUN_TIMEOUT = 600
#: simavr_run's own bound: the suite is about 2.7 billion AVR cycles (UT_SCALE=20).
AVR_MAX_CYCLES = 12_000_000_000


def _make(*targets: str) -> None:
    proc = subprocess.run(
        ["make", "-s", "-C", str(FW), *targets],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def _host_tests() -> list[str]:
    """The RUN list of the host runner, tests/test_main.c."""
    text = (FW / "tests" / "test_main.c").read_text(encoding="utf-8")
    return re.findall(r"^\s*RUN\((\w+)\);", text, re.M)


def _excluded(target: str) -> list[str]:
    """TARGET_EXCLUDED_<target> of targets.mk."""
    text = (FW / "targets" / "targets.mk").read_text(encoding="utf-8")
    match = re.search(rf"^TARGET_EXCLUDED_{target} := (.*)$", text, re.M)
    assert match, f"no TARGET_EXCLUDED_{target} in targets.mk"
    return match.group(1).split()


def _check_suite(output: str, target: str) -> dict[str, int]:
    """Assert a target run's output is a full, passing run; return its figures."""
    lines = [line.rstrip("\r") for line in output.splitlines()]
    failed = [line for line in lines if line.startswith("FAIL")]
    assert not failed, "\n".join(line for line in lines if "FAIL" in line)[-4000:]
    ran = [line[5:] for line in lines if line.startswith("ok   ")]
    excluded = _excluded(target)
    expected = [name for name in _host_tests() if name not in excluded]
    assert ran == expected, f"ran {ran}, expected {expected}"
    not_run = [line for line in lines if line.startswith("not run on this target: ")]
    assert len(not_run) == 1 and all(name in not_run[0] for name in excluded), not_run
    summary = [re.fullmatch(r"(\d+) passed, (\d+) failed", line) for line in lines]
    found = [m for m in summary if m]
    assert len(found) == 1, output[-2000:]
    assert int(found[0].group(1)) == len(expected) and int(found[0].group(2)) == 0
    stack = re.search(r"^stack peak (\d+) of (\d+) bytes$", "\n".join(lines), re.M)
    assert stack, output[-2000:]
    return {"stack": int(stack.group(1)), "stack_reserved": int(stack.group(2))}


#: firmware_bridge/Makefile's PROFILE_host, the shipped defaults, and PROFILE_reliable (the
#: reliable UART mode: tests/test_reliable.c's session tests on the target)
PROFILES = ["host", "default", "reliable"]
#: the AVR runs the first two: with the reliable vectors (constant tables are RAM on AVR)
#: the suite's data leaves the ATmega2560's 64 KB too little stack
AVR_PROFILES = ["host", "default"]


@pytest.mark.parametrize("profile", PROFILES)
def test_c_suite_on_cortex_m0_in_qemu_microbit(profile: str) -> None:
    _make("target-m0-test", f"TP={profile}")
    proc = subprocess.run(
        [
            QEMU,
            "-M",
            "microbit",
            "-global",
            "nrf51-soc.sram-size=32768",  # the suite's buffers: nrf51_test.ld
            "-display",
            "none",
            "-monitor",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
            "-serial",
            "stdio",
            "-kernel",
            str(TB / "m0" / f"test_sig-{profile}.elf"),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"profile {profile}, sizeof(int) 4, sizeof(size_t) 4" in proc.stdout
    figures = _check_suite(proc.stdout, "m0")
    assert 0 < figures["stack"] < figures["stack_reserved"]


@pytest.mark.parametrize("profile", AVR_PROFILES)
def test_c_suite_on_avr_in_simavr(profile: str) -> None:
    _make("target-avr-test", f"TP={profile}")
    proc = subprocess.run(
        [
            str(TB / "simavr_run"),
            "--mcu",
            "atmega2560",
            "--xmem",
            "--max-cycles",
            str(AVR_MAX_CYCLES),
            str(TB / "avr" / f"test_sig-{profile}.elf"),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    # 16-bit int and size_t, 32-bit double: the widths the AVR bugs came from
    widths = "sizeof(int) 2, sizeof(size_t) 2, sizeof(void *) 2, sizeof(double) 4"
    assert f"profile {profile}, {widths}" in proc.stdout
    figures = _check_suite(proc.stdout, "avr")
    # the painted stack against simavr's lowest stack pointer: a frame can be
    # allocated and not written to its end, never written without being allocated
    lowest = re.search(r"lowest SP 0x([0-9a-f]{4}) \(ramend 0x([0-9a-f]{4})\)", proc.stderr)
    assert lowest, proc.stderr
    assert 0 < figures["stack"] <= int(lowest.group(2), 16) - int(lowest.group(1), 16)


@pytest.fixture
def firmware_rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, "qemu", build_device("qemu"), case="stack")
    try:
        yield rig
    finally:
        rig.close()


def test_sensor_firmware_stack_high_water_mark(firmware_rig: Rig) -> None:
    """Every path of the sketch once (event, listener echo, both handlers, the error reply),
    then the painted stack read from QEMU's RAM: used, and well inside what is reserved."""
    rig = firmware_rig
    inbox = rig.listen(SENDER, None)
    rig.start_device()
    inbox.wait(SENDER, "#connect")
    rig.wait_device_listening()
    assert isinstance(inbox.wait(SENDER, "temperature"), float)
    assert isinstance(rig.client.request(SENDER, "get_temp"), float)
    assert rig.client.request(SENDER, "m" * 40, {"x": [1, 2, 3]}) == "m" * 40
    with pytest.raises(sig.HandlerError, match="name too long"):
        rig.client.request(SENDER, "n" * 100)  # over the handler's 64-byte buffer
    timer = rig.client.add_sender("timer", ["tick"])
    timer.trigger("tick", {"deep": [[[1.5]]]})
    assert inbox.wait(SENDER, "echo") == {"deep": [[[1.5]]]}
    peak = rig.stack_peak()
    reserved = 2048  # __stack_size of targets/nrf51/sections.ld
    (TB / "m0" / "stack_peak.txt").write_text(f"{peak}\n", encoding="ascii")
    print(f"nRF51 sensor firmware: stack high-water mark {peak} B of {reserved} B")
    assert 64 < peak < reserved  # more than main and loop alone; no overflow
