"""The event loop choice (issue 13, the fast extra) and the sync client's request path.

``sig serve --loop uvloop`` / ``[gateway] loop`` and ``ClientRouter(loop=...)``
run on uvloop, against real processes on loopback; the synchronous
ClientRouter's requests (sent from the I/O thread in one callback, settled
as the RESPONSE is read) give the same answers and errors as before.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import Gateway

import sig
from sig.errors import (
    ConnectionLost,
    HandlerError,
    NoSuchMethod,
    NoSuchSender,
    NotConnectedError,
    RequestTimeout,
    SigError,
)
from sig.routers import loops


@pytest.fixture(scope="module")
def uv_gateway() -> Iterator[Gateway]:
    gw = Gateway(0, "--no-timer", "--loop", "uvloop")
    yield gw
    assert gw.stop() == 0


def test_sig_serve_runs_on_uvloop_and_serves_both_kinds_of_client(uv_gateway: Gateway) -> None:
    uv_gateway.wait_log("event loop: uvloop")
    got: list[Any] = []
    arrived = threading.Event()

    def hit(info: dict[str, Any], data: Any) -> None:
        got.append((info["sender"], data))
        arrived.set()

    with (
        sig.ClientRouter(port=uv_gateway.port, loop="uvloop", name="uv") as uv,
        sig.ClientRouter(port=uv_gateway.port, name="plain") as plain,
    ):
        assert type(uv._loop).__module__.startswith("uvloop")
        assert not type(plain._loop).__module__.startswith("uvloop")
        uv.add_sender("uvsvc", ["ev"], {"twice": lambda x: 2 * x})
        plain.add_listener(hit, "uvsvc", "ev")
        assert plain.request("uvsvc", "twice", 21) == 42
        uv.get_sender("uvsvc").get_signal("ev").trigger(7)  # type: ignore[union-attr]
        assert arrived.wait(10)
    assert got == [("uvsvc", 7)]


def test_the_default_loop_is_asyncio_and_auto_takes_uvloop_when_installed() -> None:
    assert loops.resolve() == "asyncio"
    assert loops.resolve("auto") == "uvloop"  # the test setup installs the bench extra
    with pytest.raises(SigError, match="loop must be one of auto, asyncio, uvloop"):
        loops.resolve("trio")
    loop = loops.new_event_loop("uvloop")
    try:
        assert loop.run_until_complete(_answer()) == 42
    finally:
        loop.close()
    assert loops.run(_answer(), "uvloop") == loops.run(_answer()) == 42


async def _answer() -> int:
    return 42


def test_an_unknown_loop_in_the_config_is_a_usage_error(tmp_path: Path) -> None:
    conf = tmp_path / "sig.toml"
    conf.write_text('[gateway]\nloop = "fastest"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "sig", "serve", "--config", str(conf), "--no-timer"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "[gateway] loop must be one of auto, asyncio, uvloop, not 'fastest'" in proc.stderr


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    yield gw
    assert gw.stop() == 0


def test_sync_requests_answer_and_fail_as_the_asyncio_client_does(gateway: Gateway) -> None:
    release = threading.Event()

    def slow(_: Any) -> str:
        release.wait(10)
        return "late"

    def broken(_: Any) -> None:
        raise ValueError("no")

    with (
        sig.ClientRouter(port=gateway.port, name="svc-side") as handler,
        sig.ClientRouter(port=gateway.port, name="caller") as caller,
    ):
        handler.add_sender("svc2", [], {"echo": lambda x: x, "slow": slow, "broken": broken})
        assert caller.request("svc2", "echo", {"a": [1, 2]}) == {"a": [1, 2]}
        with pytest.raises(NoSuchSender):
            caller.request("nobody", "echo")
        with pytest.raises(NoSuchMethod):
            caller.request("svc2", "nothing")
        with pytest.raises(HandlerError, match="no"):
            caller.request("svc2", "broken")
        with pytest.raises(RequestTimeout):
            caller.request("svc2", "slow", timeout=0.2)
        release.set()
        assert caller.request("svc2", "echo", 1) == 1  # the late answer went nowhere
        with pytest.raises(SigError, match="I/O thread"):
            _from_io_thread(caller)


def _from_io_thread(client: sig.ClientRouter) -> None:
    """Call ``client.request`` on its own I/O thread; re-raise what it raised there."""
    raised: list[BaseException] = []
    done = threading.Event()

    def call() -> None:
        try:
            client.request("svc2", "echo", 1)
        except BaseException as exc:
            raised.append(exc)
        done.set()

    client._loop.call_soon_threadsafe(call)
    assert done.wait(10)
    raise raised[0]


def test_a_sync_request_pending_when_the_link_goes_fails_with_connection_lost(
    gateway: Gateway,
) -> None:
    started = threading.Event()
    release = threading.Event()

    def hang(_: Any) -> None:
        started.set()
        release.wait(10)

    handler = sig.ClientRouter(port=gateway.port, name="hanger", auto_reconnect=False)
    handler.connect()
    caller = sig.ClientRouter(port=gateway.port, name="waiter", auto_reconnect=False)
    caller.connect()
    try:
        handler.add_sender("svc3", [], {"hang": hang})
        errors: list[BaseException] = []

        def call() -> None:
            try:
                caller.request("svc3", "hang", timeout=30)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=call)
        t.start()
        assert started.wait(10)
        link = caller._client._link
        assert link is not None
        caller._loop.call_soon_threadsafe(link.abort)  # the caller's connection drops
        t.join(10)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], ConnectionLost)
        with pytest.raises(NotConnectedError):
            caller.request("svc3", "hang")
    finally:
        release.set()
        caller.close()
        handler.close()
