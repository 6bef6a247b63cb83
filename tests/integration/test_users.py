"""Logins over real TCP on 127.0.0.1: a gateway with a users file, and each client API.

The right password opens a session as the user; a wrong one, an unknown user
and no credentials get the same refusal (sig.NotAuthorised at connect()); the
password checks run on the gateway's threads, not its event loop; a reload
changes who may log in without dropping anyone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from procs import until

import sig
from sig.carrier.tcpclient import CarrierTCPClient
from sig.core import auth
from sig.core.auth import format_users, hash_password
from sig.core.principals import ANONYMOUS, Principal
from sig.core.session import State
from sig.routers.client import AsyncClientRouter, Backoff
from sig.routers.gateway import ServerRouter
from sig.routers.sync import ClientRouter

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0.1)


def write_users(path: Path, **users: str) -> Path:
    path.write_text(format_users({u: hash_password(p) for u, p in users.items()}))
    path.chmod(0o600)
    return path


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[ServerRouter]:
    users = write_users(tmp_path / "users", alice="wonderland", bob="builder")
    gw = ServerRouter("127.0.0.1", 0, users=str(users))
    await gw.start()
    yield gw
    await gw.stop()


def principals(gw: ServerRouter) -> list[Principal]:
    return sorted(
        (s.principal for s in gw.core.sessions if s.state is State.OPEN), key=lambda p: p.name
    )


async def test_the_right_password_opens_a_session_as_the_user(gateway: ServerRouter) -> None:
    client = AsyncClientRouter(
        "127.0.0.1", gateway.port, name="app", username="alice", password="wonderland"
    )
    async with client:
        assert client.is_connected
        assert principals(gateway) == [Principal("alice", "user")]
        sender = await client.add_sender("s", ["e"], {"ping": lambda p: "pong"})
        assert await client.request("s", "ping") == "pong"
        sender.trigger("e", 1)
    assert gateway.core.stats()["auth_failures"] == 0


@pytest.mark.parametrize(
    ("user", "password"),
    [("alice", "wrong"), ("mallory", "wonderland"), (None, None)],
    ids=["wrong-password", "unknown-user", "no-credentials"],
)
@pytest.mark.parametrize("auto_reconnect", [False, True])
async def test_a_refusal_is_not_authorised_at_connect(
    gateway: ServerRouter, user: str | None, password: str | None, auto_reconnect: bool
) -> None:
    client = AsyncClientRouter(
        "127.0.0.1",
        gateway.port,
        username=user,
        password=password,
        auto_reconnect=auto_reconnect,
        backoff=FAST,
    )
    with pytest.raises(sig.NotAuthorised, match="login refused"):
        await client.connect()
    assert not client.is_connected
    assert gateway.core.stats()["auth_failures"] == 1  # one attempt: no retry loop
    await client.close()
    assert principals(gateway) == []


async def test_anonymous_clients_only_when_allowed(tmp_path: Path) -> None:
    users = write_users(tmp_path / "users", alice="wonderland")
    gw = ServerRouter("127.0.0.1", 0, users=str(users), allow_anonymous=True)
    async with gw:
        async with AsyncClientRouter("127.0.0.1", gw.port, name="anon"):
            assert principals(gw) == [ANONYMOUS]
        with pytest.raises(sig.NotAuthorised):  # a wrong password is still refused
            await AsyncClientRouter("127.0.0.1", gw.port, username="alice", password="x").connect()


async def test_password_checks_run_on_threads_not_the_loop(
    gateway: ServerRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    run = auth.Verification.run

    def spy(self: auth.Verification) -> bool:
        threads.append(threading.current_thread().name)
        return run(self)

    monkeypatch.setattr(auth.Verification, "run", spy)
    loop_thread = threading.current_thread().name
    clients = [
        AsyncClientRouter("127.0.0.1", gateway.port, username="bob", password="builder")
        for _ in range(4)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    assert len(threads) == 4 and loop_thread not in threads
    assert all(t.startswith("sig-verify") for t in threads), threads
    await asyncio.gather(*(c.close() for c in clients))


def test_the_sync_client_and_the_seeds_carrier_log_in(gateway_port_users: tuple[int, str]) -> None:
    port, _ = gateway_port_users
    with ClientRouter(host="127.0.0.1", port=port, username="alice", password="wonderland") as c:
        assert c.is_connected
    carrier = CarrierTCPClient(username="bob", password="builder")
    router = ClientRouter(carrier)
    try:
        assert carrier.connect("127.0.0.1", port, auto_reconnect=False)
    finally:
        router.close()
    bad = ClientRouter(CarrierTCPClient(username="bob", password="nope"))
    try:
        with pytest.raises(sig.NotAuthorised):
            bad.connect("127.0.0.1", port, auto_reconnect=False)
    finally:
        bad.close()


@pytest.fixture
def gateway_port_users(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A gateway on its own loop thread (for the blocking clients)."""
    users = write_users(tmp_path / "users", alice="wonderland", bob="builder")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    gw = ServerRouter("127.0.0.1", 0, users=str(users))
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(10)
    yield gw.port, str(users)
    asyncio.run_coroutine_threadsafe(gw.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


async def test_reload_changes_logins_and_keeps_connections(
    gateway: ServerRouter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alice = AsyncClientRouter("127.0.0.1", gateway.port, username="alice", password="wonderland")
    async with alice:
        write_users(tmp_path / "users", carol="singer")  # alice is gone, carol is new
        assert gateway.reload_security()
        assert alice.is_connected and principals(gateway) == [Principal("alice", "user")]
        assert (await alice.list_senders()) is not None  # the session still works
        carol = AsyncClientRouter("127.0.0.1", gateway.port, username="carol", password="singer")
        async with carol:
            assert Principal("carol", "user") in principals(gateway)
        again = AsyncClientRouter(
            "127.0.0.1", gateway.port, username="alice", password="wonderland"
        )
        with pytest.raises(sig.NotAuthorised):
            await again.connect()
        await again.close()
        # a bad file keeps the users loaded before, and says why
        (tmp_path / "users").write_text("carol:plaintext\n")
        with caplog.at_level(logging.ERROR, "sig.routers.auth"):
            assert not gateway.reload_security()
        assert "keeping the 1 users" in caplog.text
        carol = AsyncClientRouter("127.0.0.1", gateway.port, username="carol", password="singer")
        async with carol:
            assert carol.is_connected
        assert alice.is_connected


async def test_refused_at_a_reconnect_is_logged_once_and_retried_with_backoff(
    gateway: ServerRouter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = AsyncClientRouter(
        "127.0.0.1", gateway.port, username="alice", password="wonderland", backoff=FAST
    )
    lost: list[int] = []
    client.on_disconnected = lambda: lost.append(1)
    caplog.set_level(logging.WARNING, "sig.routers.connection")
    async with client:
        write_users(tmp_path / "users", bob="builder")
        assert gateway.reload_security()
        for link in list(gateway._links):
            link.abort()  # the gateway drops the connection: the client comes back, refused
        await until(lambda: gateway.core.stats()["auth_failures"] >= 3, 20, "three refusals")
        assert lost == [1] and not client.is_connected
        refused = [r for r in caplog.records if "refused our login" in r.getMessage()]
        assert len(refused) == 1, refused
        # the gateway slowed it (0.5 s, then 1 s...): the retries are no tight loop
        assert gateway.core.auth.slowdown.until("127.0.0.1") > 0
        write_users(tmp_path / "users", alice="wonderland")
        assert gateway.reload_security()
        await client.wait_connected(40)
        assert principals(gateway) == [Principal("alice", "user")]


async def test_a_bad_users_file_is_refused_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "users"
    bad.write_text("alice:wonderland\n")
    with pytest.raises(sig.errors.UsersFileError, match="line 1"):
        ServerRouter("127.0.0.1", 0, users=str(bad))
    with pytest.raises(sig.errors.UsersFileError, match="cannot read"):
        ServerRouter("127.0.0.1", 0, users=str(tmp_path / "missing"))


async def test_a_users_file_readable_by_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = write_users(tmp_path / "users", alice="wonderland")
    users.chmod(0o644)
    with caplog.at_level(logging.WARNING, "sig.routers.auth"):
        ServerRouter("127.0.0.1", 0, users=str(users))
    assert "accessible by group or others (mode 644)" in caplog.text
