"""The gateway core's parts, each on its own, on the fake clock.

GatewayCore is made of Registrations, Requests, Reservations, GatewayService
and Timers (and ServerRouter of a ConnectionLimit); test_gateway_core.py
drives them all through frames, these tests pin each part's own contract.
"""

from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeClock, MemoryLink

from sig.core.gateway import GatewayCore, Limits
from sig.core.reservations import Reservations
from sig.core.service import BadParams, page, page_args
from sig.core.session import Session, State
from sig.errors import DuplicateSenderError, ErrorCode, RequestTooLarge
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack
from sig.routers.gateway import ConnectionLimit


def opened(core: GatewayCore, name: str, keepalive_ms: int = 0) -> tuple[MemoryLink, Session]:
    link = MemoryLink(f"link-{name}")
    session = core.attach(link)
    core.receive(session, w.encode(w.Hello(name, 1024, keepalive_ms)))
    link.take()
    return link, session


# --- Reservations -----------------------------------------------------------


def test_a_reservation_keeps_a_name_for_its_link_until_it_expires(clock: FakeClock) -> None:
    held = Reservations(clock)
    assert not held
    held.reserve("serial:a", ["s1", "s2"], 4.0)
    held.check("s1", "serial:a")  # its own link takes it back at once
    with pytest.raises(DuplicateSenderError, match=r"reserved for serial:a for 4\.0 s more"):
        held.check("s1", None)
    clock.now += 1.5
    assert held.for_link("serial:a") == {"s1": 2.5, "s2": 2.5} and held.for_link("x") == {}
    held.release("s1")
    assert list(held) == ["s2"]
    clock.now += 2.5
    held.expire(clock.now)
    assert not held and held.for_link("serial:a") == {}
    held.check("s2", None)  # free again


def test_reserving_again_moves_a_name_to_the_new_link(clock: FakeClock) -> None:
    held = Reservations(clock)
    held.reserve("serial:a", ["s"], 10.0)
    held.reserve("serial:b", ["s"], 10.0)
    assert held.for_link("serial:a") == {} and list(held.for_link("serial:b")) == ["s"]
    held.check("s", "serial:b")
    with pytest.raises(DuplicateSenderError):
        held.check("s", "serial:a")


# --- Requests ---------------------------------------------------------------


def test_requests_share_a_handler_link_fairly(core: GatewayCore) -> None:
    core.limits = Limits(pending_per_link=4)
    _, handler = opened(core, "h")
    _, flooder = opened(core, "f")
    _, newcomer = opened(core, "n")
    requests = core.requests
    assert requests.admit(handler, flooder) is None
    requests.load[handler] = {flooder: 2}
    handler.handling.update({1: object(), 2: object()})
    # one requester holding 2 of 4: its share is 4 // (1 + 1) = 2, it must wait
    assert "fair share of 4 is 2" in (requests.admit(handler, flooder) or "")
    assert requests.admit(handler, newcomer) is None


def test_a_forwarded_request_times_out_once(core: GatewayCore, clock: FakeClock) -> None:
    hlink, handler = opened(core, "h")
    core.receive(handler, w.encode(w.RegisterSender(1, "S", (), ("get",))))
    hlink.take()
    done: list[tuple[int, str, bytes]] = []
    core.start_request("S", "get", pack(None), lambda *a: done.append(a), timeout=2.0)
    [fwd] = hlink.take()
    assert isinstance(fwd, w.Request) and len(core.requests) == 1
    clock.now += 1.9
    core.requests.expire(clock.now)
    assert done == []
    clock.now += 0.1
    core.requests.expire(clock.now)
    assert [d[0] for d in done] == [ErrorCode.TIMEOUT]
    core.receive(handler, w.encode(w.Response(fwd.request_id, 0, "", pack(1))))  # late
    assert len(done) == 1 and len(core.requests) == 0 and not core.requests.load


def test_the_requests_of_a_gone_sender_fail_with_sender_gone(core: GatewayCore) -> None:
    hlink, handler = opened(core, "h")
    core.receive(handler, w.encode(w.RegisterSender(1, "S", (), ("get",))))
    done: list[tuple[int, str, bytes]] = []
    core.start_request("S", "get", pack(None), lambda *a: done.append(a))
    core.receive(handler, w.encode(w.UnregisterSender(1)))
    assert done == [(ErrorCode.SENDER_GONE, "sender 'S' went away", b"")]
    assert len(core.requests) == 0


# --- Timers -----------------------------------------------------------------


def test_timers_ping_an_idle_session_then_end_a_silent_one(
    core: GatewayCore, clock: FakeClock
) -> None:
    link, session = opened(core, "a", keepalive_ms=1000)
    clock.now += 1.0
    core.timers.poll()
    assert link.take() == [w.Ping(0)]
    clock.now += 2.1  # 3.1 s without a frame: more than 3 keepalives
    core.timers.poll()
    assert session.state is State.CLOSED and link.closed
    assert session.close_reason == "link_timeout" and session not in core.sessions


def test_timers_close_a_tcp_link_that_never_says_hello(core: GatewayCore, clock: FakeClock) -> None:
    link = MemoryLink("tcp:silent")
    session = core.attach(link)
    clock.now += core.hello_timeout + 0.1
    core.poll()
    assert link.closed and session.close_reason == "hello_timeout"


# --- GatewayService ---------------------------------------------------------


def test_page_args_are_checked() -> None:
    assert page_args({}) == (0, 100)
    assert page_args({"offset": 3, "limit": 0}) == (3, 1)
    for bad in ([], {"offset": -1}, {"limit": "2"}, {"other": 1}):
        with pytest.raises(BadParams):
            page_args(bad)


def test_a_page_ends_before_the_first_item_that_does_not_fit() -> None:
    items = [{"name": f"n{i}", "events": ["e"] * 10} for i in range(10)]
    data = unpack(page(iter(items), 0, 100, 10, 200))
    assert 0 < len(data["items"]) < 10 and data["next"] == len(data["items"])
    assert data["total"] == 10
    lone = unpack(page(iter([{"events": ["x" * 50] * 10}]), 9, 5, 10, 120))
    assert lone == {"items": [{"events": [], "truncated": True}], "next": None, "total": 10}
    with pytest.raises(RequestTooLarge):
        page(iter([{"name": "x" * 200}]), 0, 5, 1, 100)


def test_the_service_answers_unknown_methods_and_bad_params(core: GatewayCore) -> None:
    got: list[tuple[int, str, bytes]] = []
    core.service.answer("nope", pack(None), 1000, lambda *a: got.append(a))
    core.service.answer("stats", b"\xff", 1000, lambda *a: got.append(a))
    core.service.answer("stats", pack(None), 1000, lambda *a: got.append(a))
    assert got[0][:2] == (
        ErrorCode.NO_SUCH_METHOD,
        "$gateway has no method 'nope' (senders, links, stats, release)",
    )
    assert got[1][0] == ErrorCode.MALFORMED
    assert got[2][0] == ErrorCode.OK and unpack(got[2][2]) == core.stats()


def test_a_link_reporter_adds_rows_with_their_reservations(
    core: GatewayCore, clock: FakeClock
) -> None:
    core.add_link_reporter(lambda: [{"link": "serial:x", "state": "reopening"}])
    core.name_reservations.reserve("serial:x", ["dev"], 3.0)
    assert core.links() == [{"link": "serial:x", "state": "reopening", "reserved": {"dev": 3.0}}]


# --- ConnectionLimit (ServerRouter) -------------------------------------------


class Conn:
    """What ConnectionLimit reads and does to a TCP link."""

    def __init__(self, name: str, state: State = State.AWAIT_HELLO) -> None:
        self.name = name
        self.session: Any = type("S", (), {"state": state})()
        self.close_reason = ""
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def test_the_connection_limit_evicts_the_oldest_link_without_hello() -> None:
    counters = {"refused_connections": 0}
    gauges: dict[str, float] = {}
    limit = ConnectionLimit(2, counters, gauges)
    a, b, c = Conn("a", State.OPEN), Conn("b"), Conn("c")
    for link in (a, b):
        assert limit.admit()
        limit.up(link)  # type: ignore[arg-type]
    assert gauges == {"connections": 2, "max_connections": 2}
    assert limit.admit()  # b has no session yet: c may come and evict it
    limit.up(c)  # type: ignore[arg-type]
    assert b.aborted and b.close_reason == "evicted" and not a.aborted
    assert gauges["connections"] == 2 and counters["refused_connections"] == 0


def test_the_connection_limit_refuses_when_every_link_has_a_session() -> None:
    counters = {"refused_connections": 0}
    limit = ConnectionLimit(1, counters, {})
    a = Conn("a", State.OPEN)
    limit.up(a)  # type: ignore[arg-type]
    # a is still listed as pre-HELLO (swept lazily): the door lets one in, up() decides
    assert limit.admit()
    late = Conn("late", State.OPEN)
    limit.up(late)  # type: ignore[arg-type]
    assert late.aborted and late.close_reason == "refused" and not a.aborted
    assert counters["refused_connections"] == 1
    assert not limit.admit() and counters["refused_connections"] == 2  # swept: refused at once


def test_the_event_head_cache_is_bounded_and_starts_again_when_full() -> None:
    from sig.core.gateway import EVENT_HEAD_CACHE, EventHeads

    heads = EventHeads()
    assert heads["s", "e"] == w.event_head("s", "e")
    for i in range(EVENT_HEAD_CACHE - 1):
        heads[f"s{i}", "e"]
    assert len(heads) == EVENT_HEAD_CACHE
    assert heads["s", "e"] == w.event_head("s", "e")  # a hit does not grow it
    assert len(heads) == EVENT_HEAD_CACHE
    assert heads["new", "e"] == w.event_head("new", "e")  # the next miss starts it again
    assert len(heads) == 1
