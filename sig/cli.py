"""The ``sig`` command: run a gateway, or talk to one from the shell.

Every command prints one clear line and exits non-zero on failure:
1 when the gateway is unreachable or a request fails, 2 for bad usage or
a gateway that cannot start (port in use, bad address, bad config).

Everything printed that came from the network (names, counters, error
messages, log lines) goes through :func:`printable`, so a peer cannot move the
terminal's cursor, recolour it or forge an output line; ``--json`` output and
``sig listen`` are JSON with ``ensure_ascii``, which escapes the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from carriers.stream import DEFAULT_HIGH_WATER, DEFAULT_MAX_QUEUED, DEFAULT_STALL_TIMEOUT

from ._gateway import DEFAULT_HELLO_TIMEOUT, DEFAULT_TCP_KEEPALIVE_MS
from .errors import ConnectError, RequestError, SigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

logger = logging.getLogger("sig.cli")

DEFAULTS: dict[str, Any] = {
    "host": "0.0.0.0",
    "port": 3000,
    "name": "sig-gateway",
    "request_timeout": 10.0,
    "timer": True,
    "timer_name": "timer",
    "timer_event": "tick",
    "timer_interval": 5.0,
    "serial": [],
    "log_level": "info",
    "limits": None,  # sig.Limits from the config's [limits] table
    "discovery": True,
    "http": None,  # "HOST:PORT" of the status page, /metrics and /healthz; None: off
    # Connection and queue limits ([gateway] table; README, Configuration).
    # max_connections None: from RLIMIT_NOFILE.
    "max_connections": None,
    "hello_timeout": DEFAULT_HELLO_TIMEOUT,
    "tcp_keepalive": DEFAULT_TCP_KEEPALIVE_MS / 1000,
    "stall_timeout": DEFAULT_STALL_TIMEOUT,
    "high_water": DEFAULT_HIGH_WATER,
    "max_queued": DEFAULT_MAX_QUEUED,
}
#: Limits in [gateway] (and flags): key -> (type, smallest allowed value).
GATEWAY_LIMITS: dict[str, tuple[type, float]] = {
    "max_connections": (int, 1),
    "hello_timeout": (float, 0),
    "tcp_keepalive": (float, 0),
    "stall_timeout": (float, 0.01),
    "high_water": (int, 1),
    "max_queued": (int, 1),
}


class UsageError(SigError):
    """Bad command line or config file (exit code 2)."""


# --- terminal safety --------------------------------------------------------

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: Any) -> str:
    """``value`` as text a terminal shows as is: every non-printable character escaped.

    Control characters (ESC sequences, newlines, C1), format characters such as
    U+202E RIGHT-TO-LEFT OVERRIDE and line separators become ``\\n``, ``\\x1b``,
    ``\\u202e`` ...; a backslash is doubled, so an escape cannot be faked.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "\\" not in text:
        return text  # the common case, and the cheap one
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(
                f"\\x{code:02x}"
                if code < 0x100
                else f"\\u{code:04x}"
                if code < 0x10000
                else f"\\U{code:08x}"
            )
    return "".join(out)


class PrintableFormatter(logging.Formatter):
    """Log lines with :func:`printable` messages: a peer's text cannot forge a line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return "\n".join(printable(line) for line in super().formatException(ei).split("\n"))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(printable(line) for line in stack_info.split("\n"))


def _log_to_stderr(level: Any, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])


# --- configuration ----------------------------------------------------------


def load_config(path: str | None) -> dict[str, Any]:
    """Read a TOML config into flat settings (see examples/sig.toml)."""
    if path is None:
        return {}
    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path} is not valid TOML: {exc}") from exc
    out: dict[str, Any] = {}
    gateway = doc.get("gateway", {})
    for key in ("host", "port", "name", "request_timeout", "log_level", *GATEWAY_LIMITS):
        if key in gateway:
            out[key] = gateway[key]
    timer = doc.get("timer", {})
    for key, target in (
        ("enabled", "timer"),
        ("name", "timer_name"),
        ("event", "timer_event"),
        ("interval", "timer_interval"),
    ):
        if key in timer:
            out[target] = timer[key]
    discovery = doc.get("discovery", {})
    if "enabled" in discovery:
        if not isinstance(discovery["enabled"], bool):
            raise UsageError("config: [discovery] enabled must be true or false")
        out["discovery"] = discovery["enabled"]
    if "serial" in doc:
        if not isinstance(doc["serial"], list):
            raise UsageError("config: [[serial]] must be an array of tables")
        out["serial"] = doc["serial"]
    if "limits" in doc:
        out["limits"] = _limits(path, doc["limits"])
    http = doc.get("http", {})
    if not isinstance(http, dict) or set(http) - {"listen"}:
        raise UsageError('config: [http] takes one key, listen = "127.0.0.1:8080"')
    if http.get("listen"):
        out["http"] = str(http["listen"])
    unknown = set(doc) - {"gateway", "timer", "serial", "limits", "discovery", "http"}
    if unknown:
        raise UsageError(f"config {path}: unknown section(s) {', '.join(sorted(unknown))}")
    return out


def _limits(path: str, table: Any) -> Any:
    """``[limits]`` of the config as a sig.Limits (per-link limits, PROTOCOL.md section 4)."""
    from dataclasses import fields

    from ._gateway import Limits

    known = {f.name for f in fields(Limits)}
    if not isinstance(table, dict) or not set(table) <= known:
        raise UsageError(f"config {path}: [limits] takes only {', '.join(sorted(known))}")
    for key, value in table.items():
        if type(value) is not int or value < 1:
            raise UsageError(f"config {path}: limits.{key} must be an integer >= 1")
    return Limits(**table)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the config file, then command-line flags (flags win)."""
    merged = dict(DEFAULTS)
    merged.update(load_config(args.config))
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None and value != []:
            merged[key] = value
    if merged["timer_interval"] is not None and float(merged["timer_interval"]) <= 0:
        raise UsageError("--timer-interval must be positive")
    for key, (kind, least) in GATEWAY_LIMITS.items():
        value = merged[key]
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{flag} / {key} must be a number, not {value!r}")
        if kind is int and value != int(value):
            raise UsageError(f"{flag} / {key} must be a whole number, not {value!r}")
        if value < least:
            raise UsageError(f"{flag} / {key} must be at least {least:g}, not {value!r}")
        merged[key] = kind(value)
    return merged


# --- sig serve --------------------------------------------------------------


async def serve(conf: dict[str, Any], ready: Any = None) -> int:
    from .server import FDS_PER_SERIAL_PORT, ServerRouter, default_max_connections

    if conf["serial"]:
        from .serial_links import SerialSpecError, parse_specs

        try:
            parse_specs(conf["serial"])  # a bad spec is reported before anything opens
        except SerialSpecError as exc:
            print(f"sig serve: {exc}", file=sys.stderr)
            return 2
    max_connections = conf["max_connections"] or default_max_connections(
        FDS_PER_SERIAL_PORT * len(conf["serial"])
    )
    router = ServerRouter(
        conf["host"],
        int(conf["port"]),
        name=conf["name"],
        request_timeout=float(conf["request_timeout"]),
        limits=conf["limits"],
        max_connections=max_connections,
        hello_timeout=conf["hello_timeout"],
        tcp_keepalive=conf["tcp_keepalive"],
        stall_timeout=conf["stall_timeout"],
        high_water=conf["high_water"],
        max_queued=conf["max_queued"],
    )
    try:
        await router.start()
    except ConnectError as exc:
        print(f"sig serve: cannot listen on {conf['host']}:{conf['port']}: {exc}", file=sys.stderr)
        return 2
    http = await _start_http(router, conf["http"])
    if http is False:
        await router.stop()
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig_no in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig_no, stop.set)
    if conf["serial"]:
        from .serial_links import open_serial_links

        await open_serial_links(router, conf["serial"])
    if conf["timer"]:
        router.spawn(
            demo_timer(
                router, conf["timer_name"], conf["timer_event"], float(conf["timer_interval"])
            ),
            "sig-demo-timer",
        )
    advertiser = None
    if conf["discovery"]:
        from ._discovery import Advertiser

        advertiser = Advertiser(conf["name"], router.port, router.listen_addresses())
        await advertiser.start()  # never raises: one log line when it cannot
    else:
        logger.info("discovery: off (--no-discovery or [discovery] enabled = false)")
    print(f"sig gateway {conf['name']!r} listening on {conf['host']}:{router.port}", flush=True)
    if http:
        print(f"sig http on {http.url} (status page, /metrics, /healthz)", flush=True)
    await stop.wait()
    logger.info("shutting down")
    if http:
        await http.stop()
    if advertiser is not None:
        await advertiser.stop()
    await router.stop()
    return 0


async def _start_http(router: Any, bind: str | None) -> Any:
    """The HTTP side on ``bind`` ("HOST:PORT"), None when off, False if it cannot start."""
    if not bind:
        return None
    from .http import HttpBindError, HttpSide, parse_bind

    try:
        host, port = parse_bind(bind)
        http = HttpSide(router, host, port)
        await http.start()
    except HttpBindError as exc:
        print(f"sig serve: {exc}", file=sys.stderr)
        return False
    return http


async def demo_timer(router: Any, name: str, event: str, interval: float) -> None:
    """The seed's demo sender: ``timer`` triggers ``tick`` with a count every interval."""
    ticks = 0
    sender = router.add_sender(name, [event], {"get_ticks": lambda params: ticks})
    while True:
        await asyncio.sleep(interval)
        ticks += 1
        sender.trigger(event, ticks)


# --- client commands --------------------------------------------------------


async def _client(args: argparse.Namespace, name: str) -> Any:
    from .client import AsyncClientRouter

    client = AsyncClientRouter(
        None if getattr(args, "discover", False) else args.host,
        args.port,
        name=name,
        auto_reconnect=False,
        connect_timeout=args.timeout,
        request_timeout=args.timeout,
    )
    await client.connect()
    return client


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return repr(value)


async def cmd_listen(args: argparse.Namespace) -> int:
    client = await _client(args, "sig-listen")
    client.auto_reconnect = True  # once reachable, survive gateway restarts
    done = asyncio.Event()
    count = 0

    def show(info: dict[str, Any], data: Any) -> None:
        nonlocal count
        line = {
            "time": round(time.time(), 6),
            "sender": info["sender"],
            "event": info["event"],
            "data": data,
        }
        # ensure_ascii: control and non-ASCII characters of names and data as \uXXXX
        print(json.dumps(line, default=_json_default, ensure_ascii=True), flush=True)
        count += 1
        if args.count and count >= args.count:
            done.set()

    await client.add_listener(show, args.sender, args.event)
    loop = asyncio.get_running_loop()
    for sig_no in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig_no, done.set)
    await done.wait()
    await client.close()
    return 0


async def cmd_send(args: argparse.Namespace) -> int:
    data = _parse_json(args.data)
    client = await _client(args, "sig-send")
    try:
        sender = await client.add_sender(args.sender, [args.event])
        sender.trigger(args.event, data)
    finally:
        await client.close()
    return 0


async def cmd_request(args: argparse.Namespace) -> int:
    params = _parse_json(args.params)
    client = await _client(args, "sig-request")
    try:
        result = await client.request(args.sender, args.method, params, timeout=args.timeout)
    finally:
        await client.close()
    print(json.dumps(result, default=_json_default, ensure_ascii=True))
    return 0


async def cmd_senders(args: argparse.Namespace) -> int:
    client = await _client(args, "sig-senders")
    try:
        senders = await client.list_senders()
    finally:
        await client.close()
    if args.json:
        print(json.dumps(senders, indent=1, default=_json_default, ensure_ascii=True))
    elif not senders:
        print("no senders connected")
    else:
        shown = {name: printable(name) for name in senders}
        width = max(len(n) for n in shown.values())
        for name in sorted(senders):
            info = senders[name]
            events = ", ".join(printable(e) for e in info["events"]) or "-"
            requests = ", ".join(printable(m) for m in info["requests"]) or "-"
            print(
                f"{shown[name]:<{width}}  events: {events}"
                f"  requests: {requests}  link: {printable(info['link'])}"
            )
    return 0


async def cmd_links(args: argparse.Namespace) -> int:
    client = await _client(args, "sig-links")
    try:
        links = await client.list_links()
        stats = await client.request("$gateway", "stats")
    finally:
        await client.close()
    if args.json:
        print(json.dumps(links, indent=1, default=_json_default, ensure_ascii=True))
        return 0
    for link in sorted(links, key=lambda x: str(x["link"])):
        counters = " ".join(
            f"{printable(k)}={_field(v)}"
            for k, v in link.items()
            if k not in ("link", "state", "peer", "senders")
        )
        senders = ",".join(printable(s) for s in link["senders"]) or "-"
        print(
            f"{printable(link['link'])}  {printable(link['state'])}  "
            f"peer={printable(link['peer'] or '-')}  senders={senders}  {counters}"
        )
    print(printable(links_footer(stats)))  # figures from the network, like the rest
    return 0


def _field(value: Any) -> str:
    """One ``sig links`` value: ``reserved`` as ``name(12.0s),...``, the rest as text."""
    if isinstance(value, dict):
        return ",".join(f"{printable(k)}({v}s)" for k, v in value.items()) or "-"
    return printable(value)


def links_footer(stats: dict[str, Any]) -> str:
    """One line under ``sig links``: connections, event-loop lag, why links closed."""
    closed = " ".join(
        f"{k[len('closed_') :]}={v}" for k, v in stats.items() if k.startswith("closed_") and v
    )
    return (
        f"gateway: {stats.get('connections', '?')}/{stats.get('max_connections', '?')} tcp"
        f" connections  loop lag {stats.get('loop_lag_ms', '?')} ms"
        f" (max {stats.get('max_loop_lag_ms', '?')} ms)"
        f"  closed: {closed or '-'}  refused={stats.get('refused_connections', 0)}"
        f"  accept_errors={stats.get('accept_errors', 0)}"
        f"  discarded_frames={stats.get('discarded_frames', 0)}"
    )


def _parse_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"not valid JSON: {text!r} ({exc.msg})") from exc


# --- argument parsing -------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sig", description="Run a sig gateway, or talk to one from the shell."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_p = sub.add_parser("serve", help="run the gateway (TCP, serial ports, demo timer)")
    serve_p.add_argument("--config", help="TOML config file; flags win over it")
    serve_p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve_p.add_argument("--port", type=int, help="TCP port (default 3000)")
    serve_p.add_argument("--name", help="gateway name sent to peers")
    serve_p.add_argument("--request-timeout", type=float, help="seconds (default 10)")
    serve_p.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="PATH[:BAUD]",
        help="serial port to open (repeatable; default baud 115200)",
    )
    serve_p.add_argument("--timer-name", help="demo sender name (default timer)")
    serve_p.add_argument("--timer-event", help="demo event name (default tick)")
    serve_p.add_argument("--timer-interval", type=float, help="seconds between ticks (default 5)")
    serve_p.add_argument(
        "--no-timer",
        dest="timer",
        action="store_const",
        const=False,
        help="do not run the demo sender",
    )
    serve_p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve_p.add_argument(
        "--no-discovery",
        dest="discovery",
        action="store_const",
        const=False,
        help="do not advertise the gateway on the LAN (mDNS _sig._tcp)",
    )
    serve_p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the status page, /metrics and /healthz there (default: off)",
    )
    serve_p.add_argument(
        "--max-connections",
        type=int,
        help="TCP connections at most (default: RLIMIT_NOFILE minus a reserve)",
    )
    serve_p.add_argument(
        "--hello-timeout", type=float, help="seconds a TCP peer has to send HELLO (default 10)"
    )
    serve_p.add_argument(
        "--tcp-keepalive",
        type=float,
        help="keepalive (s) for TCP peers that ask for none; 0 = none (default 10)",
    )
    serve_p.add_argument(
        "--stall-timeout",
        type=float,
        help="seconds a link may take nothing of its queue before it is closed (default 30)",
    )
    serve_p.add_argument(
        "--high-water", type=int, help="bytes queued to a link before its events drop (1 MiB)"
    )
    serve_p.add_argument(
        "--max-queued",
        type=int,
        help="bytes queued to a link before the gateway stops reading it (1.25 MiB)",
    )

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=3000, help="gateway port (default 3000)")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
        return p

    listen_p = client_parser("listen", "print one JSON line per event")
    listen_p.add_argument(
        "--discover",
        action="store_true",
        help="connect to the first gateway found on the LAN (mDNS) instead of --host/--port",
    )
    listen_p.add_argument("--sender", help="only this sender (default: any)")
    listen_p.add_argument("--event", help="only this event (default: any)")
    listen_p.add_argument("--count", type=int, default=0, help="exit after N events")

    send_p = client_parser("send", "register SENDER for a moment and trigger EVENT once")
    send_p.add_argument("sender")
    send_p.add_argument("event")
    send_p.add_argument("data", nargs="?", help="JSON data (default: none)")

    request_p = client_parser("request", "call METHOD of SENDER and print the JSON result")
    request_p.add_argument("sender")
    request_p.add_argument("method")
    request_p.add_argument("params", nargs="?", help="JSON params (default: none)")

    senders_p = client_parser("senders", "list connected senders")
    senders_p.add_argument("--json", action="store_true")
    links_p = client_parser("links", "list the gateway's links with their counters")
    links_p.add_argument("--json", action="store_true")

    sim_p = sub.add_parser("device-sim", help="emulate a UART device (see PROTOCOL.md)")
    sim_p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


COMMANDS = {
    "listen": cmd_listen,
    "send": cmd_send,
    "request": cmd_request,
    "senders": cmd_senders,
    "links": cmd_links,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["device-sim"]:  # argparse's REMAINDER drops a leading --option
        from .device_sim import main as sim_main

        return int(sim_main(argv[1:]))
    args = build_parser().parse_args(argv)
    command = args.command
    try:
        if command == "serve":
            conf = settings(args)
            _log_to_stderr(
                str(conf["log_level"]).upper(),
                "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
            )
            return asyncio.run(serve(conf))
        if command == "device-sim":
            from .device_sim import main as sim_main

            return int(sim_main(args.rest))
        _log_to_stderr(logging.WARNING, "sig %(levelname)s: %(message)s")
        return asyncio.run(COMMANDS[command](args))
    except UsageError as exc:
        print(f"sig {command}: {printable(exc)}", file=sys.stderr)
        return 2
    except ConnectError as exc:
        where = "on the LAN" if getattr(args, "discover", False) else f"at {args.host}:{args.port}"
        print(f"sig {command}: cannot reach the gateway {where}: {printable(exc)}", file=sys.stderr)
        return 1
    except RequestError as exc:  # the message is the handler's or gateway's text
        print(f"sig {command}: {type(exc).__name__}: {printable(exc)}", file=sys.stderr)
        return 1
    except SigError as exc:
        print(f"sig {command}: {type(exc).__name__}: {printable(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
