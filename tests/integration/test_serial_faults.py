"""Serial faults: line noise, unplug and replug, gateway restart, on socat ptys.

Line noise runs through :class:`socat.NoisyRelay` between two socat pairs
(device <-> relay <-> gateway), which knows exactly which frames it corrupted,
so the gateway's counters are compared for equality, not plausibility.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from procs import Gateway, Proc, until
from serial_rig import DEADLINE, SerialRig
from socat import NoisyRelay, SocatPairs

from sig.protocol.data import unpack
from sig.protocol.messages import MessageType
from sig.routers.client import AsyncClientRouter

KEEPALIVE_MS = 1000  #: what the emulated devices ask for; link timeout is 3x this


def _trigger_value(frame: bytes) -> tuple[bool, Any]:
    """(is a TRIGGER of event_ref 1, its value) for the COBS bytes of a clean frame."""
    from cobs import cobs

    body = cobs.decode(frame)[:-2]
    if body[0] != MessageType.TRIGGER or body[1] != 1:
        return False, None
    return True, unpack(body[2:])


async def _noisy_run(
    socat: SocatPairs, rig: SerialRig, *, keep_zeros: bool, seed: int, n: int = 400
) -> tuple[NoisyRelay, dict[str, Any], list[Any]]:
    """Send ``n`` triggers through a noisy relay; return it, the gateway's row, deliveries."""
    dev, gw = socat.pair("dev"), socat.pair("gw")
    await rig.gateway(gw.b)
    relay = NoisyRelay(dev.a, gw.a, fraction=0.02, seed=seed, keep_zeros=keep_zeros)
    try:
        got: list[Any] = []
        app = await rig.client("app")
        await app.add_listener(lambda i, d: got.append(d), "sensor1", "temperature")
        sim = await rig.device(dev.b, keepalive_ms=KEEPALIVE_MS)
        await sim.wait_for("REGISTERED", DEADLINE)
        relay.noisy = True
        for i in range(n):
            assert sim.trigger("temperature", i)
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the transport write as a device would
        await until(
            lambda: sum(_trigger_value(f)[0] for f in relay.intact + relay.corrupted) == n,
            what="the relay to forward every trigger",
        )
        await sim.stop()  # no more bytes: the counters can settle
        await until(
            lambda: rig.link(gw.b)["bytes_in"] == relay.bytes_to_right,
            what="the gateway to read every byte the relay wrote",
        )
        return relay, rig.link(gw.b), got
    finally:
        relay.close()


async def test_line_noise_every_corrupted_frame_dropped_and_counted(
    socat: SocatPairs, rig: SerialRig
) -> None:
    relay, row, got = await _noisy_run(socat, rig, keep_zeros=True, seed=20240611)
    dropped = row["crc_errors"] + row["framing_errors"] + row["oversize"]
    print(
        f"noise (delimiters kept): frames={relay.frames} corrupted={len(relay.corrupted)} "
        f"flipped_bytes={relay.flipped_bytes} crc_errors={row['crc_errors']} "
        f"framing_errors={row['framing_errors']} oversize={row['oversize']} "
        f"frames_in={row['frames_in']} delivered={len(got)}"
    )
    assert len(relay.corrupted) > 20  # the noise did something
    assert dropped == len(relay.corrupted)
    assert row["frames_in"] == len(relay.intact)
    intact_triggers = [v for ok, v in map(_trigger_value, relay.intact) if ok]
    # The gateway has read every byte; its EVENTs may still be on their way to the app.
    await until(lambda: len(got) >= len(intact_triggers), what="the events to reach the app")
    assert got == intact_triggers  # every intact event delivered, in order, nothing else
    assert row["oversize"] == 0 and row["port_state"] == "open"


async def test_line_noise_that_splits_and_merges_frames(socat: SocatPairs, rig: SerialRig) -> None:
    relay, row, got = await _noisy_run(socat, rig, keep_zeros=False, seed=7)
    ref = relay.reference.stats
    print(
        f"noise (any bit): frames={relay.frames} corrupted={len(relay.corrupted)} "
        f"reference={ref.as_dict()} gateway crc_errors={row['crc_errors']} "
        f"framing_errors={row['framing_errors']} frames_in={row['frames_in']}"
    )
    assert len(relay.corrupted) > 20
    # A flip to or from 0x00 splits or merges frames, so the number of drops is
    # not the number of corrupted frames; a decoder fed the same bytes says what it is.
    assert (row["frames_in"], row["crc_errors"], row["framing_errors"], row["oversize"]) == (
        ref.frames,
        ref.crc_errors,
        ref.framing_errors,
        ref.oversize,
    )
    expected = [
        unpack(b[2:]) for b in relay.reference_bodies if b[0] == MessageType.TRIGGER and b[1] == 1
    ]
    await until(lambda: len(got) >= len(expected), what="the events to reach the app")
    assert got == expected
    assert len(got) >= relay.frames - len(relay.corrupted) * 2 - 10  # most frames survive


async def test_unplug_and_replug(socat: SocatPairs, rig: SerialRig) -> None:
    p1, p2 = socat.pair("one"), socat.pair("two")
    router = await rig.gateway(p1.a, p2.a)
    seen: list[tuple[float, str, str, Any]] = []
    app = await rig.client("app")

    def record(info: dict[str, Any], data: Any) -> None:
        seen.append((time.monotonic(), info["sender"], info["event"], data))

    await app.add_listener(record, None, "#disconnect")
    await app.add_listener(record, None, "#connect")
    await app.add_listener(record, "sensor1", "temperature")
    d1 = await rig.device(p1.b, sender="sensor1", keepalive_ms=KEEPALIVE_MS)
    d2 = await rig.device(p2.b, name="sensor2", keepalive_ms=KEEPALIVE_MS, temperature=30.0)
    await d1.wait_for("REGISTERED", DEADLINE)
    await d2.wait_for("REGISTERED", DEADLINE)

    unplugged = time.monotonic()
    p1.unplug()
    gone = await until(
        lambda: [s for s in seen if s[1:3] == ("sensor1", "#disconnect")], what="#disconnect"
    )
    detection = gone[0][0] - unplugged
    print(f"unplug detected after {detection * 1000:.1f} ms")
    assert detection < 3 * KEEPALIVE_MS / 1000
    # the gateway keeps serving TCP clients and its other port
    assert await app.request("sensor2", "get_temp", timeout=5) == 30.0
    late = await rig.client("late-comer")
    assert "sensor1" not in await late.list_senders()
    row = rig.link(p1.a)
    assert row["port_state"] == "reopening" and row["senders"] == []
    await d1.wait_for("PORT_LOST", DEADLINE)

    since = len(d1.records)
    await asyncio.to_thread(p1.replug)
    mark = len(seen)
    await until(
        lambda: [s for s in seen[mark:] if s[1:3] == ("sensor1", "#connect")],
        timeout=DEADLINE,
        what="sensor1 to register again after the replug",
    )
    # #connect leaves the gateway with SENDER_REGISTERED: the device may not have it yet.
    await d1.wait_for("REGISTERED", DEADLINE, since=since)
    assert d1.trigger("temperature", "after replug")
    await until(lambda: seen[-1][1:] == ("sensor1", "temperature", "after replug"))
    row = rig.link(p1.a)
    assert row["port_state"] == "open" and row["reopens"] == 1 and row["senders"] == ["sensor1"]
    assert [p.reopens for p in rig.ports] == [1, 0]
    assert router.core.table.sender("sensor2") is not None


async def test_gateway_restart_invites_the_running_device(socat: SocatPairs) -> None:
    pair = socat.pair("dev")
    device = Proc(
        [sys.executable, "-m", "sig", "device-sim", "--port", str(pair.b),
         "--interval", "0.1", "--keepalive-ms", str(KEEPALIVE_MS), "--listen", ":#alarm"],
    )  # fmt: skip
    gateways: list[Gateway] = []

    async def start_gateway() -> Gateway:
        gw = await asyncio.to_thread(Gateway, 0, "--no-timer", "--serial", str(pair.a))
        gateways.append(gw)
        return gw

    async def one_event(gw: Gateway) -> Any:
        got: asyncio.Queue[Any] = asyncio.Queue()
        async with AsyncClientRouter("127.0.0.1", gw.port, name="app") as app:
            await app.add_listener(lambda i, d: got.put_nowait(d), "sensor1", "temperature")
            first = await asyncio.wait_for(got.get(), DEADLINE)
            assert await app.request("sensor1", "get_temp", timeout=5) == 21.5
        return first

    try:
        gw1 = await start_gateway()
        await asyncio.to_thread(
            device.wait_line, lambda s: s == "sensor1 REGISTERED " + 'sender="sensor1"'
        )
        assert (await one_event(gw1))["value"] == 21.5
        await asyncio.to_thread(gw1.stop)

        mark = len(device.lines)
        gw2 = await start_gateway()
        await asyncio.to_thread(device.wait_line, lambda s: s == "sensor1 INVITE", start=mark)
        await asyncio.to_thread(
            device.wait_line, lambda s: s.startswith("sensor1 REGISTERED"), start=mark
        )
        assert "n" in await one_event(gw2)
        links = Proc([sys.executable, "-m", "sig", "links", "--port", str(gw2.port), "--json"])
        assert await asyncio.to_thread(links.wait) == 0
        rows = {r["link"]: r for r in json.loads("\n".join(links.lines))}
        serial_row = rows[f"serial:{pair.a}"]
        assert serial_row["peer"] == "sensor1" and serial_row["port_state"] == "open"
        # the device was never restarted: one OPEN, and it saw both gateways
        assert [s for s in device.lines if " OPEN " in s] == [
            f'sensor1 OPEN port="{pair.b}" baud=115200'
        ]
        assert len([s for s in device.lines if s.startswith("sensor1 WELCOME")]) >= 2
    finally:
        for gw in gateways:
            await asyncio.to_thread(gw.stop)
        device.kill()
