"""Two gateways, one real Mosquitto: federation through the MQTT bridge (issue 14).

Gateway A has a ``sig device-sim`` on a socat pty (and TCP clients); listeners
and requesters sit on gateway B. Each gateway is a ``sig serve --mqtt`` child
process; the broker is a private Mosquitto on a free 127.0.0.1 port
(tests/support/mosquitto.py). Every wait is on a condition, bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Mosquitto, free_port, password_file
from pki import Pki
from procs import Gateway, Proc, run_sig, until
from socat import SocatPairs

from sig.errors import (
    DuplicateSenderError,
    HandlerError,
    NoSuchMethod,
    NoSuchSender,
    RequestTimeout,
    SenderGone,
)
from sig.routers.client import AsyncClientRouter

WAIT = 15.0  #: bound of every wait here (two processes and a broker on a loaded machine)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


def gateway(url: str, gid: str, *extra: str) -> Gateway:
    """``sig serve --mqtt URL --mqtt-id GID``, once its bridge is connected."""
    gw = Gateway(0, "--no-timer", "--no-discovery", "--mqtt", url, "--mqtt-id", gid, *extra)
    gw.wait_log("mqtt: connected", timeout=WAIT)
    return gw


class Seen:
    """What one listener callback was given: (sender, event, data) in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, Any]] = []

    def __call__(self, info: dict[str, Any], data: Any) -> None:
        self.items.append((info["sender"], info["event"], data))

    def of(self, sender: str, event: str) -> list[Any]:
        return [d for s, e, d in self.items if s == sender and e == event]


async def client(gw: Gateway, name: str, **kw: Any) -> AsyncClientRouter:
    c = AsyncClientRouter("127.0.0.1", gw.port, name=name, **kw)
    await c.connect()
    return c


async def bridge_row(c: AsyncClientRouter) -> dict[str, Any]:
    rows = await c.list_links()
    return next(r for r in rows if str(r["link"]).startswith("mqtt:"))


@pytest.fixture
async def pair(broker: Mosquitto, socat: SocatPairs) -> AsyncIterator[dict[str, Any]]:
    """Gateway A with device ``sensor1`` on a pty, gateway B, a client on each."""
    pty = socat.pair("dev")
    a = gateway(broker.url, "A", "--serial", str(pty.a))
    b = gateway(broker.url, "B", "--request-timeout", "2")
    sim = Proc([sys.executable, "-m", "sig", "device-sim", "--port", str(pty.b),
                "--name", "sensor1", "--interval", "0.1"])  # fmt: skip
    ca = await client(a, "on-a")
    cb = await client(b, "on-b")
    try:
        sim.wait_line(lambda s: "REGISTERED" in s, timeout=WAIT)
        yield {"a": a, "b": b, "sim": sim, "ca": ca, "cb": cb, "broker": broker, "pty": pty}
    finally:
        await ca.close()
        await cb.close()
        sim.kill()
        a.stop()
        b.stop()


async def test_device_on_a_reaches_listener_on_b_with_connect_and_requests(
    pair: dict[str, Any],
) -> None:
    cb: AsyncClientRouter = pair["cb"]
    seen = Seen()
    await cb.add_listener(seen, "sensor1", None)
    await until(lambda: len(seen.of("sensor1", "temperature")) >= 3, WAIT, "events on B")
    event = seen.of("sensor1", "temperature")[-1]
    assert event["value"] == 21.5 and isinstance(event["n"], int)
    assert "sensor1" in await cb.list_senders()
    assert await cb.request("sensor1", "get_temp") == 21.5
    echo = await cb.request("sensor1", "anything", {"k": [1, 2.5, "x"]})
    assert echo == {"method": "anything", "params": {"k": [1, 2.5, "x"]}}
    # the device's session ends (its port is unplugged): B fires #disconnect
    pair["pty"].unplug()
    await until(lambda: seen.of("sensor1", "#disconnect"), WAIT, "#disconnect on B")
    assert seen.of("sensor1", "#disconnect")[0]["events"] == ["temperature"]
    with pytest.raises(NoSuchSender):
        await cb.request("sensor1", "get_temp")


async def test_connect_is_fired_on_b_for_a_sender_that_comes_on_a(pair: dict[str, Any]) -> None:
    ca: AsyncClientRouter = pair["ca"]
    cb: AsyncClientRouter = pair["cb"]
    seen = Seen()
    await cb.add_listener(seen, None, "#connect")
    await ca.add_sender("late", ["e"])
    await until(lambda: seen.of("late", "#connect"), WAIT, "#connect of late on B")
    assert [(d["events"], d["requests"]) for d in seen.of("late", "#connect")] == [(["e"], [])]


async def test_targeted_channel_and_broadcast_listens_cross(pair: dict[str, Any]) -> None:
    ca: AsyncClientRouter = pair["ca"]
    cb: AsyncClientRouter = pair["cb"]
    targeted, channel, broadcast = Seen(), Seen(), Seen()
    await cb.add_listener(targeted, "app", "level")
    await cb.add_listener(channel, None, "#alarm")
    await cb.add_listener(broadcast, None, None)
    app = await ca.add_sender("app", ["level", "#alarm", "other"])
    await has_sender(cb, "app")

    def fire() -> bool:
        app.trigger("level", 1)
        app.trigger("#alarm", "fire")
        app.trigger("other", b"\x00\xff")  # bytes: JSON wraps them losslessly ($cbor)
        return bool(targeted.items and channel.items and broadcast.of("app", "other"))

    await until(fire, WAIT, "the three listens on B")
    assert {e for _, e, _ in targeted.items} == {"level"}
    assert {(s, e) for s, e, _ in channel.items} == {("app", "#alarm")}
    assert broadcast.of("app", "other")[0] == b"\x00\xff"
    assert {"level", "#alarm", "other"} <= {e for s, e, _ in broadcast.items if s == "app"}


async def test_requests_across_gateways_keep_their_typed_outcomes(pair: dict[str, Any]) -> None:
    ca: AsyncClientRouter = pair["ca"]
    cb: AsyncClientRouter = pair["cb"]
    hang = asyncio.get_running_loop().create_future()
    started = asyncio.Event()

    def boom(params: Any) -> Any:
        raise ValueError("no")

    async def wait_forever(params: Any) -> Any:
        started.set()
        return await hang

    await ca.add_sender("svc", ["e"], {"ok": lambda p: p * 2, "boom": boom, "hang": wait_forever})
    await has_sender(cb, "svc")
    assert await cb.request("svc", "ok", 21) == 42
    with pytest.raises(NoSuchSender):
        await cb.request("nobody", "ok")
    with pytest.raises(NoSuchMethod):
        await cb.request("svc", "missing")
    with pytest.raises(HandlerError):
        await cb.request("svc", "boom")
    with pytest.raises(RequestTimeout):  # B's --request-timeout 2
        await cb.request("svc", "hang", timeout=10)
    started.clear()
    pending = asyncio.ensure_future(cb.request("svc", "hang", timeout=10))
    await asyncio.wait_for(started.wait(), WAIT)  # the request reached A's handler
    await ca.remove_sender("svc")
    with pytest.raises(SenderGone):
        await pending
    hang.cancel()


async def has_sender(c: AsyncClientRouter, name: str, present: bool = True) -> None:
    """Until ``name`` is (or is not) among the senders ``c``'s gateway knows, bounded."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while (name in await c.list_senders()) != present:
        assert asyncio.get_running_loop().time() < deadline, f"{name} present={present}"
        await asyncio.sleep(0.02)


async def test_a_name_taken_on_a_is_refused_on_b(pair: dict[str, Any]) -> None:
    ca: AsyncClientRouter = pair["ca"]
    cb: AsyncClientRouter = pair["cb"]
    await ca.add_sender("unique", ["e"])
    await has_sender(cb, "unique")
    with pytest.raises(DuplicateSenderError):
        await cb.add_sender("unique", ["e"])
    with pytest.raises(DuplicateSenderError):  # the device's name too
        await cb.add_sender("sensor1", ["temperature"])


async def test_only_what_a_remote_listener_asked_for_crosses_and_nothing_loops(
    pair: dict[str, Any],
) -> None:
    ca: AsyncClientRouter = pair["ca"]
    cb: AsyncClientRouter = pair["cb"]
    broker: Mosquitto = pair["broker"]
    row = await bridge_row(ca)
    assert row["remote_listens"] == 0  # nobody on B listens: A publishes no event
    sub = broker.sub("sig/+/+")
    seen = Seen()
    await cb.add_listener(seen, "sensor1", "temperature")

    async def a_follows() -> None:
        while (await bridge_row(ca))["remote_listens"] != 1:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(a_follows(), WAIT)
    await until(lambda: len(seen.items) >= 5, WAIT, "events on B")
    await until(lambda: len(sub.lines) >= 5, WAIT, "events seen by mosquitto_sub")
    topics = {line.split(" ", 1)[0] for line in sub.lines}
    assert topics == {"sig/sensor1/temperature"}  # no #connect, nothing else of A's
    ns = [d["n"] for d in seen.of("sensor1", "temperature")]
    assert len(ns) == len(set(ns))  # each event once on B
    published = [json.loads(line.split(" ", 1)[1])["n"] for line in sub.lines]
    assert len(published) == len(set(published))  # and once on the broker: no loop back
    row_b = await bridge_row(cb)
    assert row_b["mqtt"] == "connected" and row_b["remote_senders"] >= 1


async def test_broker_restart_reconnects_and_duplicates_nothing(pair: dict[str, Any]) -> None:
    cb: AsyncClientRouter = pair["cb"]
    broker: Mosquitto = pair["broker"]
    seen = Seen()
    await cb.add_listener(seen, "sensor1", None)
    await until(lambda: seen.of("sensor1", "temperature"), WAIT, "events before the restart")
    broker.restart()
    await until(lambda: seen.of("sensor1", "#disconnect"), WAIT, "#disconnect on the loss")
    await until(lambda: seen.of("sensor1", "#connect"), WAIT, "#connect once it is back")
    mark = len(seen.items)
    await until(lambda: len(seen.of("sensor1", "temperature")) >= 3 + mark // 2, WAIT)
    after = [d for s, e, d in seen.items[mark:] if e == "temperature"]
    assert after
    ns = [d["n"] for d in seen.of("sensor1", "temperature")]
    assert len(ns) == len(set(ns))  # nothing twice
    gone = next(i for i, item in enumerate(seen.items) if item[1] == "#disconnect")
    assert [e for s, e, _ in seen.items[gone:] if e.startswith("#")] == ["#disconnect", "#connect"]
    assert list(await cb.list_senders()).count("sensor1") == 1
    row = await bridge_row(cb)
    assert row["mqtt"] == "connected" and row["remote_senders"] == 1


async def test_gateway_a_killed_fires_disconnect_on_b_within_the_keepalive(
    broker: Mosquitto,
) -> None:
    a = gateway(broker.url, "A", "--mqtt-keepalive", "1")
    b = gateway(broker.url, "B")
    ca = await client(a, "on-a")
    cb = await client(b, "on-b")
    try:
        seen = Seen()
        await cb.add_listener(seen, None, "#disconnect")
        await ca.add_sender("doomed", ["e"])
        await has_sender(cb, "doomed")
        a.signal(signal.SIGKILL)
        # the broker notices A's silence after 1.5 x keepalive and sends its will
        await until(lambda: seen.of("doomed", "#disconnect"), WAIT, "#disconnect of A's sender")
        assert "doomed" not in await cb.list_senders()
    finally:
        await ca.close()
        await cb.close()
        a.kill()
        b.stop()


async def test_mosquitto_sub_sees_the_documented_topics(pair: dict[str, Any]) -> None:
    broker: Mosquitto = pair["broker"]
    cb: AsyncClientRouter = pair["cb"]
    await cb.add_listener(Seen(), "sensor1", "temperature")
    sub = broker.sub("sig/@gw/+/status", "sig/@gw/+/listens", "sig/@presence/+/+")

    def seen(prefix: str) -> list[str]:
        return [line for line in sub.lines if line.startswith(prefix)]

    await until(lambda: seen("sig/@presence/A/sensor1 ") and seen("sig/@gw/B/listens "), WAIT)
    await until(lambda: seen("sig/@gw/A/status ") and seen("sig/@gw/B/status "), WAIT)
    presence = json.loads(seen("sig/@presence/A/sensor1 ")[-1].split(" ", 1)[1])
    assert presence["gateway"] == "A" and presence["events"] == ["temperature"]
    assert "get_temp" in presence["requests"] and presence["since"] > 0
    status = json.loads(seen("sig/@gw/A/status ")[-1].split(" ", 1)[1])
    assert status["state"] == "online"
    listens = json.loads(seen("sig/@gw/B/listens ")[-1].split(" ", 1)[1])
    assert ["sensor1", "temperature"] in listens


async def test_broker_unreachable_at_start_then_reachable(tmp_path: Path) -> None:
    port = free_port()
    gw = Gateway(0, "--no-timer", "--no-discovery", "--mqtt", f"mqtt://127.0.0.1:{port}",
                 "--mqtt-id", "lonely")  # fmt: skip
    c = await client(gw, "local")
    try:
        gw.wait_log("mqtt: cannot reach", timeout=WAIT)
        await c.add_sender("here", ["e"], {"m": lambda p: "local"})
        assert await c.request("here", "m") == "local"  # serving locally meanwhile
        row = await bridge_row(c)
        assert row["mqtt"] in ("connecting", "down")
        links = await asyncio.to_thread(run_sig, "links", "--port", str(gw.port))
        assert re.search(r"^mqtt:127\.0\.0\.1:\d+ .*mqtt=(connecting|down)", links.stdout, re.M)
        with Mosquitto(tmp_path, port) as broker:
            sub = broker.sub("sig/@presence/+/+")
            gw.wait_log("mqtt: connected", timeout=WAIT)
            await until(lambda: any("sig/@presence/lonely/here " in s for s in sub.lines), WAIT)
            assert (await bridge_row(c))["mqtt"] == "connected"
            links = await asyncio.to_thread(run_sig, "links", "--port", str(gw.port))
            assert "mqtt=connected" in links.stdout, links.stdout
    finally:
        await c.close()
        gw.stop()


async def test_mqtts_with_a_password_and_a_wrong_password(tmp_path: Path) -> None:
    """A TLS broker that wants a login: A and B join, C (a wrong password) keeps trying."""
    pki = Pki(tmp_path)
    ca = pki.ca("broker-ca")
    server = pki.issue("broker", "127.0.0.1", ca)
    port = free_port()
    users = password_file(tmp_path, "gw", "s3cret")
    extra = (f"cafile {ca[0].cert}", f"certfile {server.cert}", f"keyfile {server.key}",
             "allow_anonymous false", f"password_file {users}")  # fmt: skip
    with Mosquitto(tmp_path, port, extra) as broker:
        gws = []
        for gid, secret in (("A", "s3cret"), ("B", "s3cret"), ("C", "wrong")):
            conf = tmp_path / f"{gid}.toml"
            pwfile = tmp_path / f"{gid}.pass"
            pwfile.write_text(secret + "\n")
            conf.write_text(
                f'[mqtt]\nurl = "mqtts://127.0.0.1:{broker.port}"\nusername = "gw"\n'
                f'password_file = "{pwfile}"\ngateway_id = "{gid}"\n'
                f'[mqtt.tls]\nca = "{ca[0].cert}"\n'
            )
            gws.append(Gateway(0, "--no-timer", "--no-discovery", "--config", str(conf)))
        a, b, c = gws
        ca_client = await client(a, "on-a")
        cb = await client(b, "on-b")
        cc = await client(c, "on-c")
        try:
            a.wait_log("mqtt: connected", timeout=WAIT)
            b.wait_log("mqtt: connected", timeout=WAIT)
            c.wait_log("mqtt: cannot reach", timeout=WAIT)  # refused: not authorised
            await ca_client.add_sender("secure", ["e"])
            await has_sender(cb, "secure")
            assert "secure" not in await cc.list_senders()
            assert (await bridge_row(cc))["mqtt"] != "connected"
        finally:
            for x in (ca_client, cb, cc):
                await x.close()
            for gw in gws:
                gw.stop()
