"""A port's ReliableLink (sig.core.reliable) between the core and the line, sans-I/O,
and the port options that configure it (carriers.serial.SerialSettings)."""

from __future__ import annotations

from typing import Any

import pytest

from carriers.serial import SerialSettings
from sig.core.reliable import DEFAULT_QUEUE, DEFAULT_WINDOW, ReliableLink, ReliablePort
from sig.core.session import Session, State
from sig.protocol import messages as w
from sig.protocol.reliable import strip_seq
from tests.support.fakes import FakeClock


class Lower:
    """The link below (the carrier, or signing): records what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.session: Any = None
        self.name = "serial:test"

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        self.sent.append(body)
        return True

    def stats(self) -> dict[str, Any]:
        return {"frames_in": 0}


def opened(enabled: bool = True) -> tuple[ReliableLink, Lower, FakeClock, list[bytes]]:
    """A ReliableLink whose device said HELLO with the feature and got its WELCOME."""
    lower, clock, refused = Lower(), FakeClock(), []
    link = ReliableLink(lower, ReliablePort("serial:test", enabled=enabled), clock)
    link.refused = refused.append
    lower.session = Session(link, state=State.OPEN)
    hello = link.receive(w.encode(w.Hello("dev", 128, 1000, features=w.Feature.RELIABLE)))
    assert hello is not None
    announced = w.decode(hello)
    assert isinstance(announced, w.Hello)
    assert announced.max_body == (123 if enabled else 128)  # room for the seq varint
    link.send(w.encode(w.Welcome("gw", 65535, 1000)))
    return link, lower, clock, refused


def test_welcome_gets_the_bit_and_the_session_opens() -> None:
    link, lower, _, _ = opened()
    welcome = w.decode(lower.sent[-1])
    assert isinstance(welcome, w.Welcome) and welcome.features == w.Feature.RELIABLE
    assert link.stats()["reliable"] is True and link.stats()["frames_in"] == 0


def test_a_port_with_the_mode_off_grants_nothing() -> None:
    link, lower, _, _ = opened(enabled=False)
    welcome = w.decode(lower.sent[-1])
    assert isinstance(welcome, w.Welcome) and welcome.features == 0
    lower.sent.clear()
    link.send(w.encode(w.SenderRegistered(1)))
    assert lower.sent == [w.encode(w.SenderRegistered(1))]  # plain
    assert link.receive(w.encode(w.Ack(1))) is None and link.port.counts["bad_acks"] == 1


def test_what_is_sequenced_and_what_is_not() -> None:
    link, lower, _, _ = opened()
    lower.sent.clear()
    link.send(w.encode(w.SenderRegistered(1)))
    link.send(w.encode(w.Event("s", "e")), droppable=True)
    link.send(w.encode(w.Ping(1)))
    assert strip_seq(lower.sent[0]) == (1, w.encode(w.SenderRegistered(1)))
    assert lower.sent[1:] == [w.encode(w.Event("s", "e")), w.encode(w.Ping(1))]


def test_acks_and_duplicates_are_consumed_but_keep_the_link_alive() -> None:
    link, lower, clock, _ = opened()
    session = lower.session
    link.send(w.encode(w.SenderRegistered(1)))
    clock.now += 1.0
    assert link.receive(w.encode(w.Ack(1))) is None
    assert session.last_rx == clock.now and link.next_deadline() is None


def test_window_full_then_queue_full_refuses_a_request() -> None:
    """The core never learns: a REQUEST goes to the refused hook (BUSY to its requester)."""
    link, lower, _, refused = opened()
    lower.sent.clear()
    for i in range(DEFAULT_WINDOW + DEFAULT_QUEUE):
        assert link.send(w.encode(w.Request(i + 1, "s", "m")))
    assert len(lower.sent) == DEFAULT_WINDOW  # the rest wait for ACKs
    request = w.encode(w.Request(999, "s", "m"))
    link.send(request)
    link.send(w.encode(w.Listening(3)))
    assert refused == [request] and link.port.counts["reliable_dropped"] == 2


def test_a_session_the_core_ended_is_forgotten() -> None:
    link, lower, clock, _ = opened()
    link.send(w.encode(w.SenderRegistered(1)))
    lower.session.state = State.AWAIT_HELLO  # a link timeout, say
    clock.now += 10
    assert not link.poll() and link.port.session is None and link.stats()["reliable"] is False


def test_a_new_hello_without_the_bit_ends_the_mode_at_its_welcome() -> None:
    link, lower, _, _ = opened()
    link.receive(w.encode(w.Hello("dev", 128, 1000)))
    link.send(w.encode(w.Welcome("gw", 65535, 1000)))
    assert link.port.session is None
    welcome = w.decode(lower.sent[-1])
    assert isinstance(welcome, w.Welcome) and welcome.features == 0


@pytest.mark.parametrize(
    ("spec", "reliable", "rto", "key_file"),
    [
        ("/dev/ttyS0", True, 200, ""),
        ("/dev/ttyS0:9600,reliable=0", False, 200, ""),
        ("/dev/ttyS0,retransmit_ms=50,reliable=1", True, 50, ""),
        ("/dev/ttyS0,key_file=/k,a.key,reliable=0", False, 200, "/k,a.key"),
    ],
)
def test_port_options_on_the_command_line(
    spec: str, reliable: bool, rto: int, key_file: str
) -> None:
    settings = SerialSettings.from_spec(spec)
    assert (settings.reliable, settings.retransmit_ms, settings.key_file) == (
        reliable,
        rto,
        key_file,
    )


@pytest.mark.parametrize(
    "spec",
    [
        "/dev/ttyS0,reliable=yes",
        "/dev/ttyS0,retransmit_ms=0",
        "/dev/ttyS0,retransmit_ms=x",
        "/dev/ttyS0,reliable=0,reliable=1",
        {"port": "/dev/ttyS0", "reliable": "no"},
        {"port": "/dev/ttyS0", "retransmit_ms": 100000},
    ],
)
def test_bad_port_options_are_refused(spec: Any) -> None:
    with pytest.raises(ValueError, match=r"reliable|retransmit_ms"):
        SerialSettings.from_spec(spec)


def test_port_options_in_a_table() -> None:
    settings = SerialSettings.from_spec({"port": "/dev/x", "reliable": False, "retransmit_ms": 80})
    assert (settings.reliable, settings.retransmit_ms) == (False, 80)
