"""``sig top``: the gateway's links and senders with their rates, redrawn in place.

Every ``--interval`` seconds it polls ``$gateway links`` and ``$gateway stats``
(the paged client calls) and ``$gateway senders``; a link's rates are the
deltas of its counters over the time between two polls. A sender's rate is
counted from the events themselves: ``sig top`` listens to every event (a
router-broadcast listener), since the gateway keeps no counter per sender.
Drawn with rich's Live view; ``--json`` prints one JSON object per poll instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from sig.logs import printable
from sig.protocol.constants import GATEWAY_SENDER
from sig.tools.cli._show import _client, _json_default

#: Counters of a link row that get a rate, and the column that shows it.
LINK_RATES = {
    "frames_in": "IN/s",
    "frames_out": "OUT/s",
    "bytes": "kB/s",
    "errors": "ERR/s",
    "dropped_events": "DROP/s",
}
GATEWAY_RATES = ("triggers", "events_out", "dropped_events")
ERROR_KEYS = ("crc_errors", "framing_errors", "oversize", "protocol_errors")
#: The router's own channel events: not triggered by the sender they name.
ROUTER_EVENTS = frozenset({"#connect", "#disconnect"})


@dataclass
class Poll:
    """What one poll saw: counters per link, per sender, the gateway's stats."""

    at: float
    links: dict[str, dict[str, Any]]
    senders: dict[str, dict[str, Any]]
    sender_events: dict[str, int]
    stats: dict[str, Any]


def _rate(now: float, before: float | None, dt: float) -> float | None:
    """Per second between two readings; a counter that went down restarted from 0."""
    if before is None or dt <= 0:
        return None
    delta = now - before if now >= before else now
    return round(delta / dt, 3)


def _counters(link: dict[str, Any]) -> dict[str, float]:
    out = {k: float(link.get(k, 0) or 0) for k in ("frames_in", "frames_out", "dropped_events")}
    out["bytes"] = float(link.get("bytes_in", 0) or 0) + float(link.get("bytes_out", 0) or 0)
    out["errors"] = float(sum(int(link.get(k, 0) or 0) for k in ERROR_KEYS))
    return out


@dataclass
class Frame:
    """Rates between the last two polls, ready to draw or print as JSON."""

    polls: int
    interval: float | None
    links: list[dict[str, Any]] = field(default_factory=list)
    senders: list[dict[str, Any]] = field(default_factory=list)
    gateway: dict[str, Any] = field(default_factory=dict)


def frame(prev: Poll | None, cur: Poll, polls: int) -> Frame:
    """The rates of ``cur`` against ``prev`` (None on the first poll: no rates yet)."""
    dt = cur.at - prev.at if prev is not None else None
    out = Frame(polls, None if dt is None else round(dt, 3))
    for name in sorted(cur.links):
        row = cur.links[name]
        now = _counters(row)
        before = _counters(prev.links[name]) if prev and name in prev.links else {}
        rates = {k: _rate(v, before.get(k), dt or 0) for k, v in now.items()}
        out.links.append(
            {
                "link": name,
                "state": row.get("state", "-"),
                "peer": row.get("peer"),
                "rates": rates,
            }
        )
    for name in sorted(cur.senders):
        count = cur.sender_events.get(name, 0)
        before_count = prev.sender_events.get(name, 0) if prev is not None else None
        out.senders.append(
            {
                "sender": name,
                "link": cur.senders[name].get("link", "-"),
                "events": count,
                "events_per_s": _rate(count, before_count, dt or 0),
            }
        )
    stats = cur.stats
    out.gateway = {
        "connections": stats.get("connections"),
        "max_connections": stats.get("max_connections"),
        "loop_lag_ms": stats.get("loop_lag_ms"),
        "max_loop_lag_ms": stats.get("max_loop_lag_ms"),
        "rates": {
            k: _rate(
                float(stats.get(k, 0) or 0),
                None if prev is None else float(prev.stats.get(k, 0) or 0),
                dt or 0,
            )
            for k in GATEWAY_RATES
        },
    }
    return out


def _fmt(rate: float | None, scale: float = 1.0) -> str:
    return "-" if rate is None else f"{rate / scale:.1f}"


def render(f: Frame, where: str) -> Any:
    """The rich renderable of a frame: a title line, the links, the senders.

    Every name is a ``Text`` of :func:`printable`, never markup: a peer named
    ``[blink]`` is shown as such.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    g = f.gateway
    rates = g["rates"]
    title = Text(
        f"sig top {where}  poll {f.polls}  tcp {g['connections']}/{g['max_connections']}"
        f"  loop lag {g['loop_lag_ms']} ms (max {g['max_loop_lag_ms']})\n"
        f"events/s: triggered {_fmt(rates['triggers'])}"
        f"  delivered {_fmt(rates['events_out'])}  dropped {_fmt(rates['dropped_events'])}"
    )
    links = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    links.add_column("LINK", overflow="fold", min_width=20, max_width=32)
    links.add_column("STATE", overflow="fold", max_width=11)
    links.add_column("PEER", overflow="fold", max_width=16)
    for column in LINK_RATES.values():
        links.add_column(column, justify="right", no_wrap=True)
    for row in f.links:
        r = row["rates"]
        links.add_row(
            Text(printable(row["link"])),
            Text(printable(row["state"])),
            Text(printable(row["peer"] or "-")),
            *(Text(_fmt(r[k], 1000.0 if k == "bytes" else 1.0)) for k in LINK_RATES),
        )
    senders = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    senders.add_column("SENDER", overflow="fold", min_width=16, max_width=32)
    senders.add_column("LINK", overflow="fold", min_width=20, max_width=32)
    senders.add_column("EVENTS/s", justify="right", no_wrap=True)
    senders.add_column("EVENTS", justify="right", no_wrap=True)
    for row in f.senders:
        senders.add_row(
            Text(printable(row["sender"])),
            Text(printable(row["link"])),
            Text(_fmt(row["events_per_s"])),
            Text(str(row["events"])),
        )
    return Group(title, Text(""), links, Text(""), senders)


def frame_json(f: Frame) -> str:
    """One line of ``sig top --json``: the frame, every string ASCII-escaped."""
    return json.dumps(
        {"time": round(time.time(), 3), "poll": f.polls, "interval": f.interval,
         "gateway": f.gateway, "links": f.links, "senders": f.senders},
        default=_json_default,
        ensure_ascii=True,
    )  # fmt: skip


async def _poll(client: Any, counts: dict[str, int], loop: asyncio.AbstractEventLoop) -> Poll:
    links = await client.list_links()
    senders = await client.list_senders()
    stats = await client.request(GATEWAY_SENDER, "stats")
    for gone in set(counts) - set(senders):  # bounded by the gateway's live senders
        del counts[gone]
    return Poll(loop.time(), {str(x["link"]): x for x in links}, senders, dict(counts), stats)


async def cmd_top(args: argparse.Namespace) -> int:
    """Poll every ``--interval`` s and redraw; ``--iterations N`` stops after N polls.

    Ctrl-C (SIGINT) or SIGTERM ends it cleanly (exit 0, the terminal restored).
    """
    loop = asyncio.get_running_loop()
    client = await _client(args, "sig-top")
    counts: dict[str, int] = {}

    def count(info: dict[str, Any], data: Any) -> None:
        if info["event"] not in ROUTER_EVENTS and not info.get("retained"):  # triggers only
            counts[info["sender"]] = counts.get(info["sender"], 0) + 1

    stop = asyncio.Event()
    for sig_no in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig_no, stop.set)
    where = f"{client.host}:{client.port}"
    try:
        await client.add_listener(count, None, None)
        if args.json:
            await _run(args, client, counts, stop, lambda f: print(frame_json(f), flush=True))
        else:
            from rich.console import Console
            from rich.live import Live

            console = Console()
            with Live(console=console, auto_refresh=False, vertical_overflow="ellipsis") as live:
                await _run(
                    args, client, counts, stop,
                    lambda f: live.update(render(f, where), refresh=True),
                )  # fmt: skip
    finally:
        await client.close()
    return 0


async def _run(
    args: argparse.Namespace, client: Any, counts: dict[str, int], stop: asyncio.Event, show: Any
) -> None:
    loop = asyncio.get_running_loop()
    prev: Poll | None = None
    polls = 0
    while not stop.is_set():
        cur = await _poll(client, counts, loop)
        polls += 1
        show(frame(prev, cur, polls))
        prev = cur
        if args.iterations and polls >= args.iterations:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.interval)
