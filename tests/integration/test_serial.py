"""Serial carrier: UART devices (sig device-sim) on socat ptys, TCP clients on 127.0.0.1.

The gateway runs in-process (ServerRouter on port 0) with its serial ports
opened by ``open_serial_links``; the device is the emulator in
:mod:`sig.device_sim`, which speaks the protocol from PROTOCOL.md alone.
Every wait is a condition with a deadline; nothing sleeps to hide a race.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from presence import plain
from procs import until
from serial_rig import DEADLINE, SerialRig
from socat import SocatPairs

from carriers.serial import SerialSettings
from sig.errors import NoSuchSender, SenderGone
from sig.routers.serial import SerialSpecError, parse_specs
from sig.tools.cli import load_config


async def test_device_event_reaches_tcp_listener(socat: SocatPairs, rig: SerialRig) -> None:
    pair = socat.pair("dev")
    await rig.gateway(pair.a)
    got: list[tuple[str, str, Any]] = []
    app = await rig.client("app")
    await app.add_listener(lambda i, d: got.append((i["sender"], i["event"], d)), "sensor1")
    sim = await rig.device(pair.b, events=["temperature", "#alarm"])
    await sim.wait_for("REGISTERED", DEADLINE)
    assert sim.trigger("temperature", 23.25)
    assert sim.trigger("#alarm", {"level": 2})
    await until(lambda: len(got) >= 3, what="#connect and two events from the device")
    assert plain(got) == [
        (
            "sensor1",
            "#connect",
            {"events": ["temperature", "#alarm"], "requests": ["get_temp"], "default": True},
        ),
        ("sensor1", "temperature", 23.25),
        ("sensor1", "#alarm", {"level": 2}),
    ]
    assert sim.find("WELCOME", keepalive_ms=1000)
    row = rig.link(pair.a)
    assert row["peer"] == "sensor1" and row["senders"] == ["sensor1"]
    assert row["port_state"] == "open" and row["triggers"] == 2
    assert row["crc_errors"] == row["framing_errors"] == row["oversize"] == 0


async def test_tcp_request_reaches_device_handler(socat: SocatPairs, rig: SerialRig) -> None:
    pair = socat.pair("dev")
    await rig.gateway(pair.a)
    sim = await rig.device(pair.b, temperature=19.75)
    app = await rig.client("app")
    await sim.wait_for("REGISTERED", DEADLINE)
    assert await app.request("sensor1", "get_temp", timeout=5) == 19.75
    assert await app.request("sensor1", "calibrate", [1, 2], timeout=5) == {
        "method": "calibrate",
        "params": [1, 2],
    }
    assert sim.find("REQUEST", method="get_temp") and sim.find("REQUEST", method="calibrate")
    senders = await app.list_senders()
    assert senders["sensor1"]["link"] == f"serial:{pair.a}"
    assert senders["sensor1"]["requests"] == ["get_temp"]


async def test_device_listener_receives_only_its_events(socat: SocatPairs, rig: SerialRig) -> None:
    pair = socat.pair("dev")
    await rig.gateway(pair.a)
    app = await rig.client("app")
    src = await app.add_sender("app", ["a", "b", "#ch"])
    other = await app.add_sender("other", ["a", "#ch"])
    sim = await rig.device(pair.b, listens=[("app", "a"), (None, "#ch")])
    await sim.wait_for("LISTENING", DEADLINE, id=2)
    # Events of one sender arrive in order, so once "last" is in, "b" and other:a
    # (sent before it) would be too if the gateway had routed them to the device.
    other.trigger("a", "not for the device")
    src.trigger("b", "not for the device")
    other.trigger("#ch", "channel from other")
    src.trigger("#ch", "channel from app")
    src.trigger("a", "last")
    await sim.wait_for("EVENT", DEADLINE, data="last")
    seen = [(f["sender"], f["event"], f["data"], f["listeners"]) for _, f in sim.find("EVENT")]
    assert seen == [
        ("other", "#ch", "channel from other", [2]),
        ("app", "#ch", "channel from app", [2]),
        ("app", "a", "last", [1]),
    ]
    assert rig.link(pair.a)["events_out"] == 3


async def test_device_request_to_tcp_sender(socat: SocatPairs, rig: SerialRig) -> None:
    pair = socat.pair("dev")
    await rig.gateway(pair.a)
    app = await rig.client("app")
    await app.add_sender("calc", [], {"add": lambda p: p[0] + p[1], None: lambda m, p: m})
    sim = await rig.device(pair.b)
    await sim.wait_for("REGISTERED", DEADLINE)
    assert await sim.request("calc", "add", [40, 2]) == 42
    assert await sim.request("calc", "whatever") == "whatever"
    with pytest.raises(NoSuchSender):
        await sim.request("nobody", "add", [1, 1])
    assert sim.find("RESPONSE", status="OK", data=42)
    assert sim.find("RESPONSE", status="NO_SUCH_SENDER")


async def test_duplicate_sender_on_two_ports(socat: SocatPairs, rig: SerialRig) -> None:
    p1, p2 = socat.pair("one"), socat.pair("two")
    await rig.gateway(p1.a, p2.a)
    got: list[Any] = []
    app = await rig.client("app")
    await app.add_listener(lambda i, d: got.append(d), "sensor1", "temperature")
    first = await rig.device(p1.b, name="dev-one", sender="sensor1", temperature=1.0)
    await first.wait_for("REGISTERED", DEADLINE)
    second = await rig.device(p2.b, name="dev-two", sender="sensor1", temperature=2.0)
    error = await second.wait_for("ERROR", DEADLINE, code="DUPLICATE_SENDER")
    assert error["ref"] == 1 and "sensor1" in error["message"]
    assert not second.find("REGISTERED")
    # the first device is unaffected: it answers and its events flow
    assert await app.request("sensor1", "get_temp", timeout=5) == 1.0
    assert first.trigger("temperature", "still here")
    await until(lambda: got == ["still here"], what="the first device's event")
    assert rig.link(p1.a)["senders"] == ["sensor1"]
    assert rig.link(p2.a)["peer"] == "dev-two" and rig.link(p2.a)["senders"] == []


async def test_request_pending_on_device_fails_when_port_vanishes(
    socat: SocatPairs, rig: SerialRig
) -> None:
    pair = socat.pair("dev")
    await rig.gateway(pair.a)
    sim = await rig.device(pair.b)
    app = await rig.client("app")
    await sim.wait_for("REGISTERED", DEADLINE)
    call = asyncio.ensure_future(app.request("sensor1", "hang_forever", timeout=8))
    await sim.wait_for("REQUEST", DEADLINE, method="hang_forever")
    pair.unplug()
    with pytest.raises(SenderGone):
        await asyncio.wait_for(call, DEADLINE)
    row = await until(
        lambda: [r for r in rig.router.links() if r["link"] == f"serial:{pair.a}"]  # type: ignore[union-attr]
    )
    assert row[0]["port_state"] == "reopening" and row[0]["state"] == "reopening"


async def test_links_show_a_port_that_is_not_there(tmp_path: Path, rig: SerialRig) -> None:
    missing = tmp_path / "no-such-tty"
    await rig.gateway(missing)
    assert rig.ports[0].state == "reopening"
    row = rig.link(missing)
    assert row["port_state"] == "reopening" and row["failed_opens"] >= 1
    assert "No such file" in row["last_error"]
    app = await rig.client("app")
    rows = await app.request("$gateway", "links")
    assert f"serial:{missing}" in [r["link"] for r in rows]


def test_serial_specs() -> None:
    assert parse_specs(["/dev/ttyUSB0", "/dev/ttyAMA0:9600", "socket://h:7000"]) == [
        SerialSettings("/dev/ttyUSB0"),
        SerialSettings("/dev/ttyAMA0", 9600),
        SerialSettings("socket://h:7000"),
    ]
    table = {"port": "/dev/ttyS1", "baud": 57600, "parity": "e", "stopbits": 2, "rtscts": True}
    assert parse_specs([table]) == [SerialSettings("/dev/ttyS1", 57600, "E", 2, 8, True)]
    bad = {
        "/dev/ttyUSB0:fast": "baud 'fast' is not a number",
        ":9600": "no port path",
    }
    for spec, message in bad.items():
        with pytest.raises(SerialSpecError, match=message):
            parse_specs([spec])
    for table, message in [
        ({"port": "/dev/x", "parity": "X"}, "parity must be one of"),
        ({"port": "/dev/x", "stopbits": 3}, "stopbits must be"),
        ({"port": "/dev/x", "baud": "fast"}, "baud must be a positive integer"),
        ({"port": "/dev/x", "rtscts": "yes"}, "rtscts must be true or false"),
        ({"port": "/dev/x", "speed": 9600}, "unknown key"),
        ({"baud": 9600}, "without a port"),
    ]:
        with pytest.raises(SerialSpecError, match=message):
            parse_specs([table])
    with pytest.raises(SerialSpecError, match="configured twice"):
        parse_specs(["/dev/x", {"port": "/dev/x"}])


def test_serial_tables_from_config(tmp_path: Path) -> None:
    conf = tmp_path / "sig.toml"
    conf.write_text(
        '[[serial]]\nport = "/dev/ttyUSB0"\nbaud = 115200\nparity = "N"\nstopbits = 1\n'
        'rtscts = false\n\n[[serial]]\nport = "/dev/ttyAMA0"\nbaud = 9600\n'
    )
    specs = load_config(str(conf))["serial"]
    assert parse_specs(specs) == [
        SerialSettings("/dev/ttyUSB0"),
        SerialSettings("/dev/ttyAMA0", 9600),
    ]


async def test_sig_serve_rejects_a_bad_serial_spec() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sig", "serve", "--host", "127.0.0.1", "--port", "0",
        "--no-timer", "--serial", "/dev/ttyUSB0:fast",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert lines == ["sig serve: serial spec '/dev/ttyUSB0:fast': baud 'fast' is not a number"]


async def test_device_starts_over_after_gateway_silence(socat: SocatPairs, rig: SerialRig) -> None:
    pair = socat.pair("dev")
    router = await rig.gateway(pair.a)
    sim = await rig.device(pair.b, keepalive_ms=500)
    await sim.wait_for("WELCOME", DEADLINE, keepalive_ms=500)
    await sim.wait_for("REGISTERED", DEADLINE)
    await router.stop()  # the port closes; socat stays: the device just hears nothing
    rig.router = None
    stopped = time.monotonic()
    mark = len(sim.records)
    timeout = await sim.wait_for("TIMEOUT", DEADLINE, since=mark)
    assert 1.5 <= timeout["silent_s"] < 3.0  # 3 x 500 ms, checked every 20 ms
    assert time.monotonic() - stopped < 3.0
    await sim.wait_for("HELLO", DEADLINE, since=mark, reason="timeout")
    # and HELLO is repeated every keepalive until a gateway answers
    await sim.wait_for("HELLO", DEADLINE, since=mark, reason="no-welcome")
