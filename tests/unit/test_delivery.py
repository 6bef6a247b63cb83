"""Delivery policies, sans-I/O: the rule per link, no_local, latest's conflation, block's asks.

The gateway core runs on a fake clock with in-memory links (fakes.MemoryLink:
a real StreamLink pair turned by hand), so what a link sends, holds, replaces
and drops is the carrier's own code.
"""

from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeClock, MemoryLink

from sig.core.client import ClientSession
from sig.core.delivery import LinkRules, key_matches, listen_options
from sig.core.gateway import GatewayCore
from sig.core.session import Session
from sig.protocol import messages as w
from sig.protocol.constants import LISTEN_NO_LOCAL, POLICY_BLOCK, POLICY_DROP, POLICY_LATEST
from sig.protocol.data import pack, unpack


def connect(core: GatewayCore, name: str, persistent: bool = False) -> tuple[MemoryLink, Session]:
    link = MemoryLink(f"link-{name}", persistent)
    session = core.attach(link)
    core.receive(session, w.encode(w.Hello(name, 4096, 0)))
    link.take()
    return link, session


def feed(core: GatewayCore, session: Session, *msgs: w.Message) -> None:
    for msg in msgs:
        core.receive(session, w.encode(msg))


def events(link: MemoryLink) -> list[tuple[str, str, Any]]:
    return [(m.sender, m.event, unpack(m.data)) for m in link.take() if isinstance(m, w.Event)]


def trigger(core: GatewayCore, session: Session, value: Any, ref: int = 1) -> None:
    feed(core, session, w.Trigger(ref, pack(value)))


def test_listen_options_names_and_bits() -> None:
    assert listen_options() == POLICY_DROP
    assert listen_options("latest") == POLICY_LATEST
    assert listen_options("block", no_local=True) == POLICY_BLOCK | LISTEN_NO_LOCAL
    with pytest.raises(ValueError, match="unknown delivery policy 'lossless'"):
        listen_options("lossless")  # type: ignore[arg-type]


def test_key_matches_follows_the_routing_rules() -> None:
    assert key_matches(("s", "e"), "s", "e") and not key_matches(("s", "e"), "s", "f")
    assert key_matches(("s", None), "s", "anything") and not key_matches(("s", None), "t", "e")
    assert key_matches((None, "#ch"), "any", "#ch")
    assert not key_matches((None, "tick"), "s", "tick")  # rule 3: targeted events never leak
    assert key_matches((None, None), "s", "e")


def test_the_strictest_matching_policy_wins_and_no_local_leaves_out_own_events() -> None:
    rules = LinkRules(options={2: POLICY_LATEST, 3: POLICY_BLOCK | LISTEN_NO_LOCAL})
    listeners: dict[int, tuple[str | None, str | None]] = {
        1: ("s", None),
        2: ("s", "e"),
        3: (None, None),
    }
    # (others' events, own events): block from 3, but 3 takes no own events
    assert rules.rule(listeners, "s", "e") == (POLICY_BLOCK, POLICY_LATEST)
    assert rules.rule(listeners, "s", "f") == (POLICY_BLOCK, POLICY_DROP)
    assert rules.rule(listeners, "t", "e") == (POLICY_BLOCK, -1)  # own: nobody takes it
    assert ("s", "e") in rules.cache


def test_no_local_listener_does_not_get_its_own_links_events(core: GatewayCore) -> None:
    a_link, a = connect(core, "a")
    b_link, b = connect(core, "b")
    feed(core, a, w.RegisterSender(1, "a", ((1, "x"),)), w.Listen(10, "a", "x", LISTEN_NO_LOCAL))
    feed(core, b, w.Listen(20, "a", "x", LISTEN_NO_LOCAL))
    a_link.take()
    b_link.take()
    trigger(core, a, 1)
    assert events(a_link) == []
    assert events(b_link) == [("a", "x", 1)]  # no_local is about the listener's own link
    assert a.events_out == 0 and core.counters["dropped_events"] == 0
    # A plain listener of the same link brings its own events back (one EVENT per link).
    feed(core, a, w.Listen(11, "a", None))
    a_link.take()
    trigger(core, a, 2)
    assert events(a_link) == [("a", "x", 2)]
    # Gone again with it: the link's rule follows its listeners.
    feed(core, a, w.Unlisten(11))
    a_link.take()
    trigger(core, a, 3)
    assert events(a_link) == []
    feed(core, a, w.Unlisten(10))
    assert a not in core.delivery.links  # no options left: the plain path again


def test_latest_keeps_the_newest_value_per_pair_and_counts_the_replaced(
    core: GatewayCore,
) -> None:
    s_link, s = connect(core, "s")
    feed(core, s, w.RegisterSender(1, "s", ((1, "x"), (2, "y"))))
    l_link, listener = connect(core, "l")
    feed(core, listener, w.Listen(1, "s", None, POLICY_LATEST))
    l_link.take()
    l_link.link.high_water = 0  # behind as soon as one frame waits
    l_link.link.low_water = 1000  # and room for the values it holds
    for value in range(5):
        trigger(core, s, value, ref=1)
    trigger(core, s, "y0", ref=2)
    trigger(core, s, 5, ref=1)
    # The first went out; x then held and replaced 3 times, then moved behind y.
    assert l_link.link.conflated == 4
    got = events(l_link)
    assert got == [("s", "x", 0), ("s", "y", "y0"), ("s", "x", 5)]  # in trigger order, newest
    assert l_link.link.dropped == 0 and listener.events_out == 7
    assert core.counters["dropped_events"] == 0


def test_block_asks_to_pause_a_tcp_sender_and_drops_a_serial_ones(core: GatewayCore) -> None:
    asked: list[tuple[str, str]] = []
    core.delivery.blocker = lambda origin, listener: asked.append((origin.peer, listener.peer))
    t_link, tcp = connect(core, "tcp")
    u_link, uart = connect(core, "uart", persistent=True)
    feed(core, tcp, w.RegisterSender(1, "t", ((1, "v"),)))
    feed(core, uart, w.RegisterSender(1, "u", ((1, "v"),)))
    l_link, listener = connect(core, "l")
    feed(core, listener, w.Listen(1, None, None, POLICY_BLOCK))
    l_link.take()
    l_link.link.high_water = 0
    trigger(core, tcp, 1)  # under the mark: sent, nobody paused
    assert asked == []
    trigger(core, tcp, 2)  # behind: queued all the same, and the sender is to be paused
    assert asked == [("tcp", "l")]
    trigger(core, uart, 3)  # a UART cannot be paused: dropped, counted
    assert core.counters["dropped_unpausable"] == 1 and l_link.link.dropped == 1
    assert core.counters["dropped_events"] == 1
    assert [d for _, _, d in events(l_link)] == [1, 2]


def test_the_client_listens_once_per_key_and_options_and_replays_them(clock: FakeClock) -> None:
    session = ClientSession("app", keepalive=10.0, handshake_timeout=5.0, clock=clock)

    def cb(info: dict[str, Any], data: Any) -> None: ...

    def cb2(info: dict[str, Any], data: Any) -> None: ...

    session.subscribe(cb, "s", "e", POLICY_LATEST)
    session.subscribe(cb2, "s", "e", POLICY_BLOCK | LISTEN_NO_LOCAL)
    session.subscribe(cb2, "s", "e")
    for _ in range(2):  # the first connection and a reconnect send the same
        link = MemoryLink("tcp")
        session.start(link)
        link.take()
        session.receive(w.encode(w.Welcome("gw", 4096, 10000)))
        sent = [m for m in link.take() if isinstance(m, w.Listen)]
        assert sorted(m.options for m in sent) == [0, POLICY_LATEST, POLICY_BLOCK | LISTEN_NO_LOCAL]
        for m in sent:
            session.receive(w.encode(w.Listening(m.listener_id)))
        assert session.is_open
        if _ == 0:
            session.connection_lost()
    # Removing the block listener unlistens only its options.
    listener = next(x for x in session.registrations.table.subscribers("s", "e") if x.options)
    session.registrations.table.unsubscribe(listener, "s", "e")
    session.unlisten(("s", "e"))
    unlistened = [m for m in link.take() if isinstance(m, w.Unlisten)]
    assert len(unlistened) == 1
    assert len(session.registrations.listen_ids) == 2
