"""The HTTP side of a gateway: ``/metrics``, ``/healthz``, the live status page.

It runs on aiohttp in the gateway's own event loop and reads the gateway's
state directly (no second connection, no copy of its counters).

Routes:

* ``GET /``: the status page (``static/index.html`` + ``app.js``, no CDN);
* ``GET /api/state``: the page's data as JSON (links, senders, stats, rates);
* ``GET /api/events``: Server-Sent Events, ``state`` every second and
  ``tail`` batches of live events (bounded per page, drops counted);
* ``POST /api/request``: ``{"sender", "method", "params", "timeout"}`` calls
  ``ServerRouter.request``; only with ``Content-Type: application/json`` and the
  ``X-Sig-Page: 1`` header (a cross-site form or fetch cannot send either
  without a CORS preflight, which this server never grants);
* ``GET /metrics``: Prometheus text format (see :mod:`._metrics`);
* ``GET /healthz``: 200 ``{"status": "ok"}`` when the event loop runs and the
  gateway's TCP listener is up, else 503.

Access control: none yet. Every request passes through :attr:`HttpSide.middlewares`,
so the admin login of the security issue is one middleware added to that list.
Binding to an address other than loopback logs a warning saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from sig.errors import RequestError, SigError
from sig.routers.http._live import LiveState, TailClient, _jsonable
from sig.routers.http._metrics import GatewayCollector, LoopLagMonitor, RequestMetrics

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: Largest body POST /api/request accepts (bytes).
MAX_REQUEST_BODY = 16 << 10
#: Requests from pages running at once (then 429).
MAX_CONCURRENT_REQUESTS = 8
#: Bounds of a page request's timeout (seconds); the default is the lower of 10 s
#: and the gateway's request timeout.
MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 60.0
#: Seconds between two ``state`` messages of the event stream.
STATE_INTERVAL = 1.0
#: Seconds an event stream waits after a write, so a flood goes out in batches.
TAIL_BATCH = 0.1
#: Rows of links / senders in one state message.
MAX_ROWS = 500
#: Seconds the aiohttp runner waits for handlers when the gateway stops.
SHUTDOWN_TIMEOUT = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class HttpBindError(SigError):
    """The HTTP address is malformed or cannot be bound."""


def parse_bind(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:8080"`` for IPv6) as (host, port); raises HttpBindError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise HttpBindError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, port: int) -> None:
    """Log a warning when the HTTP side listens beyond loopback: it has no login yet."""
    if not is_loopback(host):
        logger.warning(
            "HTTP status page on %s:%s has no login yet: anyone who can reach it can "
            "see every link and send requests as the gateway",
            host,
            port,
        )


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer forbids framing, sniffing and any script or style not served here."""
    response = await handler(request)
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


class HttpSide:
    """The gateway's HTTP server; ``await start()`` after the router's, ``stop()`` before."""

    def __init__(
        self,
        router: Any,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        tail_queue: int | None = None,
        max_pages: int | None = None,
    ) -> None:
        self.router = router
        self.host = host
        self.port = port
        live_args = {k: v for k, v in (("queue_size", tail_queue), ("max_clients", max_pages)) if v}
        self.live = LiveState(**live_args)
        #: Runs on every request, in order. The admin login goes here.
        self.middlewares: list[Any] = [security_headers]
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestMetrics(self.registry)
        gauges = getattr(router.core, "gauges", {})
        self.lag = None if "max_loop_lag_ms" in gauges else LoopLagMonitor()
        self.registry.register(
            GatewayCollector(router, lambda: self.live.triggers, self.live.metrics, self.lag)
        )
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and co.
        self._request_slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._runner: web.AppRunner | None = None
        self._listener: Any = None
        self._snapshot: tuple[float, str] = (-math.inf, "")

    # --- lifecycle --------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=self.middlewares, client_max_size=MAX_REQUEST_BODY)
        app.router.add_get("/", self.index)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/api/events", self.events)
        app.router.add_post("/api/request", self.request)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def start(self) -> None:
        """Bind and serve; raises HttpBindError if the address cannot be bound."""
        warn_if_exposed(self.host, self.port)
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise HttpBindError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self._runner = runner
        if runner.addresses:
            self.port = int(runner.addresses[0][1])
        self._listener = self.router.add_listener(self.live.on_event, None, None)
        self.router.core.request_observer = self.requests.observe
        if self.lag is not None:
            self.lag.start()
        logger.info("HTTP side on http://%s:%s/", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is None:
            return
        self.router.core.request_observer = None
        self.router.remove_listener(self._listener)
        self.live.close_all()
        if self.lag is not None:
            await self.lag.stop()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> HttpSide:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_shutdown(self, app: web.Application) -> None:
        self.live.close_all()  # event streams return now, not after shutdown_timeout

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # --- handlers ---------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        listening = _listening(self.router)
        body = {
            "status": "ok" if listening else "unavailable",
            "gateway": self.router.core.name,
            "tcp_listener": listening,
            "tcp_port": self.router.port,
        }
        return web.json_response(body, status=200 if listening else 503)

    async def state(self, request: web.Request) -> web.Response:
        return web.Response(text=self.snapshot(), content_type="application/json")

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: ``state`` every STATE_INTERVAL, ``tail`` as events come."""
        client = self.live.open_client()
        if client is None:
            raise web.HTTPServiceUnavailable(text="too many status pages open")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **SECURITY_HEADERS,
            }
        )
        try:
            await response.prepare(request)
            await self._stream(client, response)
        except ConnectionError:
            pass  # the page went away
        finally:
            self.live.close_client(client)
        return response

    async def _stream(self, client: TailClient, response: web.StreamResponse) -> None:
        loop = asyncio.get_running_loop()
        await response.write(_sse("state", self.snapshot()))
        next_state = loop.time() + STATE_INTERVAL
        while not client.closed:
            wait = next_state - loop.time()
            if wait > 0 and not client.queue:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(client.wake.wait(), wait)
            if client.closed:
                return
            entries = client.take()
            if entries:
                tail = {
                    "events": [
                        {"time": t, "sender": s, "event": e, "data": d} for t, s, e, d in entries
                    ],
                    "dropped": client.dropped,
                }
                await response.write(_sse("tail", json.dumps(tail)))
            if loop.time() >= next_state:
                await response.write(_sse("state", self.snapshot()))
                next_state = loop.time() + STATE_INTERVAL
            await asyncio.sleep(TAIL_BATCH)

    async def request(self, request: web.Request) -> web.Response:
        """POST /api/request: run one request and report its outcome as JSON."""
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="Content-Type must be application/json")
        if request.headers.get("X-Sig-Page") != "1":
            raise web.HTTPForbidden(text="missing header X-Sig-Page: 1")
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            raise web.HTTPBadRequest(text="body is not valid JSON") from None
        sender, method, params, timeout = self._request_args(body)
        if self._request_slots.locked():
            raise web.HTTPTooManyRequests(text="too many requests running")
        async with self._request_slots:
            try:
                result = await self.router.request(sender, method, params, timeout=timeout)
            except RequestError as exc:
                return _json(
                    {
                        "ok": False,
                        "error": type(exc).__name__,
                        "code": exc.code.name,
                        "message": str(exc),
                    }
                )
            except SigError as exc:
                return _json({"ok": False, "error": type(exc).__name__, "message": str(exc)})
        return _json({"ok": True, "result": result})

    def _request_args(self, body: Any) -> tuple[str, str, Any, float]:
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='expected {"sender": ..., "method": ..., "params": ...}')
        sender, method = body.get("sender"), body.get("method")
        if not isinstance(sender, str) or not sender or not isinstance(method, str) or not method:
            raise web.HTTPBadRequest(text="sender and method must be non-empty strings")
        default = min(10.0, float(self.router.core.request_timeout))
        timeout = body.get("timeout", default)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise web.HTTPBadRequest(text="timeout must be a number of seconds")
        if not math.isfinite(timeout):
            timeout = default
        return sender, method, body.get("params"), min(max(timeout, MIN_TIMEOUT), MAX_TIMEOUT)

    # --- the page's data ----------------------------------------------------

    def snapshot(self) -> str:
        """The page's state as JSON text, built at most once per half interval."""
        loop = asyncio.get_running_loop()
        built, text = self._snapshot
        if loop.time() - built < STATE_INTERVAL / 2:
            return text
        text = json.dumps(self._state(), default=_jsonable)
        self._snapshot = (loop.time(), text)
        return text

    def _state(self) -> dict[str, Any]:
        from sig.routers.http._metrics import gateway_stats

        core = self.router.core
        links = sorted(core.links(), key=lambda r: str(r.get("link", "")))
        triggers = self.live.triggers
        senders = [
            {
                "name": info.name,
                **info.announcement(),
                "link": getattr(getattr(info.owner, "link", None), "name", "local"),
                "triggers": triggers.get(info.name, 0),
            }
            for info in sorted(core.table.senders.values(), key=lambda i: i.name)[:MAX_ROWS]
        ]
        return {
            "gateway": core.name,
            "tcp_port": self.router.port,
            "links": links[:MAX_ROWS],
            "links_total": len(links),
            "senders": senders,
            "senders_total": len(core.table.senders),
            "stats": gateway_stats(core),
            "rates": self.live.rate_rows(),
            "tail": {"pages": len(self.live.clients), "dropped": self.live.dropped},
        }


def _sse(event: str, data: str) -> bytes:
    """One Server-Sent Event (``data`` is one line of JSON: no newline inside)."""
    return f"event: {event}\ndata: {data}\n\n".encode()


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(
        text=json.dumps(body, default=_jsonable),
        content_type="application/json",
    )


def _listening(router: Any) -> bool:
    """True if the gateway's TCP listener is up."""
    server = getattr(router, "_server", None)
    if server is None:
        return False
    is_serving = getattr(server, "is_serving", None)
    return bool(is_serving()) if callable(is_serving) else True
