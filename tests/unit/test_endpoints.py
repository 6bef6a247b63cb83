"""The one endpoint layer: LocalRouter and the gateway keep in-process senders alike.

Every test here runs twice through the same fixture, once on a LocalRouter
and once on a ServerRouter (not started: its in-process API is the sans-I/O
core's, no socket needed), so the two cannot drift apart again.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import MemoryLink
from presence import plain

import sig
from sig.core.endpoints import Endpoints, Sender
from sig.errors import (
    DuplicateSenderError,
    ErrorCode,
    NoSuchSender,
    RequestError,
    UnknownEventError,
)
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack
from sig.routers.gateway import ServerRouter


@dataclass
class Host:
    """A router under test, with what differs between the two kinds."""

    router: Any
    listener_errors: Callable[[], int]
    #: call(sender, method, params) -> (status, message, value), synchronously.
    call: Callable[[str, str, Any], tuple[int, str, Any]]


def _local() -> Host:
    router = sig.LocalRouter()

    def call(sender: str, method: str, params: Any) -> tuple[int, str, Any]:
        try:
            return 0, "", router.request(sender, method, params)
        except RequestError as exc:
            return exc.code, str(exc), None

    return Host(router, lambda: router.listener_errors, call)


def _gateway() -> Host:
    router = ServerRouter("127.0.0.1", 0)
    core = router.core

    def call(sender: str, method: str, params: Any) -> tuple[int, str, Any]:
        got: list[tuple[int, str, bytes]] = []
        core.start_request(sender, method, pack(params), lambda *a: got.append(a))
        [(status, message, data)] = got  # an in-process handler answers at once
        return status, message, unpack(data) if not status else None

    return Host(router, lambda: core.counters["listener_errors"], call)


@pytest.fixture(params=[_local, _gateway], ids=["local", "gateway"])
def host(request: pytest.FixtureRequest) -> Host:
    made: Host = request.param()
    return made


def test_senders_are_added_found_listed_and_removed(host: Host) -> None:
    r = host.router
    s = r.add_sender("S", ["e", "e", "#ch"], {"get": lambda p: p})
    assert isinstance(r.endpoints, Endpoints) and isinstance(s, sig.Sender)
    assert r.get_sender("S") is s and s.events == ("e", "#ch")
    assert r.list_senders() == {"S": {"events": ["e", "#ch"], "requests": ["get"]}}
    with pytest.raises(DuplicateSenderError):
        r.add_sender("S", ["x"])
    assert r.remove_sender(s) and not r.remove_sender("S")
    assert r.get_sender("S") is None and r.list_senders() == {}


def test_listeners_get_matching_events_and_announcements(host: Host) -> None:
    r = host.router
    got: list[tuple[str, str, Any]] = []

    def record(info: dict[str, Any], data: Any) -> None:
        got.append((info["sender"], info["event"], data))

    r.add_listener(record, "S", None)
    other = r.add_listener(record, None, "#ch")
    s = r.add_sender("S", ["e", "#ch"])
    s.get_signal("e").trigger({"n": 1})
    s.trigger("#ch", [1, 2])
    assert plain(got) == [
        ("S", "#connect", {"events": ["e", "#ch"], "requests": []}),
        ("S", "e", {"n": 1}),
        ("S", "#ch", [1, 2]),
        ("S", "#ch", [1, 2]),  # once per registration: (S, *) and (*, #ch)
    ]
    assert r.remove_listener(other)  # by handle
    assert r.remove_listener(record, "S", None)  # by (callback, sender, event)
    assert not r.remove_listener(record, "S", None)
    got.clear()
    s.trigger("e", 3)
    assert got == []


def test_a_listener_that_raises_is_counted_and_the_others_still_run(host: Host) -> None:
    r = host.router
    got: list[Any] = []

    def broken(info: dict[str, Any], data: Any) -> None:
        raise ValueError("listener bug")

    r.add_listener(broken, "S", "e")
    r.add_listener(lambda info, data: got.append(data), "S", "e")
    r.add_sender("S", ["e"]).trigger("e", 7)
    assert got == [7] and host.listener_errors() == 1


def test_a_removed_sender_can_no_longer_trigger(host: Host) -> None:
    r = host.router
    s = r.add_sender("S", ["e"])
    r.remove_sender("S")
    with pytest.raises(NoSuchSender, match="was removed"):
        s.trigger("e", 1)
    again = r.add_sender("S", ["e"])  # a new sender of the same name is not the old one
    with pytest.raises(NoSuchSender):
        s.trigger("e", 1)
    again.trigger("e", 1)
    with pytest.raises(UnknownEventError):
        again.trigger("undeclared", 1)


def test_handler_outcomes_map_to_the_same_errors(host: Host) -> None:
    def boom(params: Any) -> Any:
        raise KeyError("sensor offline")

    def refuse(params: Any) -> Any:
        raise sig.NoSuchMethod("not today")

    host.router.add_sender(
        "S", [], {"echo": lambda p: p, "boom": boom, "refuse": refuse, None: lambda m, p: m}
    )
    assert host.call("S", "echo", {"a": 1}) == (0, "", {"a": 1})
    assert host.call("S", "anything", None) == (0, "", "anything")  # the default handler
    status, message, _ = host.call("S", "boom", None)
    assert status == ErrorCode.HANDLER_ERROR
    assert message == "S.boom raised KeyError: 'sensor offline'"
    assert host.call("S", "refuse", None)[:2] == (ErrorCode.NO_SUCH_METHOD, "not today")
    assert host.call("nobody", "echo", None)[0] == ErrorCode.NO_SUCH_SENDER


def test_senders_keep_the_seed_names(host: Host) -> None:
    s = host.router.addSender("S", [["tick", "tac"]])
    assert s.getName() == "S" and s.getEvents() == ["tick", "tac"]
    assert s.getSignal("tick") is s.get_signal("tick")
    assert host.router.getSender("S") is s


def test_the_gateway_never_removes_a_remote_sender_as_an_in_process_one() -> None:
    router = ServerRouter("127.0.0.1", 0)
    core = router.core
    link = MemoryLink("tcp:peer")
    session = core.attach(link)
    core.receive(session, w.encode(w.Hello("peer", 1024, 0)))
    core.receive(session, w.encode(w.RegisterSender(1, "remote", ((1, "e"),))))
    assert "remote" in router.list_senders()
    assert router.get_sender("remote") is None
    assert not router.remove_sender("remote")
    assert "remote" in core.table.senders and router.endpoints.senders() == []


def test_the_core_is_free_of_compat() -> None:
    """No module under sig/core imports sig.compat, and its Sender has no camelCase."""
    core_dir = Path(sig.__file__).parent / "core"
    for path in sorted(core_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith("sig.compat") for n in names), path.name
    assert not hasattr(Sender, "getSignal") and hasattr(sig.Sender, "getSignal")
