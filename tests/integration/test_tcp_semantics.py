"""The brief's routing rules across the network: gateway, sender and listener
each in their own process, talking over real TCP on 127.0.0.1.

Negative checks ("X is not delivered") use a barrier: after the event under
test the sender triggers ``#barrier``, which the listener also hears. Events of
one sender reach one link in order, so once the barrier is in, anything that
was going to be delivered before it has been.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from presence import plain
from procs import Gateway, Peer, wait_until

_n = itertools.count()


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    yield gw
    assert gw.stop() == 0


@pytest.fixture
def names() -> Iterator[str]:
    yield f"s{next(_n)}"


@pytest.fixture
def peers(gateway: Gateway) -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for p in started:
        p.close()


def start(peers: list[Peer], gateway: Gateway, name: str | None = None) -> Peer:
    p = Peer(gateway.port, name)
    peers.append(p)
    return p


def barrier(sender: Peer, listener: Peer, name: str) -> None:
    """Trigger ``#barrier`` of ``name`` and wait until ``listener`` has it."""
    token = next(_n)
    sender.call("trigger", sender=name, event="#barrier", data=token)
    listener.wait_event("barrier", "#barrier", name, data=token)


def delivered(listener: Peer, tag: str) -> list[tuple[str, str, Any]]:
    return [(m["sender"], m["event"], m["data"]) for m in listener.events(tag)]


def setup_pair(peers: list[Peer], gateway: Gateway, name: str) -> tuple[Peer, Peer]:
    sender = start(peers, gateway, "sender")
    listener = start(peers, gateway, "listener")
    sender.call("sender", name=name, events=["tick", "tac", "#ch", "#barrier"])
    listener.call("listen", tag="barrier", sender=None, event="#barrier")
    return sender, listener


def test_targeted_listener_gets_only_its_event(
    gateway: Gateway, peers: list[Peer], names: str
) -> None:
    sender, listener = setup_pair(peers, gateway, names)
    listener.call("listen", tag="L", sender=names, event="tick")
    sender.call("trigger", sender=names, event="tick", data=1)
    sender.call("trigger", sender=names, event="tac", data=2)
    sender.call("trigger", sender=names, event="tick", data={"x": [1.5, "y"]})
    barrier(sender, listener, names)
    assert delivered(listener, "L") == [(names, "tick", 1), (names, "tick", {"x": [1.5, "y"]})]


def test_sender_broadcast_gets_every_event_of_that_sender_only(
    gateway: Gateway, peers: list[Peer], names: str
) -> None:
    sender, listener = setup_pair(peers, gateway, names)
    other = f"{names}-other"
    sender.call("sender", name=other, events=["tick"])
    listener.call("listen", tag="L", sender=names, event=None)
    for event in ("tick", "tac", "#ch"):
        sender.call("trigger", sender=names, event=event, data=event)
    sender.call("trigger", sender=other, event="tick", data="other")
    barrier(sender, listener, names)
    got = [e for e in delivered(listener, "L") if e[1] != "#barrier"]
    assert got == [(names, "tick", "tick"), (names, "tac", "tac"), (names, "#ch", "#ch")]


def test_channel_from_any_sender_and_plain_names_never_leak(
    gateway: Gateway, peers: list[Peer], names: str
) -> None:
    sender, listener = setup_pair(peers, gateway, names)
    second = start(peers, gateway, "second")
    other = f"{names}-b"
    second.call("sender", name=other, events=["#ch", "tick"])
    listener.call("listen", tag="chan", sender=None, event="#ch")
    listener.call("listen", tag="plain", sender=None, event="tick")
    sender.call("trigger", sender=names, event="#ch", data="a")
    second.call("trigger", sender=other, event="#ch", data="b")
    sender.call("trigger", sender=names, event="tick", data="targeted")
    second.call("trigger", sender=other, event="tick", data="targeted")
    listener.wait_event("chan", "#ch", other, data="b")
    barrier(sender, listener, names)
    assert sorted(delivered(listener, "chan")) == [(names, "#ch", "a"), (other, "#ch", "b")]
    # A targeted event is NOT delivered to (None, "tick").
    assert delivered(listener, "plain") == []


def test_router_broadcast_gets_everything_including_connect(
    gateway: Gateway, peers: list[Peer], names: str
) -> None:
    listener = start(peers, gateway, "listener")
    listener.call("listen", tag="all", sender=None, event=None)
    sender = start(peers, gateway, "sender")
    sender.call("sender", name=names, events=["tick", "#barrier"], methods={"get": "echo"})
    sender.call("trigger", sender=names, event="tick", data=7)
    listener.wait_event("all", "tick", names, data=7)
    mine = [e for e in delivered(listener, "all") if e[0] == names]
    assert plain(mine) == [
        (names, "#connect", {"events": ["tick", "#barrier"], "requests": ["get"]}),
        (names, "tick", 7),
    ]


def test_removed_listener_gets_nothing_more(
    gateway: Gateway, peers: list[Peer], names: str
) -> None:
    sender, listener = setup_pair(peers, gateway, names)
    listener.call("listen", tag="L", sender=names, event="tick")
    sender.call("trigger", sender=names, event="tick", data=1)
    listener.wait_event("L", "tick", names, data=1)
    assert listener.call("unlisten", tag="L", sender=names, event="tick") is True
    sender.call("trigger", sender=names, event="tick", data=2)
    barrier(sender, listener, names)
    assert delivered(listener, "L") == [(names, "tick", 1)]
    # The gateway no longer routes it to that link at all.
    links = listener.call("request", sender="$gateway", method="links")
    mine = [x for x in links if x["peer"] == "listener" and x["listeners"] == 1]
    assert mine, links


def test_listen_before_sender_exists_and_again_after_it_comes_back(
    gateway: Gateway, peers: list[Peer], names: str
) -> None:
    listener = start(peers, gateway, "listener")
    listener.call("listen", tag="L", sender=names, event="tick")
    listener.call("listen", tag="conn", sender=names, event="#connect")
    listener.call("listen", tag="gone", sender=names, event="#disconnect")
    for round_ in range(2):
        sender = start(peers, gateway, f"sender{round_}")
        sender.call("sender", name=names, events=["tick"])
        listener.wait_event("conn", "#connect", names, timeout=10)
        sender.call("trigger", sender=names, event="tick", data=round_)
        listener.wait_event("L", "tick", names, data=round_)
        sender.call("unsender", name=names)

        def gone(n: int = round_) -> bool:
            return len(listener.events("gone")) > n

        wait_until(gone, what="#disconnect")
    assert delivered(listener, "L") == [(names, "tick", 0), (names, "tick", 1)]
    assert len(listener.events("conn")) == 2


def test_duplicate_sender_name_is_refused_with_a_clear_error(
    gateway: Gateway, peers: list[Peer], names: str
) -> None:
    first = start(peers, gateway, "first")
    second = start(peers, gateway, "second")
    first.call("sender", name=names, events=["tick"])
    answer = second.fail("sender", name=names, events=["tick"])
    assert answer["error"] == "DuplicateSenderError"
    assert names in answer["message"]
    # The first one still owns the name, and the second can use another one.
    senders = second.call("senders")
    assert senders[names]["events"] == ["tick"]
    second.call("sender", name=f"{names}-2", events=["tick"])


def test_connect_and_disconnect_carry_events_and_requests(
    gateway: Gateway, peers: list[Peer], names: str
) -> None:
    listener = start(peers, gateway, "listener")
    listener.call("listen", tag="c", sender=None, event="#connect")
    listener.call("listen", tag="d", sender=None, event="#disconnect")
    sender = start(peers, gateway, "sender")
    sender.call("sender", name=names, events=["a", "#b"], methods={"m1": "echo", "*": "method"})
    expected = {"events": ["a", "#b"], "requests": ["m1"], "default": True}
    connect = listener.wait_event("c", "#connect", names)["data"]
    assert plain(connect) == expected
    sender.call("unsender", name=names)
    disconnect = listener.wait_event("d", "#disconnect", names)["data"]
    assert plain(disconnect) == expected
    # one sender session: one incarnation; the next session of the name gets another
    assert disconnect["incarnation"] == connect["incarnation"] > 0
    mark = listener.mark()
    sender.call("sender", name=names, events=["a"], methods={})
    again = listener.wait_msg(
        lambda m: m.get("ev") == "event" and m["tag"] == "c" and m["sender"] == names, start=mark
    )["data"]
    assert again["incarnation"] not in (0, connect["incarnation"])


def test_client_closing_fires_disconnect_for_all_its_senders(
    gateway: Gateway, peers: list[Peer], names: str
) -> None:
    listener = start(peers, gateway, "listener")
    listener.call("listen", tag="d", sender=None, event="#disconnect")
    sender = start(peers, gateway, "sender")
    sender.call("sender", name=f"{names}-1", events=["x"])
    sender.call("sender", name=f"{names}-2", events=["y"])
    sender.close()
    listener.wait_event("d", "#disconnect", f"{names}-1")
    listener.wait_event("d", "#disconnect", f"{names}-2")
