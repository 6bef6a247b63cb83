"""End-to-end cases: a device on a serial link and Python applications over TCP.

Run against a real board (SIG_HIL_PORT) or, by default, both the host-built
firmware example and the nRF51 firmware in QEMU, each on a socat pty pair.
See hil/README.md.
"""

from __future__ import annotations

import math

import pytest
from rig import POSIX_KINDS, SENDER, WAIT, Rig, sketch_temperatures

import sig


def _parse_value(line: str) -> float:
    return float(line.rsplit(" ", 1)[1])


def test_device_event_reaches_tcp_listener_with_the_right_value(rig: Rig) -> None:
    inbox = rig.listen(SENDER, "temperature")
    rig.start_device()
    value = inbox.wait(SENDER, "temperature")
    assert isinstance(value, float)
    if rig.kind == "qemu":
        # The firmware's fake sensor has ten readings: the float32 arrived unchanged.
        assert value in sketch_temperatures()
    if rig.kind in POSIX_KINDS:
        # The device printed what it sent (its stdout may trail the network, so
        # wait for the line); the listener got exactly that float32.
        assert rig.device is not None
        rig.device.wait_line(
            lambda s: (
                s.startswith("trigger temperature")
                and math.isclose(_parse_value(s), value, rel_tol=1e-6)
            )
        )
    # Whatever the device reports as its last reading is a value the listener also got.
    latest = rig.client.request(SENDER, "get_temp")
    seen = {value}
    while not any(math.isclose(latest, v, rel_tol=1e-6) for v in seen):
        seen.add(inbox.wait(SENDER, "temperature"))


def test_tcp_request_is_answered_by_the_device(rig: Rig) -> None:
    inbox = rig.listen(SENDER, "#connect")
    rig.start_device()
    announced = inbox.wait(SENDER, "#connect")
    assert "get_temp" in announced["requests"] and "temperature" in announced["events"]
    assert isinstance(rig.client.request(SENDER, "get_temp"), float)
    # The default handler answers any other method with its name.
    assert rig.client.request(SENDER, "whoami", {"x": 1}) == "whoami"


def test_device_listener_receives_a_gateway_event(rig: Rig) -> None:
    inbox = rig.listen(SENDER, "echo")
    rig.listen(SENDER, "#connect")
    rig.start_device()
    inbox.wait(SENDER, "#connect")
    rig.wait_device_listening()  # its LISTEN follows its REGISTER_SENDER: a barrier
    timer = rig.client.add_sender("timer", ["tick", "tock"])
    timer.trigger("tock", 1)  # the device listens to (timer, tick) only
    timer.trigger("tick", 42)
    assert inbox.wait(SENDER, "echo") == 42  # the first echo: tock was never delivered
    if rig.kind in POSIX_KINDS:
        assert rig.device is not None
        rig.device.wait_line(lambda s: s == "event timer tick 42")
        assert not any("tock" in line for line in rig.device_lines())


def test_device_unplug_and_replug(rig: Rig) -> None:
    inbox = rig.listen(SENDER, None)
    rig.start_device()
    inbox.wait(SENDER, "#connect")
    inbox.wait(SENDER, "temperature")
    rig.unplug()
    inbox.wait(SENDER, "#disconnect", timeout=3 * rig.keepalive_ms / 1000 + 2)
    # The gateway keeps serving TCP clients while the port is gone.
    assert SENDER not in rig.client.list_senders()
    links = rig.client.request("$gateway", "links")
    assert any(link["link"].startswith("serial:") for link in links)
    rig.replug()
    inbox.wait(SENDER, "#connect", timeout=WAIT)
    assert isinstance(inbox.wait(SENDER, "temperature"), float)


def test_device_reset_replaces_its_session(rig: Rig) -> None:
    inbox = rig.listen(SENDER, None)
    rig.start_device()
    inbox.wait(SENDER, "#connect")
    inbox.wait(SENDER, "temperature")
    rig.reset_device()
    # The new HELLO ends the old session first: #disconnect, then #connect.
    inbox.wait(SENDER, "#disconnect")
    inbox.wait(SENDER, "#connect")
    assert isinstance(inbox.wait(SENDER, "temperature"), float)
    senders = rig.client.list_senders()
    assert list(senders).count(SENDER) == 1


def test_request_to_a_missing_device_fails_clearly(rig: Rig) -> None:
    with pytest.raises(sig.NoSuchSender, match=SENDER):
        rig.client.request(SENDER, "get_temp", timeout=WAIT)


def test_signed_kind_runs_a_signed_session(rig: Rig) -> None:
    """posix-signed: every frame of the session was signed and verified (PROTOCOL.md
    section 5); the other kinds run on a port without a key."""
    inbox = rig.listen(SENDER, "#connect")
    rig.start_device()
    inbox.wait(SENDER, "#connect")
    rig.wait_device_listening()
    rows = rig.client.request("$gateway", "links")
    row = next(r for r in rows if r["link"].startswith("serial:"))
    if rig.key_file is None:
        assert "signed" not in row
        return
    assert row["signed"] is True and row["signed_session"] is True
    assert (row["auth_failed"], row["replayed"], row["unsigned"]) == (0, 0, 0)
    assert row["senders"] == [SENDER] and row["frames_in"] > 0
