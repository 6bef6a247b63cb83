"""The C library's reliable UART mode end to end: the host build of the example
device (firmware_bridge/examples/posix_device, built with SIG_CONFIG_RELIABLE=1
as build/posix_device_reliable) behind a real gateway, through
:class:`socat.NoisyRelay` flipping bits in 1 % and 5 % of the bytes the device
sends.

Every reliable trigger reaches a TCP listener exactly once and in order, every
request is answered, and the best-effort events are what the relay left
intact: the others are dropped and counted by the gateway's frame counters.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cobs import cobs
from procs import Proc, until
from serial_rig import DEADLINE, SerialRig
from socat import NoisyRelay, SocatPairs

from sig.protocol import messages as w
from sig.protocol.data import unpack

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware_bridge"
DEVICE = FW / "build" / "posix_device_reliable"
#: The gateway port's retransmission timeout (the device's is built in: 50 ms).
RTO_MS = 50
#: Bound for a whole noisy run on a loaded machine (it takes a few seconds).
RUN_DEADLINE = 180.0


@pytest.fixture
async def rig() -> AsyncIterator[SerialRig]:
    r = SerialRig()
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture(scope="module")
def device_binary() -> Path:
    proc = subprocess.run(
        ["make", "-s", "-C", str(FW), "build/posix_device_reliable"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return DEVICE


def _alarm_value(frame: bytes) -> tuple[bool, Any]:
    """(True, value) when the COBS frame is a plain TRIGGER of "#alarm" (event_ref 2)."""
    body = cobs.decode(frame.rstrip(b"\x00"))[:-2]
    if body[:2] == bytes((w.MessageType.TRIGGER, 2)):
        return True, unpack(body[2:])
    return False, None


def _sequenced(frame: bytes) -> bool:
    """True when the COBS frame (as the device sent it) has the SEQ flag."""
    try:
        body = cobs.decode(frame.rstrip(b"\x00"))
    except cobs.DecodeError:
        return False
    return bool(body) and bool(body[0] & 0x80)


@pytest.mark.parametrize("fraction", [0.01, 0.05], ids=["1%", "5%"])
async def test_c_device_reliable_through_noise(
    socat: SocatPairs, rig: SerialRig, device_binary: Path, fraction: float
) -> None:
    n, m = 100, 10
    dev, gw = socat.pair("dev"), socat.pair("gw")
    await rig.gateway(f"{gw.b},retransmit_ms={RTO_MS}", request_timeout=60)
    relay = NoisyRelay(dev.a, gw.a, fraction=fraction, seed=int(fraction * 1000) + 7)
    device: Proc | None = None
    try:
        got: list[Any] = []
        alarms: list[Any] = []
        app = await rig.client("app", request_timeout=60)
        await app.add_listener(lambda i, d: got.append(d), "sensor1", "temperature")
        await app.add_listener(lambda i, d: alarms.append(d), "sensor1", "#alarm")
        args = ["--port", str(dev.b), "--counter", "--count", str(n), "--interval-ms", "2"]
        device = Proc([str(device_binary), *args, "--keepalive-ms", "1000"])
        await until(lambda: "registered sensor1" in device.lines, DEADLINE, "the registration")
        relay.noisy = True
        started = time.monotonic()
        row = rig.link(gw.b)
        assert row["reliable"] is True and row["senders"] == ["sensor1"]
        # requests while the device triggers: the default handler answers the method name
        answers = [await app.request("sensor1", f"m{j}", timeout=60) for j in range(m)]
        assert answers == [f"m{j}" for j in range(m)]
        await until(lambda: "done" in device.lines, RUN_DEADLINE, "every reading acknowledged")
        took = time.monotonic() - started  # printed for BENCHMARKS.md, never asserted
        assert device.wait() == 0
        triggered = [ln for ln in device.lines if ln.startswith("trigger temperature ")]
        assert triggered == [f"trigger temperature {k}" for k in range(1, n + 1)]
        await until(lambda: len(got) >= n, DEADLINE, "the last reliable events")
        assert got == list(range(1, n + 1))  # exactly once, in order
        await until(
            lambda: rig.link(gw.b)["bytes_in"] == relay.bytes_to_right,
            what="the gateway to read every byte the relay wrote",
        )
        row = rig.link(gw.b)
        dropped = row["crc_errors"] + row["framing_errors"] + row["oversize"]
        stats = next(ln for ln in device.lines if ln.startswith("reliable retransmits"))
        counts = dict(zip(stats.split()[1::2], map(int, stats.split()[2::2]), strict=True))
        print(
            f"C device, noise {fraction:.0%}: frames={relay.frames} "
            f"corrupted={len(relay.corrupted)} dropped={dropped} "
            f"gateway duplicates={row['duplicates']} "
            f"out_of_order={row['out_of_order']} | device {stats} | "
            f"best effort #alarm {len(alarms)}/{n // 10} | {took:.1f} s"
        )
        # the noise did something: every sequenced frame it broke was sent again
        assert len(relay.corrupted) > 0
        assert counts["retransmits"] >= sum(map(_sequenced, relay.corrupted))
        assert dropped == len(relay.corrupted)  # each corrupted frame dropped and counted
        intact = [v for ok, v in map(_alarm_value, relay.intact) if ok]
        assert alarms == intact  # best effort: what got through, no more
        assert set(alarms) <= set(range(10, n + 1, 10))
        assert counts["failures"] == row["reliable_failures"] == 0
        assert counts["bad_acks"] == row["bad_acks"] == 0
    finally:
        if device is not None:
            device.kill()
            print("device stdout (last lines):", device.lines[-30:])  # shown when the test fails
        relay.close()
