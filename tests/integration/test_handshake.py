"""The cold start of issue 12 on real ptys: a device that is up before the gateway.

The device's HELLO waits in the pty while the gateway starts; when the gateway
opens the port it sends INVITE, which reaches the device after its HELLO (the
INVITE "crosses" it). Before the fix the device answered that INVITE with a
second HELLO; the gateway replaced the session the device had just registered
into (or, for the C library, the second WELCOME made it register twice and the
gateway logged DUPLICATE_REF). PROTOCOL.md section 3, "Open" and "Invite".
"""

from __future__ import annotations

import serial_asyncio
from procs import until
from rawpeer import Raw
from serial_rig import DEADLINE, SerialRig
from socat import SocatPairs

from sig.errors import ErrorCode
from sig.protocol import messages as w


async def test_a_device_up_before_the_gateway_registers_once(
    socat: SocatPairs, rig: SerialRig
) -> None:
    pair = socat.pair("cold")
    sim = await rig.device(pair.b, events=["temperature"], keepalive_ms=1000)
    await sim.wait_for("HELLO", DEADLINE, reason="open")  # the HELLO waits in the pty
    await rig.gateway(pair.a)
    await sim.wait_for("REGISTERED", DEADLINE)
    invite = await sim.wait_for("INVITE", DEADLINE)
    assert invite["ignored"] is True  # it came while the device waited for WELCOME
    app = await rig.client("app")
    got: list[object] = []
    await app.add_listener(lambda info, data: got.append(data), "sensor1", "temperature")
    assert sim.trigger("temperature", 21.5)
    await until(lambda: got, what="the device's event at a TCP listener")
    assert got == [21.5]
    row = rig.link(pair.a)
    assert row["senders"] == ["sensor1"] and row["protocol_errors"] == 0
    assert sim.find("HELLO", reason="invite") == [] and sim.find("ERROR") == []
    assert len(sim.find("REGISTERED")) == 1


async def test_device_sim_answers_as_the_vectors_say(socat: SocatPairs, rig: SerialRig) -> None:
    """The gateway's end played by hand: the device takes one WELCOME per HELLO,
    answers a malformed REQUEST with a RESPONSE it can be matched by, and an
    ERROR about the type of any other bad body (PROTOCOL.md section 2, "Errors")."""
    pair = socat.pair("raw")
    reader, writer = await serial_asyncio.open_serial_connection(url=str(pair.a), baudrate=115200)
    gw = Raw(reader, writer)
    try:
        sim = await rig.device(pair.b, events=["temperature"], keepalive_ms=60000)
        await gw.expect(lambda m: isinstance(m, w.Hello))
        welcome = w.Welcome("gw", 1024, 60000)
        await gw.msg(welcome, welcome)  # the second is a repeat: no second registration
        await gw.expect(lambda m: isinstance(m, w.RegisterSender))
        await gw.msg(w.SenderRegistered(1))
        await sim.wait_for("REGISTERED", DEADLINE)
        await gw.body(bytes([w.MessageType.REQUEST, 7, 1, 0x73, 0]))  # empty method name
        answer = await gw.expect(lambda m: isinstance(m, (w.Response, w.Error)))
        assert answer == w.Response(7, ErrorCode.INVALID_NAME, "empty name")
        await gw.body(bytes([w.MessageType.LISTENING, 0]))  # id 0
        await gw.body(bytes([0x3F]))
        await gw.body(bytes([w.MessageType.ERROR, 0x01, 0x40, 0x00, 0x00]))  # never answered
        await gw.msg(w.Ping(9))  # the barrier: everything before it was answered
        got = []
        while not got or got[-1] != w.Pong(9):
            got.append(await gw.expect(lambda m: True))
        assert [(m.code, m.about, m.ref) for m in got if isinstance(m, w.Error)] == [
            (ErrorCode.MALFORMED, w.MessageType.LISTENING, 0),
            (ErrorCode.UNKNOWN_TYPE, 0x3F, 0x3F),
        ]
        assert not any(isinstance(m, w.RegisterSender) for m in got)
        assert len(sim.find("WELCOME")) == 1
    finally:
        writer.close()
