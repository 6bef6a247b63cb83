"""The gateway's HTTP side over real sockets: /metrics, /healthz, the request endpoint, the tail.

The gateway is a real ``ServerRouter`` on 127.0.0.1 (or ``sig serve`` in a
child process with a ``sig device-sim`` on a socat pty), the HTTP side a real
aiohttp server on 127.0.0.1:0, and every scrape is parsed with
prometheus_client's own text parser. Waits are conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from procs import Gateway, Proc, until
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from socat import SocatPairs

from sig.errors import NoSuchSender
from sig.routers.client import AsyncClientRouter
from sig.routers.gateway import ServerRouter
from sig.routers.http import HttpBindError, HttpSide, is_loopback, parse_bind
from sig.routers.http._live import PREVIEW_CHARS, preview
from sig.routers.http._server import MAX_REQUEST_BODY, warn_if_exposed
from sig.tools.cli import UsageError, load_config

HEADERS = {"Content-Type": "application/json", "X-Sig-Page": "1"}


def parse(text: str) -> dict[str, Any]:
    """Families by name, parsed by prometheus_client (raises on a malformed exposition)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name`` of ``family`` with exactly ``labels``."""
    found = [s.value for s in families[family].samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (family, name, labels, families[family].samples)
    return float(found[0])


async def until_async(cond: Callable[[], Awaitable[Any]], what: str, timeout: float = 10.0) -> Any:
    """``procs.until`` for a coroutine condition (an HTTP call): its truthy value, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


class Rig:
    """An in-process gateway with its HTTP side and an HTTP client session."""

    router: ServerRouter
    http: HttpSide
    session: aiohttp.ClientSession

    async def start(self, **http_kw: Any) -> Rig:
        self.router = ServerRouter("127.0.0.1", 0)
        await self.router.start()
        self.http = HttpSide(self.router, "127.0.0.1", 0, **http_kw)
        await self.http.start()
        self.session = aiohttp.ClientSession(base_url=self.http.url)
        return self

    async def metrics(self) -> dict[str, Any]:
        async with self.session.get("/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            return parse(await resp.text())

    async def post(self, body: Any, headers: dict[str, str] = HEADERS) -> tuple[int, Any]:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        async with self.session.post("/api/request", data=data, headers=headers) as resp:
            text = await resp.text()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(text) if ctype.startswith("application/json") else text

    async def close(self) -> None:
        await self.session.close()
        await self.http.stop()
        await self.router.stop()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    await r.start(tail_queue=50)
    try:
        yield r
    finally:
        await r.close()


# --- a scrape of `sig serve --http` with a UART device ------------------------


async def test_scrape_of_sig_serve_parses_with_prometheus_client(socat: SocatPairs) -> None:
    pair = socat.pair("dev")
    gw = Gateway(0, "--no-timer", "--serial", str(pair.a), "--http", "127.0.0.1:0")
    sim_args = ["device-sim", "--port", str(pair.b), "--name", "sensor1", "--interval", "0.2"]
    sim = Proc([sys.executable, "-m", "sig", *sim_args])
    client = AsyncClientRouter("127.0.0.1", gw.port, name="scraper")
    try:
        line = gw.wait_line(lambda s: s.startswith("  http       http://"))  # the banner
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match is not None, line
        url = match.group(0)
        sim.wait_line(lambda s: "REGISTERED" in s)
        await client.connect()
        assert await client.request("sensor1", "get_temp") == 21.5
        with pytest.raises(NoSuchSender):
            await client.request("nobody", "x")
        async with aiohttp.ClientSession(base_url=url) as http:

            async def scrape() -> dict[str, Any]:
                async with http.get("/metrics") as resp:
                    return parse(await resp.text())

            async def triggered() -> dict[str, Any] | None:
                fams = await scrape()
                samples = fams["sig_sender_triggers"].samples
                return fams if any(s.labels == {"sender": "sensor1"} for s in samples) else None

            fams = await until_async(triggered, "sensor1's triggers in /metrics")
    finally:
        await client.close()
        sim.kill()
        gw.stop()
    link = {"link": f"serial:{pair.a}"}
    assert fams["sig_link_received_frames"].type == "counter"
    assert sample(fams, "sig_link_received_frames", "sig_link_received_frames_total", **link) > 0
    for family in (
        "sig_link_sent_frames",
        "sig_link_received_bytes",
        "sig_link_sent_bytes",
        "sig_link_crc_errors",
        "sig_link_framing_errors",
        "sig_link_oversize_frames",
    ):
        assert sample(fams, family, family + "_total", **link) >= 0
    assert sample(fams, "sig_link_up", "sig_link_up", **link) == 1
    for reason in ("queue_full", "too_large"):
        name = "sig_link_dropped_events_total"
        assert sample(fams, "sig_link_dropped_events", name, reason=reason, **link) == 0
    assert sample(fams, "sig_sender_triggers", "sig_sender_triggers_total", sender="sensor1") >= 1
    assert sample(fams, "sig_requests", "sig_requests_total", outcome="ok") >= 1
    assert sample(fams, "sig_requests", "sig_requests_total", outcome="no_such_sender") == 1
    hist = fams["sig_request_duration_seconds"]
    assert hist.type == "histogram"
    count = sample(fams, "sig_request_duration_seconds", "sig_request_duration_seconds_count")
    inf = sample(
        fams, "sig_request_duration_seconds", "sig_request_duration_seconds_bucket", le="+Inf"
    )
    assert count == inf >= 2
    assert fams["sig_event_loop_lag_max_seconds"].type == "gauge"
    assert sample(fams, "sig_connections", "sig_connections") == 1  # the scraper's client
    assert sample(fams, "process_resident_memory_bytes", "process_resident_memory_bytes") > 1e6
    assert sample(fams, "sig_triggers", "sig_triggers_total") >= 1


# --- /metrics: the mapping tables and the rule for unknown keys -------------


async def test_unknown_numeric_keys_are_exported_by_the_documented_rule(rig: Rig) -> None:
    rig.router.core.counters["brand_new"] = 5
    rig.router.core.counters["closed_peer"] = 2
    row = {
        "link": "serial:/dev/x",
        "state": "open",
        "port_state": "closed",
        "peer": "dev",
        "senders": [],
        "frames_in": 7,
        "dropped": 3,
        "dropped_events": 4,  # 3 for a full queue, so 1 too large
        "wobble-count": 9,
        "flag": True,  # a bool is not a number
        "last_error": "EIO",
    }
    rig.router.core.link_reporters.append(lambda: [row, dict(row, frames_in=99)])
    fams = await rig.metrics()
    link = {"link": "serial:/dev/x"}
    assert sample(fams, "sig_gateway_brand_new", "sig_gateway_brand_new") == 5
    assert fams["sig_gateway_brand_new"].type == "unknown"
    assert sample(fams, "sig_links_closed", "sig_links_closed_total", reason="peer") == 2
    assert sample(fams, "sig_link_wobble_count", "sig_link_wobble_count", **link) == 9
    assert sample(fams, "sig_link_received_frames", "sig_link_received_frames_total", **link) == 7
    assert sample(fams, "sig_link_up", "sig_link_up", **link) == 0  # the port is closed
    drops = "sig_link_dropped_events_total"
    assert sample(fams, "sig_link_dropped_events", drops, reason="queue_full", **link) == 3
    assert sample(fams, "sig_link_dropped_events", drops, reason="too_large", **link) == 1
    assert "sig_link_flag" not in fams
    assert "sig_link_dropped" not in fams  # only as a reason, never double-counted


async def test_loop_lag_comes_from_the_gateway_when_it_measures_it() -> None:
    router = ServerRouter("127.0.0.1", 0)
    gauges: dict[str, float] = getattr(router.core, "gauges", {})
    gauges["max_loop_lag_ms"] = 250.0
    router.core.gauges = gauges  # type: ignore[attr-defined]
    await router.start()
    http = HttpSide(router, "127.0.0.1", 0)
    await http.start()
    try:
        assert http.lag is None  # no second monitor
        # one loop turn: the gateway's own ticker cannot change the figure in between
        fams = parse(generate_latest(http.registry).decode())
        expected = gauges["max_loop_lag_ms"] / 1000
        lag = sample(fams, "sig_event_loop_lag_max_seconds", "sig_event_loop_lag_max_seconds")
        assert lag == expected  # the gateway's figure, in seconds
    finally:
        await http.stop()
        await router.stop()


# --- /healthz ----------------------------------------------------------------


async def test_healthz_is_200_while_the_tcp_listener_is_up_then_503(rig: Rig) -> None:
    async with rig.session.get("/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok" and body["tcp_listener"] is True
    assert body["tcp_port"] == rig.router.port
    await rig.router.stop()  # the TCP listener goes; the HTTP side stays
    async with rig.session.get("/healthz") as resp:
        assert resp.status == 503
        assert (await resp.json())["tcp_listener"] is False


# --- POST /api/request ----------------------------------------------------------


async def test_request_endpoint_reports_results_and_typed_errors(rig: Rig) -> None:
    def boom(params: Any) -> Any:
        raise RuntimeError("kaput")

    rig.router.add_sender("calc", [], {"double": lambda p: p["x"] * 2, "boom": boom})
    status, body = await rig.post({"sender": "calc", "method": "double", "params": {"x": 21}})
    assert (status, body) == (200, {"ok": True, "result": 42})
    status, body = await rig.post({"sender": "calc", "method": "nope"})
    assert status == 200 and body["ok"] is False
    assert (body["error"], body["code"]) == ("NoSuchMethod", "NO_SUCH_METHOD")
    status, body = await rig.post({"sender": "calc", "method": "boom"})
    assert body["code"] == "HANDLER_ERROR" and "kaput" in body["message"]
    status, body = await rig.post({"sender": "ghost", "method": "x"})
    assert body["code"] == "NO_SUCH_SENDER"
    fams = await rig.metrics()
    for outcome, n in (("ok", 1), ("no_such_method", 1), ("handler_error", 1)):
        assert sample(fams, "sig_requests", "sig_requests_total", outcome=outcome) == n


async def test_request_endpoint_times_out_on_a_silent_handler(socat: SocatPairs) -> None:
    from sig.routers.serial import open_serial_links
    from sig.tools.device_sim import DeviceSim

    pair = socat.pair("dev")
    r = Rig()
    await r.start()
    sim = DeviceSim(str(pair.b), name="dev1", interval=0, out=lambda line: None)
    try:
        await open_serial_links(r.router, [str(pair.a)])
        await sim.start()
        await until(lambda: "dev1" in r.router.list_senders(), what="dev1 registered")
        status, body = await r.post({"sender": "dev1", "method": "hang", "timeout": 0.2})
        assert status == 200 and body["code"] == "TIMEOUT", body
        status, body = await r.post({"sender": "dev1", "method": "get_temp"})
        assert body == {"ok": True, "result": 21.5}
    finally:
        await sim.stop()
        await r.close()


async def test_request_endpoint_refuses_what_a_cross_site_page_or_a_flood_could_send(
    rig: Rig,
) -> None:
    rig.router.add_sender("calc", [], {"echo": lambda p: p})
    ok = {"sender": "calc", "method": "echo"}
    # a form post (text/plain or urlencoded) cannot set the JSON type nor the header
    status, _ = await rig.post(ok, {"Content-Type": "text/plain", "X-Sig-Page": "1"})
    assert status == 415
    status, _ = await rig.post(ok, {"Content-Type": "application/json"})
    assert status == 403
    for bad_json in (b"{not json", b"[" * 8000 + b"]" * 8000):
        status, _ = await rig.post(bad_json, HEADERS)
        assert status == 400
    for bad in ([], {"sender": "calc"}, {"sender": 1, "method": "x"}, dict(ok, timeout="soon")):
        status, _ = await rig.post(bad)
        assert status == 400, bad
    big = {**ok, "params": "x" * MAX_REQUEST_BODY}
    status, _ = await rig.post(big)
    assert status == 413
    status, body = await rig.post(dict(ok, params="still fine"))
    assert (status, body) == (200, {"ok": True, "result": "still fine"})


# --- the live tail ----------------------------------------------------------------


async def read_sse(resp: aiohttp.ClientResponse, want: str) -> Any:
    """The data of the next Server-Sent Event named ``want``."""
    event = ""
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 10.0)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == want:
            return json.loads(line[6:])


async def test_tail_flood_is_dropped_counted_and_bounded(rig: Rig) -> None:
    sender = rig.router.add_sender("flood", ["x"])
    async with rig.session.get("/api/events") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        state = await read_sse(resp, "state")
        assert [s["name"] for s in state["senders"]] == ["flood"]
        (client,) = rig.http.live.clients
        for i in range(5000):  # one loop turn: the stream's writer cannot run in between
            sender.trigger("x", i)
        assert len(client.queue) == 50  # the page's queue is bounded
        assert client.dropped == 4950
        tail = await read_sse(resp, "tail")
        assert [e["data"] for e in tail["events"]] == [str(i) for i in range(50)]
        assert tail["dropped"] == 4950
        sender.trigger("x", "after")
        tail = await read_sse(resp, "tail")
        assert [e["data"] for e in tail["events"]] == ['"after"']
        fams = await rig.metrics()
        name = "sig_http_tail_dropped_events"
        assert sample(fams, name, name + "_total") == 4950
        assert sample(fams, "sig_sender_triggers", "sig_sender_triggers_total", sender="flood") == (
            5001
        )
    await until(lambda: not rig.http.live.clients, what="the stream closed")


async def test_event_stream_pages_are_bounded(rig: Rig) -> None:
    rig.http.live.max_clients = 2
    async with rig.session.get("/api/events") as a, rig.session.get("/api/events") as b:
        await read_sse(a, "state")
        await read_sse(b, "state")
        async with rig.session.get("/api/events") as c:
            assert c.status == 503


async def test_rates_and_triggers_forget_a_sender_that_leaves(rig: Rig) -> None:
    sender = rig.router.add_sender("brief", ["e"])
    sender.trigger("e", 1)
    sender.trigger("e", 2)
    rows = rig.http.live.rate_rows()
    assert [(r["sender"], r["event"], r["total"], r["counts"][-1]) for r in rows] == [
        ("brief", "e", 2, 2)
    ]
    rig.router.remove_sender("brief")
    assert rig.http.live.rate_rows() == [] and rig.http.live.triggers == {}


async def test_hostile_names_survive_the_exposition_format(rig: Rig) -> None:
    name = 'a"b\\c} x{y="1",z'
    sender = rig.router.add_sender(name, ["e"])
    sender.trigger("e", None)
    fams = await rig.metrics()
    assert sample(fams, "sig_sender_triggers", "sig_sender_triggers_total", sender=name) == 1


def test_preview_is_short_json_text() -> None:
    assert preview({"a": b"\x01\x02"}) == '{"a": "0102"}'
    long = preview("x" * 10_000)
    assert len(long) == PREVIEW_CHARS and long.endswith("…")


# --- configuration ------------------------------------------------------------


def test_http_bind_and_config(tmp_path: Any) -> None:
    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_bind("[::1]:0") == ("::1", 0)
    for bad in ("8080", "127.0.0.1:", ":80", "127.0.0.1:99999", "host:x"):
        with pytest.raises(HttpBindError):
            parse_bind(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    conf = tmp_path / "sig.toml"
    conf.write_text('[http]\nlisten = "127.0.0.1:9100"\n')
    assert load_config(str(conf))["http"] == "127.0.0.1:9100"
    conf.write_text("[http]\nport = 9100\n")
    with pytest.raises(UsageError, match=r"\[http\]"):
        load_config(str(conf))


def test_a_non_loopback_address_logs_that_there_is_no_login(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="sig.routers.http"):
        warn_if_exposed("127.0.0.1", 8080)
        assert caplog.records == []
        warn_if_exposed("0.0.0.0", 8080)
    assert "no login" in caplog.text


async def test_sig_serve_rejects_a_bad_http_address() -> None:
    args = ["serve", "--host", "127.0.0.1", "--port", "0", "--no-timer", "--http", "nowhere"]
    proc = Proc([sys.executable, "-m", "sig", *args])
    assert proc.wait() == 2
    assert "expected HOST:PORT" in proc.stderr_text()


async def test_sig_serve_keeps_the_http_side_on_loopback_unless_anonymous_is_allowed() -> None:
    # The page has no login and acts as the gateway: beyond loopback it would be a way
    # past users and ACLs, so it needs the same explicit --allow-anonymous as the port.
    args = ["serve", "--host", "127.0.0.1", "--port", "0", "--no-timer", "--http", "0.0.0.0:0"]
    proc = Proc([sys.executable, "-m", "sig", *args])
    assert proc.wait() == 2
    assert "has no login" in proc.stderr_text() and "--allow-anonymous" in proc.stderr_text()
