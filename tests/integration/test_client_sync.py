"""The synchronous ClientRouter and the seed's API against a real gateway process."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from presence import plain
from procs import Gateway

import sig
from sig.carrier.tcpclient import CarrierTCPClient

T = 10.0


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    yield gw
    assert gw.stop() == 0


@pytest.fixture
def client(gateway: Gateway) -> Iterator[sig.ClientRouter]:
    with sig.ClientRouter(host="127.0.0.1", port=gateway.port, name="sync-test") as c:
        yield c


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_listener_callback_may_request_and_trigger(
    gateway: Gateway, client: sig.ClientRouter
) -> None:
    """A callback runs off the I/O thread, so blocking calls inside it work."""
    threads: list[str] = []
    client.add_sender("svc", ["done"], {"get": lambda params: {"got": params}})

    def on_go(info: dict[str, Any], data: Any) -> None:
        threads.append(threading.current_thread().name)
        result = client.request("svc", "get", data)  # round trip through the gateway
        client.get_sender("svc").trigger("done", result)  # type: ignore[union-attr]

    client.add_listener(on_go, "other", "go")
    results: queue.Queue[Any] = queue.Queue()
    with sig.ClientRouter(host="127.0.0.1", port=gateway.port, name="other") as other:
        other.add_listener(lambda info, data: results.put(data), "svc", "done")
        go = other.add_sender("other", ["go"])
        for i in range(3):
            go.trigger("go", i)
        assert [results.get(timeout=T) for _ in range(3)] == [{"got": i} for i in range(3)]
    assert threads and all(t == "sig-dispatch" for t in threads)


def test_request_handlers_run_off_the_io_thread_and_may_block(
    client: sig.ClientRouter,
) -> None:
    seen: list[str] = []

    def inner(params: Any) -> Any:
        seen.append(threading.current_thread().name)
        return params * 2

    def outer(params: Any) -> Any:
        seen.append(threading.current_thread().name)
        return client.request("h-inner", "double", params) + 1  # nested blocking call

    client.add_sender("h-inner", [], {"double": inner})
    client.add_sender("h-outer", [], {"calc": outer})
    assert client.request("h-outer", "calc", 20) == 41
    assert len(seen) == 2 and not any(name == "sig-io" for name in seen)
    assert all(name.startswith("sig-handler") for name in seen)


def test_handlers_run_concurrently(client: sig.ClientRouter) -> None:
    """A blocked handler does not hold up a second request."""
    release = threading.Event()

    def wait(params: Any) -> str:
        release.wait(T)
        return "released"

    client.add_sender("blocky", [], {"wait": wait, "free": lambda p: "free"})
    out: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=lambda: out.put(client.request("blocky", "wait")), daemon=True).start()
    assert client.request("blocky", "free") == "free"
    release.set()
    assert out.get(timeout=T) == "released"


def test_close_and_context_manager(gateway: Gateway) -> None:
    with sig.ClientRouter(host="127.0.0.1", port=gateway.port) as c:
        assert c.is_connected
        c.add_sender("ctx", ["e"])
        io, dispatcher = c._io, c._dispatcher
    assert not c.is_connected
    assert not io.is_alive() and not dispatcher.is_alive()
    with pytest.raises(sig.SigError):
        c.add_sender("again", ["e"])
    c.close()  # a second close is harmless
    # The gateway dropped the sender with the connection.
    with sig.ClientRouter(host="127.0.0.1", port=gateway.port) as probe:
        assert "ctx" not in probe.list_senders()


def test_close_from_a_callback_does_not_hang(gateway: Gateway) -> None:
    c = sig.ClientRouter(host="127.0.0.1", port=gateway.port)
    closed = threading.Event()

    def on_connected() -> None:
        c.close()
        closed.set()

    c.on_connected = on_connected
    c.connect()
    assert closed.wait(T)
    assert not c.is_connected


# --- the seed's API ------------------------------------------------------------


def test_seed_connect_to_a_closed_port_raises_connect_error_quickly() -> None:
    carrier = CarrierTCPClient()
    client = sig.ClientRouter(carrier)
    began = time.monotonic()
    with pytest.raises(sig.ConnectError):
        carrier.connect("127.0.0.1", closed_port(), auto_reconnect=False)
    assert time.monotonic() - began < 2.0
    assert not carrier.isConnected()
    client.close()


def test_seed_api_end_to_end(gateway: Gateway) -> None:
    events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
    connected = threading.Event()

    def record(info: dict[str, Any], data: Any) -> None:
        events.put((info["sender"], info["event"], data))

    tcp_a = CarrierTCPClient()
    a = sig.ClientRouter(tcp_a)
    tcp_a.on_connected = connected.set
    assert tcp_a.connect("127.0.0.1", gateway.port, auto_reconnect=False) is True
    assert connected.wait(T) and tcp_a.isConnected() and a.isConnected()

    tcp_b = CarrierTCPClient()
    b = sig.ClientRouter(tcp_b)
    tcp_b.connect("127.0.0.1", gateway.port, auto_reconnect=False)

    requests: dict[str | None, Any] = {
        None: lambda method, params: [method, params],
        "get_ticks": lambda p: 5,
    }
    sender = a.addRemoteSender("mysender", ["event", "#channel_event"], requests=requests)
    b.addRemoteListener(record, "mysender", "event")
    b.addRemoteListener(record, None, "#channel_event")
    b.addRemoteListener(record, None, "#disconnect")

    sender.getSignal("event").trigger({"n": 1})
    sender.getSignal("#channel_event").trigger("chan")
    assert events.get(timeout=T) == ("mysender", "event", {"n": 1})
    assert events.get(timeout=T) == ("mysender", "#channel_event", "chan")

    assert b.remoteRequest("mysender", "get_ticks", None) == 5
    assert b.remoteRequest("mysender", "other", 3) == ["other", 3]
    with pytest.raises(sig.NoSuchSender):
        b.remoteRequest("nobody", "get_ticks", None)

    assert b.removeRemoteListener(record, "mysender", "event") is True
    assert b.removeRemoteListener(record, "mysender", "event") is False
    sender.getSignal("event").trigger("not delivered")
    sender.getSignal("#channel_event").trigger("barrier")
    assert events.get(timeout=T) == ("mysender", "#channel_event", "barrier")

    assert a.removeRemoteSender("mysender") is True
    assert plain(events.get(timeout=T)) == (
        "mysender",
        "#disconnect",
        {"events": ["event", "#channel_event"], "requests": ["get_ticks"], "default": True},
    )
    with pytest.raises(sig.NoSuchSender):
        b.remoteRequest("mysender", "get_ticks", None)

    tcp_a.disconnect()
    assert not tcp_a.isConnected()
    b.disconnect()
    assert not b.isConnected()
    assert events.empty()


def test_connect_returns_after_on_connected_ran(gateway: Gateway) -> None:
    """The seed registers inside on_connected and uses the result right after connect()."""
    tcp = CarrierTCPClient()
    client = sig.ClientRouter(tcp)
    made: list[sig.Sender] = []
    tcp.on_connected = lambda: made.append(client.addRemoteSender("early", [["tick"]]))
    try:
        tcp.connect("127.0.0.1", gateway.port)
        assert len(made) == 1  # registered (a network round trip) before connect returned
        made[0].getSignal("tick").trigger(1)
        assert "early" in client.list_senders()
    finally:
        tcp.disconnect()


def test_seed_connect_may_be_retried_after_a_failure() -> None:
    port = closed_port()
    tcp = CarrierTCPClient()
    client = sig.ClientRouter(tcp)
    try:
        for _ in range(2):
            with pytest.raises(sig.ConnectError):
                tcp.connect("127.0.0.1", port, auto_reconnect=False)
        gw = Gateway(port)
        try:
            assert tcp.connect("127.0.0.1", port, auto_reconnect=False) is True
            assert tcp.isConnected()
            with pytest.raises(sig.SigError, match="already called"):
                tcp.connect("127.0.0.1", port, auto_reconnect=False)
        finally:
            tcp.disconnect()
            assert gw.stop() == 0
    finally:
        client.close()
