"""ACLs and owned names end to end: real TCP on 127.0.0.1, socat ptys, real processes.

TCP clients get rights as anonymous (``[acl.anonymous]``) or as users who
log in (a users file, HELLO credentials); serial devices as their port's
principal (``[[serial]] principal``). tests/unit/test_acl.py pins the same
checks in the core on the fake clock.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from procs import EXAMPLES, Gateway, Proc, until, wait_until
from socat import SocatPairs

from sig.core.acl import Policy
from sig.errors import NotAuthorised
from sig.routers.client import AsyncClientRouter, Backoff
from sig.routers.gateway import ServerRouter
from sig.routers.serial import open_serial_links
from sig.tools.device_sim import DeviceSim

T = 10.0
FAST = Backoff(initial=0.05, maximum=0.3, jitter=0.1)


async def client(router: ServerRouter, name: str) -> AsyncClientRouter:
    c = AsyncClientRouter("127.0.0.1", router.port, name=name, backoff=FAST)
    await c.connect()
    return c


async def test_registering_listening_and_requesting_outside_the_acl_are_refused(
    gateway: ServerRouter,
) -> None:
    gateway.core.access.install(
        Policy.from_table(
            {
                "anonymous": {
                    "own": ["sensor-*"],
                    "listen": [["sensor-*", "*"]],
                    "request": [["sensor-*", "get_*"]],
                }
            }
        )
    )
    gateway.add_sender("pump", ["speed"], {"set_speed": lambda p: ["applied", p]})
    app = await client(gateway, "app")
    try:
        with pytest.raises(NotAuthorised, match="anonymous may not own sender name 'pump'"):
            await app.add_sender("pump", ["speed"])
        with pytest.raises(NotAuthorised, match=r"may not listen to \('pump', 'speed'\)"):
            await app.add_listener(lambda i, d: None, "pump", "speed")
        with pytest.raises(NotAuthorised, match="anonymous may not request 'pump' 'set_speed'"):
            await app.request("pump", "set_speed", 9999, timeout=5)
        with pytest.raises(NotAuthorised, match=r"may not call \$gateway links"):
            await app.request("$gateway", "links", timeout=5)
        stats = await app.request("$gateway", "stats", timeout=5)  # the anonymous entry: stats
        assert stats["acl_refusals"] == 4
        assert [stats[f"acl_refusals_{k}"] for k in ("own", "listen", "request", "admin")] == [
            1,
            1,
            1,
            1,
        ]
        await app.add_sender("sensor-1", ["temp"], {"get_temp": lambda p: 21.5})
        assert await app.request("sensor-1", "get_temp", timeout=5) == 21.5
        assert "pump" in gateway.core.table.senders  # the in-process sender was never touched
    finally:
        await app.close()


async def test_a_broadcast_listener_is_not_a_spy(gateway: ServerRouter) -> None:
    gateway.core.access.install(
        Policy.from_table({"anonymous": {"own": ["*"], "listen": ["pub-*"]}})
    )
    spy = await client(gateway, "spy")
    got: list[tuple[str, str, Any]] = []
    await spy.add_listener(lambda i, d: got.append((i["sender"], i["event"], d)))
    pub = await client(gateway, "pub")
    priv = await client(gateway, "priv")
    try:
        a = await pub.add_sender("pub-a", ["temp"])
        b = await priv.add_sender("priv-b", ["secret"])
        for n in range(3):
            b.trigger("secret", n)
            a.trigger("temp", n)
        await until(lambda: len([g for g in got if g[1] == "temp"]) == 3, T, "pub-a's events")
        await priv.close()
        await pub.close()
        await until(lambda: ("pub-a", "#disconnect") in [g[:2] for g in got], T, "#disconnect")
        assert {g[0] for g in got} == {"pub-a"}  # nothing of priv-b, not even #connect
        assert [g[1] for g in got] == ["#connect", "temp", "temp", "temp", "#disconnect"]
    finally:
        await spy.close()


async def test_a_serial_port_carries_only_its_bound_names(socat: SocatPairs) -> None:
    pair = socat.pair("dev")
    router = ServerRouter("127.0.0.1", 0)
    await router.start()
    devices: list[DeviceSim] = []
    try:
        await open_serial_links(
            router, [{"port": str(pair.a), "principal": "pumps", "names": ["pump", "pump-*"]}]
        )
        intruder = DeviceSim(str(pair.b), name="valve", sender="valve")
        devices.append(intruder)
        await intruder.start()
        error = await intruder.wait_for("ERROR", T)
        assert error["code"] == "NOT_AUTHORISED"
        assert error["message"].startswith("sender name 'valve' is not one serial:")
        assert error["message"].endswith(f"{pair.a} may carry (pump, pump-*)")
        assert "valve" not in router.core.table.senders
        await intruder.stop()
        pump = DeviceSim(str(pair.b), name="pump-2", sender="pump-2")
        devices.append(pump)
        await pump.start()
        await pump.wait_for("REGISTERED", T)
        assert router.core.access.claims.owner("pump-2") == "device:pumps"
        row = next(r for r in router.links() if r["link"] == f"serial:{pair.a}")
        assert row["senders"] == ["pump-2"]
    finally:
        for d in devices:
            await d.stop()
        await router.stop()


# --- real processes: kill -9, a gateway restart, SIGHUP, the example -----------


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text("[discovery]\nenabled = false\n" + body)
    return path


def _device(port: Path, name: str) -> Proc:
    return Proc(
        [sys.executable, "-m", "sig", "device-sim", "--port", str(port), "--name", name,
         "--interval", "0", "--keepalive-ms", "500"],
    )  # fmt: skip


async def test_an_owned_name_stays_its_owners_after_a_kill_9_and_a_gateway_restart(
    socat: SocatPairs, tmp_path: Path
) -> None:
    own, other = socat.pair("own"), socat.pair("other")
    config = _config(
        tmp_path,
        f"""
[gateway]
serial_name_grace = 0      # no reservation: the claim alone protects the name
[auth]
state = "claims.json"
[acl.anonymous]
own = ["*"]
request = ["pump"]
[acl.devices.pumps]
own = ["*"]
[acl.devices.intruders]
own = ["*"]
[[serial]]
port = "{own.a}"
principal = "pumps"
[[serial]]
port = "{other.a}"
principal = "intruders"
""",
    )
    procs: list[Proc] = []

    def start(proc: Proc) -> Proc:
        procs.append(proc)
        return proc

    try:
        gw = start(await asyncio.to_thread(Gateway, 0, "--no-timer", "--config", str(config)))
        owner = start(_device(own.b, "pump"))
        await asyncio.to_thread(owner.wait_line, lambda s: s.startswith("pump REGISTERED"))
        owner.popen.send_signal(signal.SIGKILL)  # kill -9 of the owner
        owner.wait()
        await asyncio.to_thread(
            wait_until, lambda: "session of 'pump' ended" in gw.stderr_text(), T, "the link timeout"
        )
        thief = start(_device(other.b, "pump"))
        line = await asyncio.to_thread(thief.wait_line, lambda s: " ERROR " in s)
        assert 'code="NOT_AUTHORISED"' in line and "owned by another principal" in line
        async with AsyncClientRouter("127.0.0.1", gw.port, name="tcp", backoff=FAST) as app:
            with pytest.raises(NotAuthorised, match="'pump' is owned by another principal"):
                await app.add_sender("pump", ["speed"])
        assert json.loads((tmp_path / "claims.json").read_text())["claims"] == {
            "pump": "device:pumps"
        }
        gw.popen.send_signal(signal.SIGKILL)  # and the gateway too: the claim is on disk
        gw.wait()
        mark = len(thief.lines)  # the new gateway INVITEs the thief: refused again
        gw = start(await asyncio.to_thread(Gateway, 0, "--no-timer", "--config", str(config)))
        async with AsyncClientRouter("127.0.0.1", gw.port, name="tcp", backoff=FAST) as app:
            with pytest.raises(NotAuthorised, match="'pump' is owned by another principal"):
                await app.add_sender("pump", ["speed"])
            line = await asyncio.to_thread(thief.wait_line, lambda s: " ERROR " in s, T, mark)
            assert "owned by another principal" in line
            back = start(_device(own.b, "pump"))  # the owner, on its own port: its name
            await asyncio.to_thread(back.wait_line, lambda s: s.startswith("pump REGISTERED"))
            assert not [s for s in back.lines if " ERROR " in s]
            assert await app.request("pump", "get_temp", timeout=5) == 21.5
    finally:
        for p in reversed(procs):
            p.kill()


async def test_sighup_reloads_the_acls_without_dropping_connections(tmp_path: Path) -> None:
    config = _config(tmp_path, '[acl.anonymous]\nown = ["*"]\n')
    gw = await asyncio.to_thread(Gateway, 0, "--no-timer", "--config", str(config))
    try:
        async with AsyncClientRouter("127.0.0.1", gw.port, name="app", backoff=FAST) as app:
            sender = await app.add_sender("s", ["e"])
            with pytest.raises(NotAuthorised, match="may not listen"):
                await app.add_listener(lambda i, d: None, "s", "e")
            config.write_text(config.read_text() + 'listen = ["s"]\n')
            mark = len(gw.err_lines)
            gw.signal(signal.SIGHUP)
            await asyncio.to_thread(
                wait_until,
                lambda: any("ACLs reloaded" in s for s in gw.err_lines[mark:]),
                T,
                "the reload",
            )
            got: asyncio.Queue[Any] = asyncio.Queue()
            await app.add_listener(lambda i, d: got.put_nowait(d), "s", "e")  # allowed now
            sender.trigger("e", 7)  # the connection and its sender stayed
            assert await asyncio.wait_for(got.get(), T) == 7
            config.write_text("[acl\n")  # a broken config keeps the ACLs in force
            mark = len(gw.err_lines)
            gw.signal(signal.SIGHUP)
            await asyncio.to_thread(
                wait_until,
                lambda: any("keeping the ACLs in force" in s for s in gw.err_lines[mark:]),
                T,
                "the refused reload",
            )
            with pytest.raises(NotAuthorised):
                await app.request("$gateway", "links", timeout=5)
    finally:
        gw.stop()


async def test_the_home_example_starts_and_denies_anonymous_everything() -> None:
    gw = await asyncio.to_thread(
        Gateway, 0, "--no-timer", "--no-discovery", "--config", str(EXAMPLES / "acl-home.toml")
    )
    try:
        row = await asyncio.to_thread(gw.wait_line, lambda s: s.startswith("  acl "))
        assert row.split(None, 1)[1] == "5 user(s), 2 device(s), anonymous denied"
        async with AsyncClientRouter("127.0.0.1", gw.port, name="anon", backoff=FAST) as app:
            with pytest.raises(NotAuthorised):
                await app.request("$gateway", "stats", timeout=5)
            with pytest.raises(NotAuthorised):
                await app.add_listener(lambda i, d: None)
            with pytest.raises(NotAuthorised):
                await app.add_sender("sensor-kitchen", ["temp"])
            with pytest.raises(NotAuthorised):
                await app.request("pump", "set_speed", 9999, timeout=5)
    finally:
        gw.stop()
    assert not (EXAMPLES / "sig-state.json").exists()  # nothing claimed: nothing written


# --- with logins (HELLO credentials) ---------------------------------------------

OWNER = """
import asyncio, sys
from sig.routers.client import AsyncClientRouter

async def main() -> None:
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    async with AsyncClientRouter(
        "127.0.0.1", port, name="owner", username=user, password=password
    ) as c:
        await c.add_sender("boiler", ["temp"], {"get": lambda p: 42})
        print("REGISTERED", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _users(path: Path, **users: str) -> Path:
    from sig.core.auth import format_users, hash_password

    path.write_text(format_users({u: hash_password(p) for u, p in users.items()}))
    path.chmod(0o600)
    return path


async def test_a_users_name_is_not_taken_after_a_kill_9_and_a_restart(tmp_path: Path) -> None:
    users = _users(tmp_path / "users", alice="wonderland", bob="builder", root="toor")
    config = _config(
        tmp_path,
        f"""
[auth]
users = "{users}"
[acl.users.alice]
own = ["boiler"]
[acl.users.bob]
own = ["*"]
request = ["boiler"]
[acl.users.root]
admin = true
""",
    )
    procs: list[Proc] = []
    try:
        gw = await asyncio.to_thread(Gateway, 0, "--no-timer", "--config", str(config))
        procs.append(gw)
        owner = Proc([sys.executable, "-c", OWNER, str(gw.port), "alice", "wonderland"])
        procs.append(owner)
        await asyncio.to_thread(owner.wait_line, lambda s: s == "REGISTERED")
        owner.popen.send_signal(signal.SIGKILL)
        owner.wait()
        await asyncio.to_thread(
            wait_until, lambda: "session of 'owner' ended" in gw.stderr_text(), T, "the owner's end"
        )
        bob = AsyncClientRouter(
            "127.0.0.1", gw.port, name="bob", username="bob", password="builder", backoff=FAST
        )
        async with bob:
            with pytest.raises(NotAuthorised, match="'boiler' is owned by another principal"):
                await bob.add_sender("boiler", ["temp"])
        gw.popen.send_signal(signal.SIGKILL)
        gw.wait()
        gw = await asyncio.to_thread(Gateway, 0, "--no-timer", "--config", str(config))
        procs.append(gw)
        assert json.loads((tmp_path / "sig-state.json").read_text())["claims"] == {
            "boiler": "user:alice"
        }
        async with AsyncClientRouter(
            "127.0.0.1", gw.port, name="bob", username="bob", password="builder", backoff=FAST
        ) as bob:
            with pytest.raises(NotAuthorised, match="'boiler' is owned by another principal"):
                await bob.add_sender("boiler", ["temp"])
            back = Proc([sys.executable, "-c", OWNER, str(gw.port), "alice", "wonderland"])
            procs.append(back)
            await asyncio.to_thread(back.wait_line, lambda s: s == "REGISTERED")
            assert await bob.request("boiler", "get", timeout=5) == 42
    finally:
        for p in reversed(procs):
            p.kill()


def test_a_broken_state_file_stops_the_gateway_rather_than_free_the_names(
    tmp_path: Path,
) -> None:
    (tmp_path / "claims.json").write_text('{"version": 1, "claims": ')
    config = _config(tmp_path, '[auth]\nstate = "claims.json"\n')
    gw = Proc([sys.executable, "-m", "sig", "serve", "--host", "127.0.0.1", "--port", "0",
               "--no-timer", "--config", str(config)])  # fmt: skip
    try:
        assert gw.wait() == 2
        assert f"state file {tmp_path / 'claims.json'} is not valid JSON" in gw.stderr_text()
        assert not any("listening on" in s for s in gw.lines)
    finally:
        gw.kill()
