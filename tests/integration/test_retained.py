"""Retained last values end to end: real TCP on 127.0.0.1, socat ptys, real processes.

A sender marks events as retained; a listener that comes later gets the last
value at once, marked retained in ``info`` (stale once the sender's link is
gone); UNREGISTER_SENDER clears it; the values survive a restart of
``sig serve --retain-db``. tests/unit/test_retained_core.py pins the same rules
in the core on the fake clock.

"Nothing came" is shown without waiting for a time: the gateway sends the
RETAINED values right after LISTENING, so once a later event on the same
link arrived, any retained value would have been there before it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from procs import Gateway, Proc, run_sig, until
from serial_rig import DEADLINE, SerialRig
from socat import SocatPairs

from sig import ClientRouter
from sig.core.acl import Policy
from sig.core.gateway import Limits
from sig.core.retained import RetainedStore
from sig.errors import ErrorCode
from sig.protocol import messages as w
from sig.protocol.data import pack
from sig.routers.client import AsyncClientRouter, Backoff
from sig.routers.gateway import ServerRouter
from sig.routers.retained_db import RetainedDb

FAST = Backoff(initial=0.05, maximum=0.3, jitter=0.1)
Got = list[tuple[dict[str, Any], Any]]


async def client(router: ServerRouter, name: str) -> AsyncClientRouter:
    c = AsyncClientRouter("127.0.0.1", router.port, name=name, backoff=FAST)
    await c.connect()
    return c


async def marker(router: ServerRouter, got: Got, app: AsyncClientRouter) -> None:
    """Send a marker event to ``app``'s listener of everything and wait for it."""
    await app.add_listener(lambda i, d: got.append((i, d)), "marker", "done")
    router.get_sender("marker") or router.add_sender("marker", ["done"])
    router.get_sender("marker").trigger("done")  # type: ignore[union-attr]
    await until(lambda: any(i["sender"] == "marker" for i, _ in got), what="the marker")


async def test_a_later_listener_gets_the_last_value_at_once(gateway: ServerRouter) -> None:
    sensor = await client(gateway, "sensor")
    s = await sensor.add_sender("kitchen", ["temp", "hum"], retained=["temp"])
    s.trigger("temp", 21.0)
    s.trigger("temp", 21.5)
    s.trigger("hum", 40)  # not retained
    await until(lambda: gateway.core.stats()["triggers"] >= 3, what="three triggers")
    dash = await client(gateway, "dash")
    got: Got = []
    await dash.add_listener(lambda i, d: got.append((i, d)), "kitchen")
    await until(lambda: got, what="the retained value")
    assert got == [({"sender": "kitchen", "event": "temp", "retained": True, "stale": False}, 21.5)]
    s.trigger("temp", 22.0)  # then the events, as ever
    await until(lambda: len(got) == 2, what="the next event")
    assert got[1] == ({"sender": "kitchen", "event": "temp"}, 22.0)
    assert dash.stats["retained_in"] == 1
    stats = await dash.request("$gateway", "stats", timeout=5)
    assert stats["retained_values"] == 1 and stats["retained_sent"] == 1
    await sensor.close()
    await dash.close()


async def test_each_listener_of_a_client_gets_the_value_once(gateway: ServerRouter) -> None:
    sensor = await client(gateway, "sensor")
    s = await sensor.add_sender("kitchen", ["temp"], retained=True)
    s.trigger("temp", 1)
    await until(lambda: gateway.core.stats()["retained_values"] == 1, what="the value kept")
    dash = await client(gateway, "dash")
    by_event: Got = []
    by_sender: Got = []
    await dash.add_listener(lambda i, d: by_event.append((i, d)), "kitchen", "temp")
    await dash.add_listener(lambda i, d: by_sender.append((i, d)), "kitchen")
    async with dash.events(None, None) as stream:
        item = await asyncio.wait_for(stream.__anext__(), 10)
        assert (item.sender, item.event, item.data, item.retained, item.stale) == (
            "kitchen",
            "temp",
            1,
            True,
            False,
        )
        assert item.info["retained"] is True
    marks: Got = []
    await marker(gateway, marks, dash)
    assert [d for _, d in by_event] == [1] and [d for _, d in by_sender] == [1]
    await sensor.close()
    await dash.close()


async def test_a_second_listener_of_the_same_key_gets_the_value_too(
    gateway: ServerRouter,
) -> None:
    pump = gateway.add_sender("pump", ["speed"], retained=True)
    pump.trigger("speed", 7)
    dash = await client(gateway, "dash")
    first: Got = []
    second: Got = []
    await dash.add_listener(lambda i, d: first.append((i, d)), "pump", "speed")
    await dash.add_listener(lambda i, d: second.append((i, d)), "pump", "speed")
    await until(lambda: first and second, what="the value for both listeners")
    async with dash.events("pump", "speed") as stream:  # a third, as an iterator
        item = await asyncio.wait_for(stream.__anext__(), 10)
        assert (item.data, item.retained) == (7, True)
        # the second LISTENs are gone again: the gateway holds the key once for the link
        await until(lambda: gateway.core.table.subscription_count() == 1, what="one LISTEN")
        pump.trigger("speed", 8)
        item = await asyncio.wait_for(stream.__anext__(), 10)
        assert (item.data, item.retained) == (8, False)
    await until(lambda: len(first) == 2 and len(second) == 2, what="the event, once each")
    retained = {"sender": "pump", "event": "speed", "retained": True, "stale": False}
    assert first == second == [(retained, 7), ({"sender": "pump", "event": "speed"}, 8)]
    await dash.close()


async def test_stale_after_the_link_closes_and_cleared_by_unregister(
    gateway: ServerRouter,
) -> None:
    sensor = await client(gateway, "sensor")
    s = await sensor.add_sender("kitchen", ["temp"], retained=True)
    s.trigger("temp", 19.5)
    await until(lambda: gateway.core.stats()["retained_values"] == 1, what="the value kept")
    await sensor.close()  # no UNREGISTER: the link just goes
    await until(lambda: gateway.core.table.sender("kitchen") is None, what="#disconnect")
    dash = await client(gateway, "dash")
    got: Got = []
    await dash.add_listener(lambda i, d: got.append((i, d)), "kitchen", "temp")
    await until(lambda: got, what="the stale value")
    assert got == [({"sender": "kitchen", "event": "temp", "retained": True, "stale": True}, 19.5)]
    # the same program comes back: fresh again; then it unregisters on purpose
    sensor = await client(gateway, "sensor")
    await sensor.add_sender("kitchen", ["temp"], retained=True)
    await sensor.remove_sender("kitchen")
    await until(lambda: gateway.core.stats()["retained_values"] == 0, what="the value cleared")
    later = await client(gateway, "later")
    seen: Got = []
    await later.add_listener(lambda i, d: seen.append((i, d)), "kitchen")
    await marker(gateway, seen, later)
    assert [i["sender"] for i, _ in seen] == ["marker"]
    for c in (sensor, dash, later):
        await c.close()


async def test_after_a_reconnect_listeners_get_the_current_values_again(
    gateway: ServerRouter,
) -> None:
    pump = gateway.add_sender("pump", ["speed"], retained=True)
    pump.trigger("speed", 100)
    dash = await client(gateway, "dash")
    got: Got = []
    await dash.add_listener(lambda i, d: got.append((i, d)), "pump")
    await until(lambda: got, what="the first retained value")
    pump.trigger("speed", 200)  # a new value, as an event
    await until(lambda: len(got) == 2, what="the event")
    link = dash._link
    assert link is not None
    link.abort()  # the connection breaks; the client reconnects and LISTENs again
    await until(lambda: len(got) == 3, what="the value again after the reconnect")
    assert got[2] == ({"sender": "pump", "event": "speed", "retained": True, "stale": False}, 200)
    assert dash.stats["reconnects"] >= 1
    await dash.close()


def test_the_sync_client_gets_retained_values() -> None:
    async def main() -> None:
        router = ServerRouter("127.0.0.1", 0)
        await router.start()
        try:
            sender = router.add_sender("pump", ["speed"], retained=True)
            sender.trigger("speed", 1200)

            def sync_side() -> Got:
                got: Got = []
                with ClientRouter(host="127.0.0.1", port=router.port, name="sync") as app:
                    app.add_listener(lambda i, d: got.append((i, d)), "pump", "speed")
                    done = asyncio.run_coroutine_threadsafe(_wait(lambda: got), loop)
                    done.result(10)
                return got

            loop = asyncio.get_running_loop()
            got = await asyncio.to_thread(sync_side)
            assert got == [
                ({"sender": "pump", "event": "speed", "retained": True, "stale": False}, 1200)
            ]
        finally:
            await router.stop()

    asyncio.run(main())


async def _wait(cond: Any) -> None:
    await until(cond, what="the retained value in the sync client")


async def test_a_listener_without_rights_gets_nothing(gateway: ServerRouter) -> None:
    gateway.core.access.install(
        Policy.from_table({"anonymous": {"own": ["*"], "listen": [["marker", "*"], ["*", "hum"]]}})
    )
    sensor = await client(gateway, "sensor")
    s = await sensor.add_sender("kitchen", ["temp", "hum"], retained=True)
    s.trigger("temp", 1)
    s.trigger("hum", 2)
    await until(lambda: gateway.core.stats()["retained_values"] == 2, what="both values kept")
    dash = await client(gateway, "dash")
    got: Got = []
    await dash.add_listener(lambda i, d: got.append((i, d)), None, None)  # filtered at delivery
    await marker(gateway, got, dash)
    assert [(i["event"], d) for i, d in got if i["sender"] == "kitchen"] == [("hum", 2)]
    await sensor.close()
    await dash.close()


async def test_bounds_refuse_new_values_when_full_and_count_them() -> None:
    router = ServerRouter("127.0.0.1", 0, limits=Limits(retained_values=8))
    await router.start()
    try:
        # one peer holds a quarter of the store at most: 2 of 8
        greedy = await client(router, "greedy")
        for name in ("g1", "g2", "g3"):
            s = await greedy.add_sender(name, ["temp"], retained=True)
            s.trigger("temp", name)
        await until(lambda: router.core.stats()["triggers"] >= 3, what="three triggers")
        stats = await greedy.request("$gateway", "stats", timeout=5)
        assert stats["retained_values"] == 2 and stats["retained_refused"] == 1
        others = [await client(router, f"peer{i}") for i in range(4)]
        for i, peer in enumerate(others):
            for j in range(2):
                s = await peer.add_sender(f"p{i}-{j}", ["temp"], retained=True)
                s.trigger("temp", j)
        # 2 + 6 fill the 8; the fourth peer's values find no room
        await until(lambda: router.core.stats()["triggers"] >= 11, what="eleven triggers")
        assert router.core.stats()["retained_values"] == 8
        assert router.core.stats()["retained_refused"] == 3
        await greedy.close()  # its two values go stale: room for new ones
        await until(lambda: router.core.table.sender("g1") is None, what="greedy gone")
        s = await others[3].add_sender("late", ["temp"], retained=True)
        s.trigger("temp", "late")
        await until(lambda: router.core.stats()["retained_evicted"] == 1, what="an eviction")
        kept = {k for k, _ in router.core.retained.matching(None, None)}
        assert ("late", "temp") in kept and ("g1", "temp") not in kept and len(kept) == 8
        for peer in others:
            await peer.close()
    finally:
        await router.stop()


async def test_bad_meta_is_answered_malformed(gateway: ServerRouter) -> None:
    from rawpeer import Raw

    raw = await Raw.open(gateway.port)
    await raw.hello()
    meta = pack({"retained": ["nope"]})
    await raw.msg(w.RegisterSender(5, "s", ((1, "temp"),), (), False, meta))
    err = await raw.error(ErrorCode.MALFORMED)
    assert err.ref == 5 and "'nope', which is not a declared event" in err.message
    raw.close()


# --- serial -----------------------------------------------------------------------


async def test_a_device_with_retain_on_a_pty(socat: SocatPairs, rig: SerialRig) -> None:
    pair = socat.pair("dev")
    await rig.gateway(pair.a)
    sim = await rig.device(pair.b, events=["temperature"], retain=True, keepalive_ms=500)
    await sim.wait_for("REGISTERED", DEADLINE)
    assert sim.trigger("temperature", 23.25)
    assert rig.router is not None
    core = rig.router.core
    await until(lambda: core.stats()["retained_values"] == 1, what="the device's value kept")
    app = await rig.client("app")
    got: Got = []
    await app.add_listener(lambda i, d: got.append((i, d)), "sensor1", "temperature")
    await until(lambda: got, what="the device's retained value")
    assert got == [
        ({"sender": "sensor1", "event": "temperature", "retained": True, "stale": False}, 23.25)
    ]
    await sim.stop()  # the device loses power: its session times out
    await until(lambda: core.table.sender("sensor1") is None, DEADLINE, "the device gone")
    late = await rig.client("late")
    seen: Got = []
    await late.add_listener(lambda i, d: seen.append((i, d)), "sensor1")
    await until(lambda: seen, what="the stale value")
    assert seen[0] == (
        {"sender": "sensor1", "event": "temperature", "retained": True, "stale": True},
        23.25,
    )


async def test_sig_device_sim_retain_on_a_pty(socat: SocatPairs, rig: SerialRig) -> None:
    pair = socat.pair("dev")
    router = await rig.gateway(pair.a)
    args = ["device-sim", "--port", str(pair.b), "--retain", "--interval", "0.05"]
    sim = Proc([sys.executable, "-m", "sig", *args, "--temperature", "18.5"])
    try:
        await asyncio.to_thread(sim.wait_line, lambda s: "REGISTERED" in s)  # the loop serves
        core = router.core
        await until(lambda: core.stats()["retained_values"] == 1, what="the device's value kept")
        app = await rig.client("app")
        got: Got = []
        await app.add_listener(lambda i, d: got.append((i, d)), "sensor1", "temperature")
        await until(lambda: got, what="the retained value")
        info, data = got[0]
        assert info == {
            "sender": "sensor1",
            "event": "temperature",
            "retained": True,
            "stale": False,
        }
        assert data["value"] == 18.5 and data["n"] >= 1
    finally:
        sim.kill()


async def test_a_device_listener_gets_retained_values(socat: SocatPairs, rig: SerialRig) -> None:
    pair = socat.pair("dev")
    router = await rig.gateway(pair.a)
    pump = router.add_sender("pump", ["speed"], retained=True)
    pump.trigger("speed", 900)
    sim = await rig.device(pair.b, listens=[("pump", None)])
    rec = await sim.wait_for("RETAINED", DEADLINE)
    assert (rec["sender"], rec["event"], rec["data"], rec["stale"]) == (
        "pump",
        "speed",
        900,
        False,
    )


# --- persistence (whole processes) -------------------------------------------------


def test_values_survive_a_restart_as_stale(tmp_path: Path) -> None:
    db = tmp_path / "retained.db"
    gw = Gateway(0, "--no-timer", "--no-discovery", "--retain-db", str(db))
    try:
        port = str(gw.port)
        sent = run_sig("send", "--port", port, "--retain", "kitchen", "temp", "21.5")
        assert sent.returncode == 0, sent.stderr
        first = run_sig("listen", "--port", port, "--sender", "kitchen", "--count", "1")
        assert first.returncode == 0, first.stderr
        line = json.loads(first.stdout.splitlines()[0])
        assert (line["data"], line["retained"], line["stale"]) == (21.5, True, True)
    finally:
        assert gw.stop() == 0
    rows = sqlite3.connect(db).execute("SELECT sender, event FROM retained").fetchall()
    assert rows == [("kitchen", "temp")]
    gw = Gateway(0, "--no-timer", "--no-discovery", "--retain-db", str(db))
    try:
        again = run_sig("listen", "--port", str(gw.port), "--sender", "kitchen", "--count", "1")
        assert again.returncode == 0, again.stderr
        line = json.loads(again.stdout.splitlines()[0])
        assert (line["sender"], line["event"], line["data"]) == ("kitchen", "temp", 21.5)
        assert line["retained"] is True and line["stale"] is True
    finally:
        assert gw.stop() == 0


async def test_the_db_is_written_in_batches_off_the_loop(tmp_path: Path) -> None:
    router = ServerRouter("127.0.0.1", 0)
    db = RetainedDb(tmp_path / "r.db", router.core.retained, interval=0.05)
    assert db.open() == 0
    sender = router.add_sender("s", ["v"], retained=True)
    for i in range(1000):
        sender.trigger("v", i)  # one pending row, whatever the number of triggers
    assert len(db._pending) == 1
    await until(lambda: router.core.counters["retained_db_writes"] >= 1, what="a batch written")
    await router.stop()
    db.close()
    assert router.core.counters["retained_db_rows"] <= 3  # the value, then stale on stop
    again = RetainedStore()
    db2 = RetainedDb(tmp_path / "r.db", again)
    assert db2.open() == 1
    db2.close()
    [(key, value)] = again.matching(None, None)
    assert key == ("s", "v") and value.stale and value.data == pack(999)


def test_a_retain_db_that_cannot_be_opened_stops_sig_serve(tmp_path: Path) -> None:
    where = tmp_path / "no such dir" / "r.db"
    out = run_sig("serve", "--port", "0", "--no-timer", "--no-discovery", "--retain-db", str(where))
    assert out.returncode == 2 and "--retain-db" in out.stderr and "unable to open" in out.stderr


def test_the_config_names_the_retain_db_relative_to_itself(tmp_path: Path) -> None:
    from sig.tools.cli import load_config
    from sig.tools.cli._serve import UsageError

    conf = tmp_path / "sig.toml"
    conf.write_text('[retained]\npath = "r.db"\n[limits]\nretained_values = 5\n')
    loaded = load_config(str(conf))
    assert loaded["retain_db"] == str(tmp_path / "r.db")
    assert loaded["limits"].retained_values == 5
    conf.write_text("[retained]\nfile = 1\n")
    with pytest.raises(UsageError, match=r"\[retained\] takes one key"):
        load_config(str(conf))
