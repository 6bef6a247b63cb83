"""Requests across processes: handlers, every typed error, and peers that die."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from presence import plain
from procs import Gateway, Peer


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gw = Gateway(0, "--no-timer", "--request-timeout", "1.5")
    yield gw
    assert gw.stop() == 0


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for p in started:
        p.close()


@pytest.fixture
def pair(gateway: Gateway, peers: list[Peer]) -> tuple[Peer, Peer]:
    handler = Peer(gateway.port, "handler")
    caller = Peer(gateway.port, "caller")
    peers += [handler, caller]
    handler.call(
        "sender",
        name="calc",
        events=["done"],
        methods={
            "echo": "echo",
            "answer": {"return": 42},
            "boom": {"raise": "no luck"},
            "slow": {"block": 2},
        },
    )
    handler.call("sender", name="anything", events=[], methods={"*": "method"})
    return handler, caller


def test_named_and_default_handlers(pair: tuple[Peer, Peer]) -> None:
    _, caller = pair
    assert caller.call("request", sender="calc", method="echo", params={"a": [1, 2]}) == {
        "a": [1, 2]
    }
    assert caller.call("request", sender="calc", method="answer") == 42
    assert caller.call("request", sender="anything", method="whatever", params=3) == [
        "whatever",
        3,
    ]


@pytest.mark.parametrize(
    ("sender", "method", "error"),
    [
        ("nobody", "x", "NoSuchSender"),
        ("calc", "missing", "NoSuchMethod"),
        ("calc", "boom", "HandlerError"),
    ],
)
def test_typed_request_errors(
    pair: tuple[Peer, Peer], sender: str, method: str, error: str
) -> None:
    _, caller = pair
    answer = caller.fail("request", sender=sender, method=method)
    assert answer["error"] == error
    if error == "HandlerError":
        assert "no luck" in answer["message"]


def test_slow_handler_times_out_with_the_gateway_timeout(pair: tuple[Peer, Peer]) -> None:
    # The gateway runs with --request-timeout 1.5; the client would wait 10 s.
    _, caller = pair
    began = time.monotonic()
    answer = caller.fail("request", sender="calc", method="slow")
    assert answer["error"] == "RequestTimeout"
    assert 1.0 < time.monotonic() - began < 5.0


def test_client_side_timeout_is_a_request_timeout(pair: tuple[Peer, Peer]) -> None:
    _, caller = pair
    answer = caller.fail("request", sender="calc", method="slow", timeout=0.3)
    assert answer["error"] == "RequestTimeout"
    # The link is still fine afterwards.
    assert caller.call("request", sender="calc", method="answer") == 42


def test_handler_killed_mid_request_gives_sender_gone_promptly(
    gateway: Gateway, peers: list[Peer]
) -> None:
    handler = Peer(gateway.port, "doomed")
    caller = Peer(gateway.port, "caller")
    watcher = Peer(gateway.port, "watcher")
    peers += [handler, caller, watcher]
    handler.call("sender", name="doomed", events=["x"], methods={"wait": {"block": 60}})
    watcher.call("listen", tag="c", sender="doomed", event="#connect")
    watcher.call("listen", tag="d", sender="doomed", event="#disconnect")
    cid = caller.send("request", sender="doomed", method="wait", timeout=30, background=True)
    handler.wait_msg(lambda m: m.get("ev") == "handling")
    began = time.monotonic()
    handler.signal(signal.SIGKILL)
    answer = caller.reply(cid)
    assert answer["error"] == "SenderGone", answer
    assert time.monotonic() - began < 1.2  # well before both timeouts (1.5 s and 30 s)
    gone = watcher.wait_event("d", "#disconnect", "doomed")
    assert plain(gone["data"]) == {"events": ["x"], "requests": ["wait"]}


def test_sigkilled_client_fires_disconnect_and_name_is_free_again(
    gateway: Gateway, peers: list[Peer]
) -> None:
    watcher = Peer(gateway.port, "watcher")
    peers.append(watcher)
    watcher.call("listen", tag="c", sender=None, event="#connect")
    watcher.call("listen", tag="d", sender=None, event="#disconnect")
    victim = Peer(gateway.port, "victim")
    peers.append(victim)
    victim.call("sender", name="victim-s", events=["e"], methods={"m": "echo"})
    watcher.wait_event("c", "#connect", "victim-s")
    victim.signal(signal.SIGKILL)
    watcher.wait_event("d", "#disconnect", "victim-s")
    assert watcher.fail("request", sender="victim-s", method="m")["error"] == "NoSuchSender"
    again = Peer(gateway.port, "again")
    peers.append(again)
    again.call("sender", name="victim-s", events=["e"])
