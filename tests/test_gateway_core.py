"""The sans-I/O gateway core: one test per session transition, plus requests and timers.

These drive GatewayCore with in-memory links and a fake clock: the routing
layer is what is under test here, not a carrier (carriers are tested over real
sockets and ptys elsewhere).
"""

from __future__ import annotations

from typing import Any

import pytest

from sig import _wire as w
from sig._data import pack, unpack
from sig._frame import FrameDecoder, encode_frame
from sig._gateway import GatewayCore
from sig._session import TRANSITIONS, Input, Session, State
from sig.errors import ErrorCode


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryLink:
    """Collects what the gateway sends, decoded back into messages."""

    def __init__(self, name: str, persistent: bool = False) -> None:
        self.name = name
        self.persistent = persistent
        self.decoder = FrameDecoder()
        self.sent: list[w.Message] = []
        self.closed = False
        self.refuse_events = False

    def send(self, frame: bytes, droppable: bool = False, urgent: bool = False) -> bool:
        if droppable and self.refuse_events:
            return False
        for body in self.decoder.feed(frame):
            self.sent.append(w.decode(body))
        return True

    def close(self) -> None:
        self.closed = True

    def stats(self) -> dict[str, Any]:
        return {}

    def take(self) -> list[w.Message]:
        out, self.sent = self.sent, []
        return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def core(clock: FakeClock) -> GatewayCore:
    return GatewayCore("gw", request_timeout=5.0, clock=clock)


def connect(
    core: GatewayCore, name: str, persistent: bool = False, keepalive_ms: int = 0
) -> tuple[MemoryLink, Session]:
    link = MemoryLink(f"link-{name}", persistent)
    session = core.attach(link)
    core.receive(session, w.encode(w.Hello(name, 1024, keepalive_ms)))
    return link, session


def feed(core: GatewayCore, session: Any, *msgs: w.Message) -> None:
    for msg in msgs:
        core.receive(session, w.encode(msg))


def test_transition_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(State)
    for state in (State.AWAIT_HELLO, State.OPEN):
        assert set(TRANSITIONS[state]) == set(Input)


def test_hello_opens_the_session_with_welcome(core: GatewayCore) -> None:
    link, session = connect(core, "a")
    assert session.state is State.OPEN
    assert link.take() == [w.Welcome("gw", core.max_body, 0)]


def test_persistent_link_gets_invite_and_default_keepalive(core: GatewayCore) -> None:
    link, session = connect(core, "dev", persistent=True)
    sent = link.take()
    assert sent[0] == w.Invite()
    assert sent[1] == w.Welcome("gw", core.max_body, 2000)
    assert session.keepalive_s == 2.0


def test_message_before_hello_gets_no_session_and_invite(core: GatewayCore) -> None:
    link = MemoryLink("l")
    session = core.attach(link)
    feed(core, session, w.Trigger(1, b""))
    sent = link.take()
    assert isinstance(sent[0], w.Error) and sent[0].code == ErrorCode.NO_SESSION
    assert sent[1] == w.Invite()
    assert session.state is State.AWAIT_HELLO


def test_unsupported_version_and_unknown_type(core: GatewayCore) -> None:
    link = MemoryLink("l")
    session = core.attach(link)
    core.receive(session, bytes([0x01, 0x02, 0x01, 0x61, 0, 0, 0, 0]))
    err = link.take()[0]
    assert isinstance(err, w.Error) and err.code == ErrorCode.UNSUPPORTED_VERSION and err.ref == 1
    assert session.state is State.AWAIT_HELLO
    core.receive(session, bytes([0x3F]))
    err = link.take()[0]
    assert isinstance(err, w.Error) and err.code == ErrorCode.UNKNOWN_TYPE and err.ref == 0x3F


def test_second_hello_replaces_the_session(core: GatewayCore) -> None:
    watcher, _ = connect(core, "watcher")
    feed(core, _, w.Listen(1, None, "#connect"), w.Listen(2, None, "#disconnect"))
    link, session = connect(core, "dev", persistent=True)
    feed(core, session, w.RegisterSender(1, "sensor1", ((1, "t"),)))
    watcher.take()
    feed(core, session, w.Hello("dev", 1024, 0))  # the device reset
    events = [m for m in watcher.take() if isinstance(m, w.Event)]
    assert [(e.sender, e.event) for e in events] == [("sensor1", "#disconnect")]
    assert session.state is State.OPEN and not session.senders
    assert "sensor1" not in core.table.senders


def test_link_timeout_on_uart_returns_to_await_hello(core: GatewayCore, clock: FakeClock) -> None:
    link, session = connect(core, "dev", persistent=True, keepalive_ms=1000)
    feed(core, session, w.RegisterSender(1, "sensor1", ((1, "t"),)))
    clock.now += 1.0
    core.poll()
    assert w.Ping(0) in link.take()  # idle for one interval: the gateway pings
    clock.now += 2.5  # 3.5 s without a frame from the device
    core.poll()
    assert session.state is State.AWAIT_HELLO
    assert "sensor1" not in core.table.senders
    assert not link.closed and session in core.sessions


def test_link_timeout_on_tcp_closes_the_connection(core: GatewayCore, clock: FakeClock) -> None:
    link, session = connect(core, "app", keepalive_ms=1000)
    clock.now += 3.5
    core.poll()
    assert session.state is State.CLOSED and link.closed
    assert session not in core.sessions


def test_link_closed_ends_everything(core: GatewayCore) -> None:
    link, session = connect(core, "app")
    feed(core, session, w.RegisterSender(1, "S", ((1, "e"),)), w.Listen(2, None, None))
    core.detach(session)
    assert session.state is State.CLOSED
    assert core.table.senders == {} and core.table.subscription_count() == 0


def test_breach_closes_the_link(core: GatewayCore) -> None:
    link, session = connect(core, "app")
    core.breach(session, "test")
    assert session.state is State.ERROR and link.closed
    core.detach(session)
    assert session not in core.sessions


def test_trigger_routes_once_per_link(core: GatewayCore) -> None:
    a, sa = connect(core, "a")
    b, sb = connect(core, "b")
    feed(core, sb, w.Listen(1, "S", "#ch"), w.Listen(2, None, "#ch"), w.Listen(3, "S", None))
    feed(core, sa, w.RegisterSender(7, "S", ((9, "#ch"),)))
    b.take()
    feed(core, sa, w.Trigger(9, pack(42)))
    events = b.take()
    assert events == [w.Event("S", "#ch", pack(42))]


def test_trigger_with_unknown_ref_is_refused(core: GatewayCore) -> None:
    a, sa = connect(core, "a")
    b, sb = connect(core, "b")
    feed(core, sb, w.RegisterSender(1, "theirs", ((1, "e"),)))
    a.take()
    feed(core, sa, w.Trigger(1, b""))  # ref 1 is b's, not a's
    err = a.take()[0]
    assert isinstance(err, w.Error) and err.code == ErrorCode.UNKNOWN_REF


def test_duplicate_sender_name_gets_a_clear_error(core: GatewayCore) -> None:
    a, sa = connect(core, "a")
    b, sb = connect(core, "b")
    feed(core, sa, w.RegisterSender(1, "S", ()))
    b.take()
    feed(core, sb, w.RegisterSender(4, "S", ()))
    err = b.take()[0]
    assert isinstance(err, w.Error) and err.code == ErrorCode.DUPLICATE_SENDER and err.ref == 4
    assert "'S'" in err.message
    assert core.table.senders["S"].owner is sa


def test_dropped_events_are_counted(core: GatewayCore) -> None:
    a, sa = connect(core, "a")
    b, sb = connect(core, "b")
    feed(core, sb, w.Listen(1, "S", "e"))
    feed(core, sa, w.RegisterSender(1, "S", ((1, "e"),)))
    b.refuse_events = True
    feed(core, sa, w.Trigger(1, b""), w.Trigger(1, b""))
    assert sb.dropped_events == 2 and core.counters["dropped_events"] == 2


def request_roundtrip(core: GatewayCore) -> tuple[MemoryLink, Any, MemoryLink, Any]:
    handler, sh = connect(core, "handler")
    asker, sa = connect(core, "asker")
    feed(core, sh, w.RegisterSender(1, "S", (), ("get",), False))
    handler.take()
    asker.take()
    return handler, sh, asker, sa


def test_request_is_forwarded_and_answered(core: GatewayCore) -> None:
    handler, sh, asker, sa = request_roundtrip(core)
    feed(core, sa, w.Request(77, "S", "get", pack(1)))
    fwd = handler.take()[0]
    assert isinstance(fwd, w.Request) and fwd.method == "get" and fwd.data == pack(1)
    feed(core, sh, w.Response(fwd.request_id, 0, "", pack("ok")))
    assert asker.take() == [w.Response(77, 0, "", pack("ok"))]


def test_request_errors_answered_by_the_gateway(core: GatewayCore) -> None:
    handler, sh, asker, sa = request_roundtrip(core)
    feed(core, sa, w.Request(1, "nobody", "get"), w.Request(2, "S", "nope"))
    codes = [m.status for m in asker.take() if isinstance(m, w.Response)]
    assert codes == [ErrorCode.NO_SUCH_SENDER, ErrorCode.NO_SUCH_METHOD]


def test_request_times_out(core: GatewayCore, clock: FakeClock) -> None:
    handler, sh, asker, sa = request_roundtrip(core)
    feed(core, sa, w.Request(5, "S", "get"))
    clock.now += 5.1
    core.poll()
    resp = asker.take()[0]
    assert isinstance(resp, w.Response) and resp.status == ErrorCode.TIMEOUT
    assert not sh.handling


def test_request_fails_with_sender_gone_when_handler_leaves(core: GatewayCore) -> None:
    handler, sh, asker, sa = request_roundtrip(core)
    feed(core, sa, w.Request(5, "S", "get"))
    core.detach(sh)
    resp = next(m for m in asker.take() if isinstance(m, w.Response))
    assert resp.status == ErrorCode.SENDER_GONE


def test_gateway_answers_its_own_requests(core: GatewayCore) -> None:
    a, sa = connect(core, "a")
    feed(core, sa, w.RegisterSender(1, "S", ((1, "e"),)))
    a.take()
    feed(core, sa, w.Request(1, "$gateway", "senders"), w.Request(2, "$gateway", "nope"))
    ok, bad = [m for m in a.take() if isinstance(m, w.Response)]
    assert unpack(ok.data) == {"S": {"events": ["e"], "requests": [], "link": "link-a"}}
    assert bad.status == ErrorCode.NO_SUCH_METHOD


def test_local_listener_and_sender_share_the_table(core: GatewayCore) -> None:
    from sig._api import Listener

    got: list[Any] = []
    listener = Listener(lambda info, data: got.append((info["event"], data)), "S", None)
    core.table.subscribe(listener, "S", None)
    a, sa = connect(core, "a")
    feed(core, sa, w.RegisterSender(1, "S", ((1, "e"),)), w.Trigger(1, pack([1, 2])))
    assert got == [("#connect", {"events": ["e"], "requests": []}), ("e", [1, 2])]
    frame = encode_frame(w.encode(w.Trigger(1, b"\xff")))  # not one CBOR item
    core.receive(sa, FrameDecoder().feed(frame)[0])
    assert core.counters["bad_data"] == 1 and len(got) == 2


def test_request_with_bad_params_is_malformed(core: GatewayCore) -> None:
    core.add_local_sender("local", (), {"echo": lambda params: params})
    a, sa = connect(core, "a")
    a.take()
    feed(core, sa, w.Request(3, "local", "echo", b"\xff"), w.Request(4, "local", "echo", pack(5)))
    bad, good = [m for m in a.take() if isinstance(m, w.Response)]
    assert bad.status == ErrorCode.MALFORMED and bad.request_id == 3
    assert good == w.Response(4, 0, "", pack(5))


def test_refused_registrations_do_not_count_as_protocol_errors(core: GatewayCore) -> None:
    a, sa = connect(core, "a")
    b, sb = connect(core, "b")
    feed(core, sa, w.RegisterSender(1, "S", ()))
    for ref in range(2, 60):  # a client retrying a taken name, far past the breach limit
        feed(core, sb, w.RegisterSender(ref, "S", ()))
    assert not b.closed and sb.protocol_errors == 0
    for _ in range(40):  # real protocol errors still close a TCP link
        core.receive(sb, bytes([0x3F]))
    assert b.closed


def test_a_broken_error_is_counted_but_never_answered(core: GatewayCore) -> None:
    a, sa = connect(core, "a")
    a.take()
    core.receive(sa, bytes([w.MessageType.ERROR, 0x80]))  # truncated varint
    core.receive(sa, bytes([w.MessageType.ERROR | w.FLAG_SEQ, 0x01]))  # flag not negotiated
    assert a.take() == []
    assert sa.protocol_errors == 2
    core.receive(sa, bytes([w.MessageType.PING, 0x80]))  # other broken messages are answered
    err = a.take()[0]
    assert isinstance(err, w.Error) and err.code == ErrorCode.MALFORMED
