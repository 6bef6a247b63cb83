"""The cold start of issue 12 on real ptys: a device that is up before the gateway.

The device's HELLO waits in the pty while the gateway starts; when the gateway
opens the port it sends INVITE, which reaches the device after its HELLO (the
INVITE "crosses" it). Before the fix the device answered that INVITE with a
second HELLO; the gateway replaced the session the device had just registered
into (or, for the C library, the second WELCOME made it register twice and the
gateway logged DUPLICATE_REF). PROTOCOL.md section 3, "Open" and "Invite".
"""

from __future__ import annotations

from procs import until
from serial_rig import DEADLINE, SerialRig
from socat import SocatPairs


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
