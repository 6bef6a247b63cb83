"""The sans-I/O client core on a fake clock: handshake, replay, refusals, requests, keepalive.

ClientSession is driven here as the gateway core is in test_gateway_core.py:
an in-memory link collects what it sends (decoded back into messages), the
test plays the gateway by feeding it bodies, and time moves only when the
test moves the clock and calls poll().
"""

from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeClock, MemoryLink

from sig.core import client as core
from sig.core.client import ClientSession, State
from sig.core.endpoints import Sender
from sig.errors import (
    DuplicateSenderError,
    EncodeError,
    ErrorCode,
    InvalidNameError,
    NotConnectedError,
    RequestTimeout,
)
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack

KEEPALIVE = 10.0
HANDSHAKE = 5.0


class Host:
    """A Sender's host that is not used (the session sends triggers itself)."""

    def _emit(self, sender: Sender, event: str, data: Any) -> None:  # pragma: no cover
        raise AssertionError("not used")

REGISTER = w.MessageType.REGISTER_SENDER



@pytest.fixture
def session(clock: FakeClock) -> ClientSession:
    # retry delays 1, 2, 4, ... s: the test knows when each retry is due
    return ClientSession(
        "app",
        keepalive=KEEPALIVE,
        handshake_timeout=HANDSHAKE,
        retry_delay=lambda attempt: float(2**attempt),
        clock=clock,
    )


def sender(name: str, events: tuple[str, ...] = ("e",), **handlers: Any) -> Sender:
    table: dict[str | None, Any] = dict(handlers)
    return Sender(Host(), name, events, table)


def feed(session: ClientSession, *msgs: w.Message) -> list[core.ClientEvent]:
    out: list[core.ClientEvent] = []
    for msg in msgs:
        out += session.receive(w.encode(msg))
    return out


def welcome(session: ClientSession, max_body: int = 4096) -> list[core.ClientEvent]:
    return feed(session, w.Welcome("gw", max_body, int(KEEPALIVE * 1000)))


def start(session: ClientSession) -> MemoryLink:
    """A new connection: HELLO is sent (and taken here)."""
    link = MemoryLink("tcp")
    session.start(link)
    assert [type(m) for m in link.take()] == [w.Hello]
    return link


def open_session(session: ClientSession) -> MemoryLink:
    link = start(session)
    assert welcome(session) == [core.Opened(4096)]
    link.take()
    return link


def test_start_sends_hello_and_welcome_opens_the_session(session: ClientSession) -> None:
    link = MemoryLink("tcp")
    session.start(link)
    assert link.take() == [w.Hello("app", 65535, 10000)]
    assert w.decode(session.hello()) == w.Hello("app", 65535, 10000)
    assert session.state is State.HELLO_SENT
    assert welcome(session, max_body=1000) == [core.Opened(1000)]
    assert session.is_open and session.max_body == 1000
    assert feed(session, w.Welcome("gw", 9, 0)) == []  # a second WELCOME changes nothing
    assert session.max_body == 1000


def test_no_welcome_in_time_fails_the_handshake(session: ClientSession, clock: FakeClock) -> None:
    session.start(MemoryLink("tcp"))
    assert session.next_deadline() == clock.now + HANDSHAKE
    clock.now += HANDSHAKE - 0.1
    assert session.poll(clock.now) == []
    clock.now += 0.2
    assert session.poll(clock.now) == [core.HandshakeFailed("gateway did not answer HELLO")]


def test_an_unanswered_replay_fails_the_handshake(session: ClientSession, clock: FakeClock) -> None:
    session.add_sender(sender("s"))
    session.start(MemoryLink("tcp"))
    assert welcome(session) == []  # waits for SENDER_REGISTERED
    assert session.state is State.REPLAYING
    clock.now += HANDSHAKE + 0.1
    assert session.poll(clock.now) == [
        core.HandshakeFailed("gateway did not answer the registrations")
    ]


def test_everything_registered_is_replayed_in_order_after_each_reconnect(
    session: ClientSession,
) -> None:
    a, b = sender("a", ("x", "y")), sender("b", ("z",), get=lambda p: p)
    assert session.add_sender(a) is None and session.add_sender(b) is None  # offline: kept
    _, lid = session.subscribe(lambda info, data: None, "a", "x")
    assert lid is None
    session.subscribe(lambda info, data: None, None, "#connect")
    for _ in range(2):  # the first connection and a reconnect replay the same
        link = start(session)
        assert welcome(session) == []
        sent = link.take()
        kinds = [type(m) for m in sent]
        assert kinds == [w.RegisterSender, w.RegisterSender, w.Listen, w.Listen]
        reg_a, reg_b, listen_ax, listen_connect = sent
        assert isinstance(reg_a, w.RegisterSender) and isinstance(reg_b, w.RegisterSender)
        assert reg_a.name == "a" and [e for _, e in reg_a.events] == ["x", "y"]
        assert reg_b.name == "b" and reg_b.methods == ("get",)
        assert isinstance(listen_ax, w.Listen) and (listen_ax.sender, listen_ax.event) == ("a", "x")
        assert isinstance(listen_connect, w.Listen) and listen_connect.event == "#connect"
        # open only once every registration is answered
        assert feed(session, w.SenderRegistered(reg_a.sender_ref)) == []
        assert feed(session, w.SenderRegistered(reg_b.sender_ref)) == []
        assert feed(session, w.Listening(listen_ax.listener_id)) == []
        assert feed(session, w.Listening(listen_connect.listener_id)) == [core.Opened(4096)]
        session.connection_lost()
        assert session.state is State.CLOSED


def test_registrations_while_open_are_answered_to_the_caller(session: ClientSession) -> None:
    link = open_session(session)
    ref = session.add_sender(sender("s"))
    assert ref is not None
    (reg,) = link.take()
    assert isinstance(reg, w.RegisterSender) and reg.sender_ref == ref
    assert feed(session, w.SenderRegistered(ref)) == [core.Registered(ref)]
    assert feed(session, w.SenderRegistered(ref)) == []  # nothing awaits it any more
    listener, lid = session.subscribe(lambda info, data: None, "s", "e")
    assert lid is not None
    again, none = session.subscribe(listener.callback, "s", "e")
    assert again is listener and none is None  # idempotent: no second LISTEN
    # An ERROR about another kind of message is no answer, even with the same number as ref.
    trigger = w.Error(ErrorCode.UNKNOWN_REF, lid, "no such event_ref", w.MessageType.TRIGGER)
    assert feed(session, trigger) == []
    refused = feed(session, w.Error(ErrorCode.LIMIT_REACHED, lid, "too many", w.MessageType.LISTEN))
    assert len(refused) == 1 and isinstance(refused[0], core.Refused) and refused[0].ref == lid


def test_a_registration_during_the_replay_joins_it(session: ClientSession) -> None:
    """Bug fixed: a sender added while the replay was in flight waited for the next connection."""
    session.add_sender(sender("old"))
    link = start(session)
    welcome(session)
    (old,) = link.take()
    assert session.add_sender(sender("new")) is None  # the replay waits for it
    (new,) = link.take()
    assert isinstance(old, w.RegisterSender) and isinstance(new, w.RegisterSender)
    assert new.name == "new"
    assert feed(session, w.SenderRegistered(old.sender_ref)) == []
    assert feed(session, w.SenderRegistered(new.sender_ref)) == [core.Opened(4096)]


def test_a_sender_refused_at_the_replay_is_told_dropped_and_won_back(
    session: ClientSession, clock: FakeClock
) -> None:
    s = sender("s")
    session.add_sender(s)
    link = start(session)
    welcome(session)
    (reg,) = link.take()
    assert isinstance(reg, w.RegisterSender)
    events = feed(session, w.Error(ErrorCode.DUPLICATE_SENDER, reg.sender_ref, "taken", REGISTER))
    assert len(events) == 1 and isinstance(events[0], core.Opened)
    ((name, error),) = events[0].refused
    assert name == "s" and isinstance(error, DuplicateSenderError)
    assert session.stats["senders_refused"] == 1
    session.trigger(s, "e", pack(1))
    assert link.take() == [] and session.stats["dropped_unregistered"] == 1
    # retries with backoff: 1 s, then 2 s after the next refusal
    assert session.next_deadline() == clock.now + 1
    clock.now += 1
    assert session.poll(clock.now) == []
    (retry,) = link.take()
    assert isinstance(retry, w.RegisterSender) and retry.sender_ref == reg.sender_ref
    session.trigger(s, "e", pack(2))  # not live before the gateway said yes
    assert link.take() == [] and session.stats["dropped_unregistered"] == 2
    feed(session, w.Error(ErrorCode.DUPLICATE_SENDER, reg.sender_ref, "still taken", REGISTER))
    assert session.next_deadline() == clock.now + 2
    clock.now += 2
    session.poll(clock.now)
    assert [type(m) for m in link.take()] == [w.RegisterSender]
    assert feed(session, w.SenderRegistered(reg.sender_ref)) == [core.Registered(reg.sender_ref)]
    session.trigger(s, "e", pack(3))
    (trigger,) = link.take()
    assert isinstance(trigger, w.Trigger) and unpack(trigger.data) == 3
    assert session.registrations.next_retry(float("inf")) == float("inf")  # no retry is due
    clock.now += 100
    session.last_rx = clock.now  # the gateway is alive; we were idle
    session.poll(clock.now)
    assert [type(m) for m in link.take()] == [w.Ping]  # keepalive only, no REGISTER_SENDER


def test_a_bad_name_is_not_retried(session: ClientSession, clock: FakeClock) -> None:
    session.add_sender(sender("s"))
    link = start(session)
    welcome(session)
    (reg,) = link.take()
    assert isinstance(reg, w.RegisterSender)
    (opened,) = feed(session, w.Error(ErrorCode.INVALID_NAME, reg.sender_ref, "bad", REGISTER))
    assert isinstance(opened, core.Opened)
    assert isinstance(opened.refused[0][1], InvalidNameError)
    clock.now += 1000
    session.poll(clock.now)
    assert not any(isinstance(m, w.RegisterSender) for m in link.take())


def test_confirm_registers_a_refused_sender_and_waits_for_yes(session: ClientSession) -> None:
    s = sender("s")
    session.add_sender(s)
    link = start(session)
    welcome(session)
    (reg,) = link.take()
    assert isinstance(reg, w.RegisterSender)
    feed(session, w.Error(ErrorCode.DUPLICATE_SENDER, reg.sender_ref, "taken", REGISTER))
    ref = session.confirm("s")
    assert ref == reg.sender_ref and [type(m) for m in link.take()] == [w.RegisterSender]
    assert session.confirm("s") == ref and link.take() == []  # one in flight at a time
    assert feed(session, w.SenderRegistered(ref)) == [core.Registered(ref)]
    assert session.confirm("s") is None  # live: nothing to confirm


def test_requests_are_matched_and_time_out(session: ClientSession, clock: FakeClock) -> None:
    link = open_session(session)
    rid, deadline = session.request("s", "get", pack(1), 2.0)
    assert deadline == clock.now + 2.0
    (req,) = link.take()
    assert req == w.Request(rid, "s", "get", pack(1))
    answer = w.Response(rid, 0, "", pack(2))
    assert feed(session, answer) == [answer]
    assert feed(session, answer) == []  # answered once
    late, _ = session.request("s", "slow", b"", 2.0)
    assert session.next_deadline() == clock.now + 2.0
    clock.now += 2.0
    (timed_out,) = session.poll(clock.now)
    assert isinstance(timed_out, core.RequestTimedOut) and timed_out.request_id == late
    assert isinstance(timed_out.error, RequestTimeout)
    assert str(timed_out.error) == "no response from s.slow within 2.0 s"
    assert feed(session, w.Response(late, 0, "", b"")) == []  # too late: ignored
    session.connection_lost()
    with pytest.raises(NotConnectedError):
        session.request("s", "get", b"", 1.0)


def test_many_answered_requests_do_not_pile_up_deadlines(session: ClientSession) -> None:
    open_session(session)
    for _ in range(5000):
        rid, _ = session.request("s", "m", b"", 10.0)
        feed(session, w.Response(rid, 0, "", b""))
    assert len(session.requests.pending) == 0
    assert len(session.requests._deadlines) <= core.HEAP_SLACK + 1


def test_keepalive_pings_when_idle_and_times_out_when_silent(
    session: ClientSession, clock: FakeClock
) -> None:
    link = open_session(session)
    assert session.next_deadline() == clock.now + KEEPALIVE / 2
    clock.now += KEEPALIVE / 2
    assert session.poll(clock.now) == [] and link.take() == []  # not idle long enough
    clock.now += KEEPALIVE / 2
    assert session.poll(clock.now) == [] and link.take() == [w.Ping(0)]
    session.last_rx = clock.now  # the gateway answered
    clock.now += 3 * KEEPALIVE
    assert session.poll(clock.now) == []  # exactly 3 intervals: not yet
    clock.now += KEEPALIVE / 2
    (timeout,) = session.poll(clock.now)
    assert isinstance(timeout, core.LinkTimeout) and timeout.silent_for == 3.5 * KEEPALIVE


def test_ping_is_answered_and_invite_asks_for_a_reconnect(session: ClientSession) -> None:
    link = open_session(session)
    assert feed(session, w.Ping(7)) == [] and link.take() == [w.Pong(7)]
    assert feed(session, w.Pong(1)) == []
    assert feed(session, w.Invite()) == [core.Invited()]


def test_malformed_and_unexpected_input_is_counted_or_ignored(session: ClientSession) -> None:
    link = open_session(session)
    assert session.receive(b"\x3f\x01\x02") == []  # unknown type
    assert session.receive(bytes([w.MessageType.EVENT, 200])) == []  # truncated
    assert session.stats["bad_messages"] == 2
    assert feed(session, w.Hello("gw", 1, 1)) == []  # not something a gateway sends
    assert feed(session, w.Error(ErrorCode.LIMIT_REACHED, 999, "?", REGISTER)) == []  # unknown ref
    assert feed(session, w.SenderRegistered(999)) == []
    assert link.take() == []
    (ev,) = feed(session, w.Event("a" * 200, "e", pack(1)))  # a name the fast path leaves
    assert ev == core.EventReceived("a" * 200, "e", pack(1))


def test_requests_for_us_are_resolved_or_answered_with_the_error(session: ClientSession) -> None:
    link = open_session(session)
    s = sender("s", get=lambda p: p, boom=lambda p: 1 / 0)
    ref = session.add_sender(s)
    assert ref is not None
    feed(session, w.SenderRegistered(ref))
    link.take()
    feed(session, w.Request(1, "nobody", "get", b""))
    feed(session, w.Request(2, "s", "nope", b""))
    feed(session, w.Request(3, "s", "get", b"\xff"))
    codes = [(m.request_id, m.status) for m in link.take() if isinstance(m, w.Response)]
    assert codes == [
        (1, ErrorCode.NO_SUCH_SENDER),
        (2, ErrorCode.NO_SUCH_METHOD),
        (3, ErrorCode.MALFORMED),
    ]
    (got,) = feed(session, w.Request(4, "s", "get", pack(5)))
    assert isinstance(got, core.RequestReceived) and got.params == 5
    session.respond(4, "s", "get", got.handler(got.params))
    assert link.take() == [w.Response(4, ErrorCode.OK, "", pack(5))]
    (boom,) = feed(session, w.Request(5, "s", "boom", b""))
    assert isinstance(boom, core.RequestReceived)
    with pytest.raises(ZeroDivisionError) as info:
        boom.handler(None)
    session.respond_error(5, "s", "boom", info.value)
    (err,) = link.take()
    assert isinstance(err, w.Response) and err.status == ErrorCode.HANDLER_ERROR
    assert "ZeroDivisionError" in err.message
    session.respond(6, "s", "get", object())  # a result CBOR cannot carry
    (bad,) = link.take()
    assert isinstance(bad, w.Response) and bad.status != ErrorCode.OK


def test_triggers_offline_removed_and_too_large(session: ClientSession) -> None:
    s = sender("s")
    session.add_sender(s)
    session.trigger(s, "e", pack(1))
    assert session.stats["dropped_offline"] == 1
    link = start(session)
    feed(session, w.Welcome("gw", 64, 0))
    (reg,) = link.take()
    assert isinstance(reg, w.RegisterSender)
    feed(session, w.SenderRegistered(reg.sender_ref))
    session.trigger(s, "e", pack("x"))
    (trigger,) = link.take()
    assert isinstance(trigger, w.Trigger) and trigger.event_ref == reg.events[0][0]
    with pytest.raises(EncodeError):
        session.trigger(s, "e", pack("x" * 100))
    assert session.stats["triggers"] == 1
    assert session.remove_sender("s")
    assert link.take() == [w.UnregisterSender(reg.sender_ref)]
    with pytest.raises(NotConnectedError):
        session.trigger(s, "e", b"")


def test_unlisten_only_when_the_last_listener_of_a_key_goes(session: ClientSession) -> None:
    link = open_session(session)
    one, lid = session.subscribe(lambda info, data: None, "s", "e")
    two, none = session.subscribe(lambda info, data: None, "s", "e")
    assert lid is not None and none is None
    feed(session, w.Listening(lid))
    link.take()
    session.table.unsubscribe(one, "s", "e")
    session.unlisten(("s", "e"))
    assert link.take() == []  # `two` still listens
    session.table.unsubscribe(two, "s", "e")
    session.unlisten(("s", "e"))
    assert link.take() == [w.Unlisten(lid)]
