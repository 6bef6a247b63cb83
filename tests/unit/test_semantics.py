"""PROTOCOL.md's answers to an implementer's questions (issue 12, item 2 and 3), on the core.

Each test is one rule of sections 2-4: what an ERROR's ``ref`` is about, the
idempotent handshake, the edge values, a malformed REQUEST, presence
incarnations. The in-memory link frames and decodes what the core sends.
"""

from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeClock, MemoryLink

from sig.core.gateway import GatewayCore
from sig.core.routing import RoutingTable
from sig.core.session import Session, State
from sig.errors import ErrorCode, InvalidNameError
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack
from sig.protocol.frame import encode_frame

T = w.MessageType


@pytest.fixture
def core() -> GatewayCore:
    return GatewayCore("gw", clock=FakeClock())


def hello(name: str = "dev", **kw: Any) -> w.Hello:
    return w.Hello(name, kw.pop("max_body", 256), kw.pop("keepalive_ms", 2000), **kw)


def attach(core: GatewayCore, persistent: bool = True) -> tuple[MemoryLink, Session]:
    link = MemoryLink("link-dev", persistent)
    return link, core.attach(link)


def feed(core: GatewayCore, session: Session, *msgs: w.Message) -> None:
    for msg in msgs:
        core.receive(session, w.encode(msg))


def errors(link: MemoryLink) -> list[tuple[int, int, int]]:
    """(code, about, ref) of every ERROR the link got since the last take()."""
    return [(m.code, m.about, m.ref) for m in link.take() if isinstance(m, w.Error)]


# --- the handshake ----------------------------------------------------------


def test_cold_start_stale_invite_and_repeated_hello_keep_one_session(core: GatewayCore) -> None:
    """The cold start of issue 12: the port's INVITE crosses the device's HELLO,
    so a device that answers the INVITE sends its HELLO twice. The second gets
    the same WELCOME and the session stays: what the device registers after the
    first WELCOME is not wiped, and nothing is registered twice."""
    link, session = attach(core)
    assert link.take() == [w.Invite()]  # the stale INVITE of the port's opening
    feed(core, session, hello())
    first, welcome = link.take(), session.welcome
    feed(core, session, hello())  # the answer to the stale INVITE
    assert link.take() == first == [w.Welcome("gw", core.max_body, 2000)]
    assert session.welcome is welcome  # the same session, not a new one
    assert session.state is State.OPEN and core.stats()["links"] == 1
    feed(core, session, w.RegisterSender(1, "s", ((1, "e"),)), w.Listen(2, "s", None))
    assert link.take() == [w.SenderRegistered(1), w.Listening(2)]
    assert session.protocol_errors == 0


def test_a_hello_after_registrations_replaces_the_session(core: GatewayCore) -> None:
    """A device that reset says HELLO again: its old registrations go (with #disconnect)."""
    link, session = attach(core)
    feed(core, session, hello(), w.RegisterSender(1, "s", ((1, "e"),)))
    link.take()
    feed(core, session, hello())
    assert link.take() == [w.Welcome("gw", core.max_body, 2000)]
    assert "s" not in core.table.senders and session.senders == {}
    feed(core, session, w.RegisterSender(1, "s", ((1, "e"),)))
    assert link.take() == [w.SenderRegistered(1)]  # the same refs again: no DUPLICATE_REF


@pytest.mark.parametrize(
    "second",
    [
        hello(keepalive_ms=1000),  # another keepalive: another session
        hello("other"),
        hello(max_body=128),
        hello(credentials=pack({"user": "u", "password": "p"})),
        hello(features=w.Feature.AUTH),  # signed: a new nonce, always a new session
    ],
    ids=["keepalive", "name", "max_body", "credentials", "signed"],
)
def test_a_different_hello_replaces_even_an_empty_session(
    core: GatewayCore, second: w.Hello
) -> None:
    link, session = attach(core)
    feed(core, session, hello(features=second.features))
    first = session.welcome
    feed(core, session, second)
    assert session.welcome is not first  # the second HELLO opened the session again
    assert session.hello == second and session.state is State.OPEN


def test_a_hello_of_another_version_leaves_the_open_session(core: GatewayCore) -> None:
    link, session = attach(core)
    feed(core, session, hello(), w.RegisterSender(1, "s", ((1, "e"),)))
    link.take()
    core.receive(session, bytes([T.HELLO, 0x02, 0x01, 0x61, 0x10, 0x00, 0x00, 0x00]))
    assert errors(link) == [(ErrorCode.UNSUPPORTED_VERSION, T.HELLO, 1)]
    assert session.state is State.OPEN and "s" in core.table.senders


@pytest.mark.parametrize("max_body", [0, 1, 7])
def test_a_hello_with_max_body_below_8_opens_no_session(core: GatewayCore, max_body: int) -> None:
    link, session = attach(core)
    link.take()
    core.receive(session, bytes([T.HELLO, 0x01, 0x01, 0x61, max_body, 0x00, 0x00, 0x00]))
    assert errors(link) == [(ErrorCode.MALFORMED, T.HELLO, 0)]
    assert session.state is State.AWAIT_HELLO
    feed(core, session, hello(max_body=8))
    assert session.state is State.OPEN and session.peer_max_body == 8


def test_unregistering_every_sender_does_not_end_a_uart_session(core: GatewayCore) -> None:
    link, session = attach(core)
    feed(core, session, hello(), w.RegisterSender(1, "s", ((1, "e"),)), w.UnregisterSender(1))
    link.take()
    assert session.state is State.OPEN and not session.senders
    feed(core, session, w.Ping(5))
    assert link.take() == [w.Pong(5)]  # no INVITE, no NO_SESSION: the session goes on


def test_any_frame_that_passed_the_frame_check_resets_the_link_timer(core: GatewayCore) -> None:
    """What counts for the keepalive (section 3): any frame with a good CRC, even
    a message that is then refused; noise that fails the frame check does not."""
    link, session = attach(core)
    feed(core, session, hello())
    clock = core.clock
    assert isinstance(clock, FakeClock)
    clock.now += 5.0
    core.receive(session, bytes([0x3F]))  # an unknown type: answered, and alive
    assert session.last_rx == clock.now
    assert errors(link) == [(ErrorCode.UNKNOWN_TYPE, 0x3F, 0x3F)]


# --- what an ERROR is about -------------------------------------------------


def test_each_error_names_the_type_and_the_id_it_answers(core: GatewayCore) -> None:
    """ids of different kinds may be equal: about says which kind ref is."""
    link, session = attach(core, persistent=False)
    feed(core, session, w.Trigger(1, b""))  # before HELLO
    assert errors(link) == [(ErrorCode.NO_SESSION, T.TRIGGER, 0)]
    feed(core, session, hello(), w.RegisterSender(1, "s", ((1, "e"),)), w.Listen(1, "s", None))
    link.take()
    feed(
        core,
        session,
        w.RegisterSender(1, "t", ()),  # sender_ref 1 in use
        w.RegisterSender(2, "u", ((1, "f"),)),  # event_ref 1 in use: ref is still the sender_ref
        w.Listen(1, None, None),  # listener_id 1 in use
        w.Trigger(9, b""),
        w.UnregisterSender(7),
        w.Unlisten(8),
        w.RegisterSender(3, "v", ((3, "$e"),)),
    )
    assert errors(link) == [
        (ErrorCode.DUPLICATE_REF, T.REGISTER_SENDER, 1),
        (ErrorCode.DUPLICATE_REF, T.REGISTER_SENDER, 2),
        (ErrorCode.DUPLICATE_REF, T.LISTEN, 1),
        (ErrorCode.UNKNOWN_REF, T.TRIGGER, 9),
        (ErrorCode.UNKNOWN_REF, T.UNREGISTER_SENDER, 7),
        (ErrorCode.UNKNOWN_REF, T.UNLISTEN, 8),
        (ErrorCode.INVALID_NAME, T.REGISTER_SENDER, 3),
    ]
    feed(core, session, w.Event("s", "e"))  # a type a gateway is not sent
    assert errors(link) == [(ErrorCode.UNKNOWN_TYPE, T.EVENT, T.EVENT)]


def test_a_bad_body_is_answered_with_its_leading_id(core: GatewayCore) -> None:
    link, session = attach(core)
    feed(core, session, hello())
    link.take()
    # REGISTER_SENDER 5 whose event name is empty: INVALID_NAME about sender_ref 5
    core.receive(session, bytes([T.REGISTER_SENDER, 5, 1, 0x61, 0, 1, 1, 0, 0]))
    core.receive(session, bytes([T.TRIGGER, 0x81, 0x00]))  # a padded varint
    core.receive(session, bytes([T.LISTEN, 0, 0, 0]))  # listener_id 0
    assert errors(link) == [
        (ErrorCode.INVALID_NAME, T.REGISTER_SENDER, 5),
        (ErrorCode.MALFORMED, T.TRIGGER, 0),
        (ErrorCode.MALFORMED, T.LISTEN, 0),
    ]


# --- requests ---------------------------------------------------------------


def test_a_malformed_request_gets_a_response_its_requester_can_match(core: GatewayCore) -> None:
    link, session = attach(core)
    feed(core, session, hello())
    link.take()
    core.receive(session, bytes([T.REQUEST, 7, 1, 0x73, 0]))  # empty method name
    core.receive(session, bytes([T.REQUEST, 8, 1]))  # ends inside the sender name
    core.receive(session, bytes([T.REQUEST, 0x88]))  # not even the request_id parses
    got = link.take()
    assert [(m.request_id, m.status) for m in got if isinstance(m, w.Response)] == [
        (7, ErrorCode.INVALID_NAME),
        (8, ErrorCode.MALFORMED),
    ]
    assert [(m.code, m.about, m.ref) for m in got if isinstance(m, w.Error)] == [
        (ErrorCode.MALFORMED, T.REQUEST, 0)
    ]
    # MALFORMED counts toward a TCP link's breach limit; INVALID_NAME is a refusal
    assert session.protocol_errors == 2


def test_a_malformed_request_before_hello_gets_an_error(core: GatewayCore) -> None:
    link, session = attach(core, persistent=False)
    core.receive(session, bytes([T.REQUEST, 7, 1, 0x73, 0]))
    assert errors(link) == [(ErrorCode.INVALID_NAME, T.REQUEST, 7)]


def test_a_malformed_response_ends_its_request_for_the_requester(core: GatewayCore) -> None:
    handler, hs = attach(core)
    feed(core, hs, hello("h"), w.RegisterSender(1, "H", (), ("m",)))
    asker, asks = attach(core, persistent=False)
    feed(core, asks, hello("a"), w.Request(41, "H", "m"))
    (forwarded,) = [m for m in handler.take() if isinstance(m, w.Request)]
    gw_id = forwarded.request_id
    body = w.encode(w.Response(gw_id, 0, ""))[:-1] + b"\x01\xff"  # text: not UTF-8
    core.receive(hs, body)
    assert errors(handler) == [(ErrorCode.MALFORMED, T.RESPONSE, gw_id)]
    (answer,) = [m for m in asker.take() if isinstance(m, w.Response)]
    assert answer.request_id == 41 and answer.status == ErrorCode.MALFORMED
    assert "malformed response" in answer.message


def test_an_unsolicited_response_is_ignored_and_counted(core: GatewayCore) -> None:
    link, session = attach(core)
    feed(core, session, hello(), w.Response(99, 0, "", pack(1)))
    assert link.take() == [w.Invite(), w.Welcome("gw", core.max_body, 2000)]  # no answer to it
    assert core.stats()["unsolicited_responses"] == 1


# --- names and registrations ------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        w.RegisterSender(1, "$s", ()),
        w.RegisterSender(1, "s", ((1, "$e"),)),
        w.RegisterSender(1, "s", (), ("$m",)),
        w.RegisterSender(1, "s", ((1, "e"), (2, "e"))),
        w.RegisterSender(1, "s", (), ("m", "m")),
        w.RegisterSender(1, "s", ((1, "#connect"),)),
    ],
    ids=["$sender", "$event", "$method", "event_twice", "method_twice", "declared_connect"],
)
def test_reserved_and_repeated_names_are_invalid(core: GatewayCore, msg: w.RegisterSender) -> None:
    link, session = attach(core)
    feed(core, session, hello())
    link.take()
    feed(core, session, msg)
    assert errors(link) == [(ErrorCode.INVALID_NAME, T.REGISTER_SENDER, 1)]
    assert not core.table.senders
    assert core.stats()["refused_registrations"] == 0  # a refusal, not a limit


def test_listen_and_request_may_name_dollar_names(core: GatewayCore) -> None:
    link, session = attach(core)
    feed(core, session, hello(), w.Listen(1, "$gateway", None), w.Listen(2, None, "#$x"))
    feed(core, session, w.Request(3, "$gateway", "stats", pack({"limit": 1})))
    got = link.take()
    assert w.Listening(1) in got and w.Listening(2) in got
    (resp,) = [m for m in got if isinstance(m, w.Response)]
    assert resp.status == ErrorCode.OK


def test_in_process_senders_follow_the_same_dollar_rule(core: GatewayCore) -> None:
    with pytest.raises(InvalidNameError, match="reserved"):
        core.endpoints.add_sender("s", ["$e"])
    with pytest.raises(InvalidNameError, match="reserved"):
        core.endpoints.add_sender("s", [], {"$m": lambda p: p})


def test_a_link_receives_its_own_events_by_default(core: GatewayCore) -> None:
    """Self-delivery: the seed's rule (LISTEN option no_local turns it off, section 4)."""
    link, session = attach(core)
    feed(core, session, hello(), w.RegisterSender(1, "s", ((1, "e"),)), w.Listen(1, "s", "e"))
    link.take()
    feed(core, session, w.Trigger(1, pack(5)))
    assert link.take() == [w.Event("s", "e", pack(5))]


# --- presence: #connect / #disconnect -----------------------------------------


def test_connect_and_disconnect_carry_the_incarnation_and_the_default_handler(
    core: GatewayCore,
) -> None:
    watcher, ws = attach(core, persistent=False)
    feed(core, ws, hello("w"), w.Listen(1, "s", None))
    dev, ds = attach(core)
    feed(core, ds, hello(), w.RegisterSender(1, "s", ((1, "e"),), ("m",), default_handler=True))
    feed(core, ds, w.Trigger(1, pack(1)), w.UnregisterSender(1))
    feed(core, ds, w.RegisterSender(2, "s", ((2, "e"),)))
    core.detach(ds)
    got = [(m.event, unpack(m.data)) for m in watcher.take() if isinstance(m, w.Event)]
    assert [e for e, _ in got] == ["#connect", "e", "#disconnect", "#connect", "#disconnect"]
    (_, c1), (_, one), (_, d1), (_, c2), (_, d2) = got
    assert one == 1  # the event comes between its session's #connect and #disconnect
    assert c1 == {
        "events": ["e"],
        "requests": ["m"],
        "default": True,
        "incarnation": c1["incarnation"],
    }
    assert c1 == d1 and c2 == d2 and "default" not in c2  # one session, one incarnation
    assert c2["incarnation"] != c1["incarnation"]  # a new session of the same name


def test_incarnations_differ_across_gateway_starts_and_fit_json() -> None:
    seen = set()
    for _ in range(50):  # 50 gateway starts, each with its first sender session
        info = RoutingTable[Any]().add_sender("s", ["e"])
        seen.add(info.incarnation)
        assert 0 < info.incarnation < 2**53
    assert len(seen) == 50


def test_the_codec_frames_the_vector_error_it_documents() -> None:
    """PROTOCOL.md's ERROR example: DUPLICATE_SENDER about REGISTER_SENDER, ref 1."""
    body = w.encode(w.Error(ErrorCode.DUPLICATE_SENDER, 1, "x", T.REGISTER_SENDER))
    assert body == bytes([T.ERROR, 5, T.REGISTER_SENDER, 1, 1, 0x78])
    assert encode_frame(body)[-1] == 0


def test_sig_senders_shows_a_default_handler_as_a_star() -> None:
    from sig.tools.cli._show import senders_table

    text = senders_table(
        {
            "dev": {"events": ["t"], "requests": ["get"], "default": True, "link": "serial:x"},
            "app": {"events": [], "requests": [], "link": "tcp:y"},
        }
    )
    assert [line.split()[-1] for line in text.splitlines()] == ["REQUESTS", "-", "get,*"]
