"""The client commands: ``sig listen``, ``send``, ``request``, ``senders``, ``links``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sig.logs import printable
from sig.protocol.constants import GATEWAY_SENDER
from sig.tools.cli._serve import UsageError

# --- client commands --------------------------------------------------------


#: ``sig listen --timeout`` ran out before ``--count`` events arrived.
EXIT_TIMEOUT = 3
#: Connect and request timeout of the client commands without ``--timeout``.
DEFAULT_TIMEOUT = 5.0


async def _client(args: argparse.Namespace, name: str) -> Any:
    from sig.routers.client import AsyncClientRouter

    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT
    if args.command == "listen":  # --timeout bounds the whole listen; connecting takes part
        timeout = min(timeout, DEFAULT_TIMEOUT)
    user, password = login(args)
    client = AsyncClientRouter(
        None if getattr(args, "discover", False) else args.host,
        args.port,
        name=name,
        auto_reconnect=False,
        connect_timeout=timeout,
        request_timeout=timeout,
        username=user,
        password=password,
        tls=bool(getattr(args, "tls", False)),
        cafile=getattr(args, "cafile", None),
    )
    await client.connect()
    return client


def login(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``--user`` and its password (``--password-stdin``, $SIG_PASSWORD or a prompt)."""
    from sig.tools.cli._passwd import client_password

    user = getattr(args, "user", None)
    if user is None:
        if getattr(args, "password_stdin", False):
            raise UsageError("--password-stdin needs --user")
        return None, None
    return user, client_password(user, args.password_stdin)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return repr(value)


def print_json(value: Any) -> None:
    """``value`` for scripts: indented JSON, every non-ASCII or control character escaped."""
    print(json.dumps(value, indent=1, default=_json_default, ensure_ascii=True))


async def cmd_listen(args: argparse.Namespace) -> int:
    """One JSON line per event; 0 after ``--count`` events, 3 when ``--timeout`` ends first."""
    loop = asyncio.get_running_loop()
    deadline = None if args.timeout is None else loop.time() + args.timeout
    client = await _client(args, "sig-listen")
    client.auto_reconnect = True  # once reachable, survive gateway restarts
    done = asyncio.Event()
    count = 0

    def show(info: dict[str, Any], data: Any) -> None:
        nonlocal count
        if done.is_set():
            return
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
    for sig_no in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig_no, done.set)
    timed_out = False
    try:
        if deadline is None:
            await done.wait()
        else:
            await asyncio.wait_for(done.wait(), max(0.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        timed_out = True
    finally:
        await client.close()
    if timed_out and args.count:
        print(
            f"sig listen: timed out after {args.timeout:g} s with {count} of {args.count} events",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    return 0


async def cmd_send(args: argparse.Namespace) -> int:
    data = _parse_json(args.data)
    client = await _client(args, "sig-send")
    try:
        sender = await client.add_sender(args.sender, [args.event])
        sender.trigger(args.event, data)
        await client.remove_sender(sender)  # "for a moment": a login's claim on the name goes too
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
    # JSON with or without --json (one line without: the shape scripts already read)
    print(json.dumps(result, default=_json_default, ensure_ascii=True))
    return 0


# --- tables -----------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[str] = ()) -> str:
    """Aligned columns, two spaces apart; ``right`` columns (numbers) flush right.

    Cells are shown as given: the callers pass text from the network through
    :func:`printable` (once: escaping twice would double the backslashes).
    The last column is not padded, so a long note does not push trailing blanks.
    """
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    out = []
    for row in [list(header), *cells]:
        parts = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            if header[i] in right:
                parts.append(cell.rjust(width))
            elif i == len(row) - 1:
                parts.append(cell)
            else:
                parts.append(cell.ljust(width))
        out.append("  ".join(parts).rstrip())
    return "\n".join(out)


SENDER_COLUMNS = ("SENDER", "LINK", "EVENTS", "REQUESTS")


def senders_table(senders: dict[str, dict[str, Any]]) -> str:
    """``sig senders``: one row per sender, by name; ``*`` in REQUESTS is a default handler."""
    rows = [
        (
            printable(name),
            printable(info.get("link", "-")),
            ",".join(printable(e) for e in info.get("events", [])) or "-",
            _requests_cell(info),
        )
        for name, info in sorted(senders.items())
    ]
    return table(SENDER_COLUMNS, rows)


def _requests_cell(info: dict[str, Any]) -> str:
    """The REQUESTS cell: the named methods, then ``*`` for a default handler."""
    methods = [printable(m) for m in info.get("requests", [])]
    if info.get("default"):
        methods.append("*")  # answers any method
    return ",".join(methods) or "-"


async def cmd_senders(args: argparse.Namespace) -> int:
    client = await _client(args, "sig-senders")
    try:
        senders = await client.list_senders()
    finally:
        await client.close()
    if args.json:
        print_json(senders)
    elif not senders:
        print("no senders connected")
    else:
        print(senders_table(senders))
    return 0


#: ``sig links`` columns: what a person looks for first, then the counters.
LINK_COLUMNS = ("LINK", "STATE", "PEER", "SENDERS", "IN", "OUT", "ERR", "DROP", "NOTES")
LINK_NUMBERS = ("IN", "OUT", "ERR", "DROP")
#: Frames lost on the way in: line noise and refused messages (summed in ERR).
ERROR_KEYS = ("crc_errors", "framing_errors", "oversize", "protocol_errors")
#: Fields a column shows; the rest go to NOTES (when notable, or all with --all).
SHOWN = frozenset({"link", "state", "peer", "senders", "frames_in", "frames_out",
                   "dropped_events"})  # fmt: skip
#: NOTES without --all: these when they are not zero, empty or "open".
NOTABLE = ("port_state", "reopens", "failed_opens", "last_error", "closed_for_s",
           *ERROR_KEYS, "dropped_too_large", "discarded_frames", "reading_paused",
           "reserved", "tls", "peer_subject",
           # the reliable UART mode (PROTOCOL.md section 5)
           "reliable", "retransmits", "duplicates", "out_of_order", "bad_acks",
           "reliable_failures", "reliable_dropped")  # fmt: skip


def _field(value: Any) -> str:
    """One ``sig links`` value: ``reserved`` as ``name(12.0s),...``, the rest as text."""
    if isinstance(value, dict):
        return ",".join(f"{printable(k)}({v}s)" for k, v in value.items()) or "-"
    return printable(value)


def _notes(link: dict[str, Any], every: bool) -> str:
    keys = [k for k in link if k not in SHOWN] if every else [k for k in NOTABLE if k in link]
    return " ".join(
        f"{printable(k)}={_field(link[k])}"
        for k in keys
        if every or link[k] not in (0, False, "", None, "open", {})
    )


def links_table(links: list[dict[str, Any]], every: bool = False) -> str:
    """``sig links``: one row per link, by name; ``every``: all other fields in NOTES."""
    rows = [
        (
            printable(link["link"]),
            printable(link.get("state", "-")),
            printable(link.get("peer") or "-"),
            ",".join(printable(s) for s in link.get("senders", [])) or "-",
            printable(link.get("frames_in", "-")),
            printable(link.get("frames_out", "-")),
            sum(int(link.get(k, 0)) for k in ERROR_KEYS),
            printable(link.get("dropped_events", 0)),
            _notes(link, every),
        )
        for link in sorted(links, key=lambda x: str(x["link"]))
    ]
    return table(LINK_COLUMNS, rows, LINK_NUMBERS)


async def cmd_links(args: argparse.Namespace) -> int:
    client = await _client(args, "sig-links")
    try:
        links = await client.list_links()
        stats = await client.request(GATEWAY_SENDER, "stats")
    finally:
        await client.close()
    if args.json:
        print_json(links)  # the shape scripts read: the list of link rows
        return 0
    print(links_table(links, args.all))
    print(printable(links_footer(stats)))  # figures from the network, like the rest
    return 0


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
