"""Issue 9 over real sockets: teardown of big links, sizes at every encode point,
paged ``$gateway`` answers, per-link limits and fair request shares.

Every test runs a real ServerRouter on 127.0.0.1 and talks to it over TCP, with
hand-driven peers (:class:`Raw`) where a test needs bytes no client would send.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from procs import Gateway, Peer, child_env, until
from rawpeer import Raw

import sig
from sig.errors import ErrorCode
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack
from sig.routers.client import AsyncClientRouter, Backoff
from sig.routers.gateway import ServerRouter

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0.1)


Opener = Callable[..., Any]


@pytest.fixture
async def opener(gw: ServerRouter) -> AsyncIterator[Opener]:
    """``await opener(name, max_body=...)``: a Raw peer on ``gw``, closed after the test."""
    opened: list[Raw] = []

    async def open_raw(name: str, max_body: int = 65535) -> Raw:
        peer = await Raw.open(gw.port, name, max_body)
        opened.append(peer)
        return peer

    yield open_raw
    for peer in opened:
        await peer.wait_closed()


@pytest.fixture
async def gw() -> AsyncIterator[ServerRouter]:
    async with ServerRouter(
        "127.0.0.1", 0, limits=sig.Limits(senders_per_link=5000, events_per_sender=16)
    ) as router:
        yield router


@pytest.fixture
async def client(gw: ServerRouter) -> AsyncIterator[AsyncClientRouter]:
    async with AsyncClientRouter("127.0.0.1", gw.port, name="app", backoff=FAST) as c:
        yield c


async def test_a_link_with_thousands_of_senders_goes_and_others_are_still_served(
    gw: ServerRouter, client: AsyncClientRouter, opener: Opener
) -> None:
    seen: list[tuple[str, str]] = []
    await client.add_listener(
        lambda info, data: seen.append((info["sender"], info["event"])), "bulk-5", None
    )
    await client.add_sender("calc", [], {"twice": lambda x: 2 * x})
    asker = AsyncClientRouter("127.0.0.1", gw.port, name="asker", backoff=FAST)
    async with asker:
        bulk = await opener("bulk")
        n = 3000
        await bulk.msg(*(w.RegisterSender(i, f"bulk-{i}", ((i, "e"),)) for i in range(1, n + 1)))
        await bulk.expect(lambda m: m == w.SenderRegistered(n))
        assert len(gw.core.table.senders) == n + 1
        bulk.close()
        answers = [await asker.request("calc", "twice", i) for i in range(20)]
        await until(lambda: len(gw.core.table.senders) == 1, what="bulk senders gone")
        assert answers == [2 * i for i in range(20)]
        assert await asker.request("calc", "twice", 21) == 42
        await until(lambda: len(seen) == 2, what="#disconnect of bulk-5")
        assert seen == [("bulk-5", "#connect"), ("bulk-5", "#disconnect")]
        gw.core.table.check_cache()


async def test_a_legal_65534_byte_trigger_is_dropped_for_its_listener_not_fatal(
    gw: ServerRouter, client: AsyncClientRouter, opener: Opener
) -> None:
    got: list[Any] = []
    await client.add_listener(lambda info, data: got.append(data), "big", "e")
    sender = await opener("sender")
    await sender.msg(w.RegisterSender(1, "big", ((1, "e"),)))
    await sender.expect(lambda m: m == w.SenderRegistered(1))
    body = bytes([w.MessageType.TRIGGER, 1]) + pack(b"y" * 65529)
    assert len(body) == 65534  # the EVENT with the names added would be 65,537
    await sender.body(body)
    await sender.alive(1)
    await sender.msg(w.Trigger(1, pack("small")))
    await until(lambda: got, what="the next event")
    assert got == ["small"]
    rows = {r["peer"]: r for r in await client.list_links()}
    assert rows["app"]["dropped_too_large"] == 1 and rows["app"]["dropped_events"] == 1
    assert gw.core.counters["dropped_too_large"] == 1


async def test_a_registration_whose_announcement_cannot_be_sent_is_refused_without_ghost(
    gw: ServerRouter, client: AsyncClientRouter, opener: Opener
) -> None:
    connects: list[str] = []
    await client.add_listener(lambda info, data: connects.append(info["sender"]), None, "#connect")
    raw = await opener("raw")
    methods = tuple(f"method-{i:05}".ljust(30, "m") for i in range(2100))
    msg = w.RegisterSender(7, "pump", ((1, "on"),), methods)
    assert len(w.encode(msg)) <= 65535  # legal on the wire; its CBOR announcement is not
    await raw.msg(msg)
    err = await raw.expect(lambda m: isinstance(m, w.Error))
    assert isinstance(err, w.Error) and (err.code, err.ref) == (ErrorCode.TOO_LARGE, 7)
    assert "announcement" in err.message
    assert "pump" not in gw.core.table.senders
    await raw.alive(2)
    other = AsyncClientRouter("127.0.0.1", gw.port, name="other", backoff=FAST)
    async with other:
        await other.add_sender("pump", ["on"])  # the name is free: no ghost holds it
        await until(lambda: connects, what="#connect of the real pump")
        assert connects == ["pump"]


async def test_a_too_large_response_is_too_large_for_the_requester_only(
    gw: ServerRouter, client: AsyncClientRouter, opener: Opener
) -> None:
    handler = await opener("handler")
    await handler.msg(w.RegisterSender(1, "H", (), ("big",)))
    await handler.expect(lambda m: m == w.SenderRegistered(1))
    asker = await opener("asker")
    await asker.msg(w.Request(0xFFFFFFFF, "H", "big"))
    fwd = await handler.expect(lambda m: isinstance(m, w.Request))
    assert isinstance(fwd, w.Request)
    answer = w.encode(w.Response(fwd.request_id, 0, "", pack(b"z" * 65528)))
    assert len(answer) == 65535  # legal from the handler; 4 bytes more with the asker's id
    await handler.body(answer)
    resp = await asker.response(0xFFFFFFFF)
    assert resp.status == ErrorCode.TOO_LARGE
    await handler.alive(3)  # the handler's connection was not closed
    await asker.alive(4)
    # A device that announced max_body 200 asks a handler that answers 1000 bytes.
    await client.add_sender("talker", [], {"say": lambda n: "x" * n})
    device = await opener("device", max_body=200)
    await device.msg(
        w.Request(5, "talker", "say", pack(1000)), w.Request(6, "talker", "say", pack(10))
    )
    assert (await device.response(5)).status == ErrorCode.TOO_LARGE
    ok = await device.response(6)
    assert ok.status == 0 and unpack(ok.data) == "x" * 10
    assert gw.core.counters["responses_too_large"] == 2


async def test_per_link_limits_refuse_with_a_clear_error(gw: ServerRouter) -> None:
    gw.core.limits = sig.Limits(senders_per_link=3, listeners_per_link=5, events_per_sender=4)
    c = AsyncClientRouter("127.0.0.1", gw.port, name="greedy", backoff=FAST)
    async with c:
        for i in range(3):
            await c.add_sender(f"s{i}", ["e"])
        with pytest.raises(sig.LimitReached, match="3 senders"):
            await c.add_sender("s3", ["e"])
        await c.remove_sender("s0")
        with pytest.raises(sig.LimitReached, match="5 events"):
            await c.add_sender("wide", ["a", "b", "c", "d", "e"])
        for i in range(5):
            await c.add_listener(lambda info, data: None, f"t{i}", "e")
        with pytest.raises(sig.LimitReached, match="5 listeners"):
            await c.add_listener(lambda info, data: None, "t5", "e")
        assert c.is_connected
        assert sorted(await c.list_senders()) == ["s1", "s2"]
    assert gw.core.counters["refused_registrations"] == 3


async def test_gateway_answers_come_in_pages_that_fit_a_small_max_body(
    gw: ServerRouter, client: AsyncClientRouter, opener: Opener
) -> None:
    for i in range(30):
        await client.add_sender(f"sensor-{i:02}", ["temperature", "humidity"])
    assert sorted(await client.request("$gateway", "senders")) == sorted(
        f"sensor-{i:02}" for i in range(30)
    )  # without params: the first version's answer, for a small gateway
    device = await opener("device", max_body=256)
    await device.msg(w.Request(1, "$gateway", "senders"))
    whole = await device.response(1)
    assert whole.status == ErrorCode.TOO_LARGE and "offset" in whole.message
    names: list[str] = []
    offset, rid = 0, 10
    while offset is not None:
        await device.msg(w.Request(rid, "$gateway", "senders", pack({"offset": offset})))
        resp = await device.response(rid)
        assert resp.status == 0 and len(w.encode(resp)) <= 256
        page = unpack(resp.data)
        names += [item["name"] for item in page["items"]]
        offset, rid = page["next"], rid + 1
    assert names == [f"sensor-{i:02}" for i in range(30)] and rid > 14


async def test_clients_and_the_cli_fetch_every_page(gw: ServerRouter, opener: Opener) -> None:
    # 3 links x 250 senders with 200-byte names: about 190 KB of senders, 3 pages or more.
    raws = []
    for r in range(3):
        raw = await opener(f"bulk{r}")
        await raw.msg(
            *(
                w.RegisterSender(i + 1, f"{r}-{i:03}-".ljust(200, "n"), ((i + 1, "e"),))
                for i in range(250)
            )
        )
        await raw.expect(lambda m: m == w.SenderRegistered(250))
        raws.append(raw)
    expected = {f"{r}-{i:03}-".ljust(200, "n") for r in range(3) for i in range(250)}
    c = AsyncClientRouter("127.0.0.1", gw.port, name="lister", backoff=FAST)
    async with c:
        senders = await c.list_senders()
        assert set(senders) == expected
        assert senders[min(expected)] == {
            "events": ["e"],
            "requests": [],
            "link": senders[min(expected)]["link"],
        }
        links = await c.list_links()
        assert sorted(row["peer"] for row in links) == ["bulk0", "bulk1", "bulk2", "lister"]
    await until(lambda: len(gw.core.sessions) == 3, what="the lister gone")
    sync = sig.ClientRouter(host="127.0.0.1", port=gw.port, name="sync-lister")
    try:
        await asyncio.to_thread(sync.connect)
        assert set(await asyncio.to_thread(sync.list_senders)) == expected
        assert len(await asyncio.to_thread(sync.list_links)) == 4
    finally:
        await asyncio.to_thread(sync.close)
    await until(lambda: len(gw.core.sessions) == 3, what="the sync lister gone")
    for command, lines in (("senders", 1 + 750), ("links", 1 + 4 + 1)):  # header, rows, gateway:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sig",
            command,
            "--port",
            str(gw.port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        assert len(out.decode().splitlines()) == lines, out[-500:]
    for raw in raws:
        raw.close()


async def test_a_flooding_requester_gets_busy_and_the_other_does_not(
    gw: ServerRouter, client: AsyncClientRouter
) -> None:
    gate = asyncio.Event()
    started: list[int] = []

    async def slow(n: int) -> int:
        started.append(n)
        await gate.wait()
        return n

    await client.add_sender("worker", [], {"work": slow})
    flooder = AsyncClientRouter("127.0.0.1", gw.port, name="flooder", backoff=FAST)
    polite = AsyncClientRouter("127.0.0.1", gw.port, name="polite", backoff=FAST)
    async with flooder, polite:
        flood = [asyncio.create_task(flooder.request("worker", "work", i)) for i in range(100)]
        await until(lambda: sum(t.done() for t in flood) == 68 and len(started) == 32)
        assert all(isinstance(t.exception(), sig.GatewayBusy) for t in flood if t.done())
        calls = [asyncio.create_task(polite.request("worker", "work", 1000 + i)) for i in range(20)]
        await until(lambda: len(started) == 52, what="the polite requests at the handler")
        assert not any(t.done() for t in calls)
        with pytest.raises(sig.GatewayBusy, match="fair share"):
            await flooder.request("worker", "work", 999)
        gate.set()
        assert await asyncio.gather(*calls) == [1000 + i for i in range(20)]
        assert sorted(t.result() for t in flood if not t.exception()) == list(range(32))
        # Under a steady flood (100 in flight, 1,000 calls) the polite one is never refused.

        async def flood_loop(base: int) -> int:
            busy = 0
            for i in range(10):
                try:
                    await flooder.request("worker", "work", base + i)
                except sig.GatewayBusy:
                    busy += 1
            return busy

        flooding = [asyncio.create_task(flood_loop(10_000 + 100 * k)) for k in range(100)]
        polite_results = [await polite.request("worker", "work", i) for i in range(30)]
        flood_busy = sum(await asyncio.gather(*flooding))
        assert polite_results == list(range(30))
        assert gw.core.counters["busy"] >= 69 + flood_busy


def test_sig_serve_takes_the_limits_from_its_config(tmp_path: Path) -> None:
    config = tmp_path / "sig.toml"
    config.write_text("[limits]\nsenders_per_link = 2\nlisteners_per_link = 1\n")
    gw = Gateway(0, "--no-timer", "--config", str(config))
    try:
        peer = Peer(gw.port, "peer")
        try:
            peer.call("sender", name="a", events=["e"])
            peer.call("sender", name="b", events=["e"])
            err = peer.fail("sender", name="c", events=["e"])
            assert err["error"] == "LimitReached" and "2 senders" in err["message"]
            peer.call("listen", tag="t", sender="a", event="e")
            err = peer.fail("listen", tag="u", sender="b", event="e")
            assert err["error"] == "LimitReached" and "1 listeners" in err["message"]
        finally:
            peer.close()
    finally:
        assert gw.stop() == 0
    bad = tmp_path / "bad.toml"
    for text in ("[limits]\nsenders = 3\n", "[limits]\nsenders_per_link = 0\n"):
        bad.write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", "sig", "serve", "--config", str(bad)],
            capture_output=True, text=True, timeout=30, env=child_env(),
        )  # fmt: skip
        assert proc.returncode == 2 and "limits" in proc.stderr
