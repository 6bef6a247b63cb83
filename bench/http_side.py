"""What the HTTP side costs the gateway: per event routed, and per scrape of /metrics.

Usage: ``python bench/http_side.py [--runs 5] [--count 20000] [--links 50]``

Per event: a local sender triggers ``count`` events (a small dict each) that
one real TCP client listens to, on a real ``ServerRouter``; the time of the
trigger loop (route + encode + queue to the link, then the flush) is measured
without the HTTP side, with it (its router listener: one CBOR decode, a
trigger count and a rate bucket per event), and with it and one status page
open (plus a JSON preview per event into the page's queue). The TCP client is
the real peer in the same run. Per scrape: ``GET /metrics`` with ``links`` TCP
clients connected, time per request and body size.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree's sig

import aiohttp
from _common import machine

from sig.routers.client import AsyncClientRouter
from sig.routers.gateway import ServerRouter
from sig.routers.http import HttpSide


class Counter:
    """The TCP client's listener: counts events, wakes the run at ``target``."""

    def __init__(self) -> None:
        self.got = 0
        self.target = 0
        self.done = asyncio.Event()

    def __call__(self, info: dict[str, Any], data: Any) -> None:
        self.got += 1
        if self.got == self.target:
            self.done.set()


async def listen(router: ServerRouter, client: AsyncClientRouter) -> Counter:
    counter = Counter()
    await client.add_listener(counter, "bench", "value")
    while not router.core.table.subscription_count():  # the LISTEN reached the gateway
        await asyncio.sleep(0.001)
    return counter


async def trigger_loop(router: ServerRouter, counter: Counter, count: int) -> float:
    """Seconds to route ``count`` events to the TCP client until it has them all."""
    sender = router.get_sender("bench") or router.add_sender("bench", ["value"])
    counter.got, counter.target = 0, count
    counter.done.clear()
    start = time.perf_counter()
    for i in range(count):
        sender.trigger("value", {"n": i, "v": 21.5})
        if i % 256 == 255:
            await asyncio.sleep(0)  # let the link flush, as a real sender's pace would
    await asyncio.wait_for(counter.done.wait(), 60)
    return time.perf_counter() - start


async def one_run(count: int, links: int) -> dict[str, float]:
    router = ServerRouter("127.0.0.1", 0)
    await router.start()
    client = AsyncClientRouter("127.0.0.1", router.port, name="bench-listener")
    await client.connect()
    counter = await listen(router, client)
    out: dict[str, float] = {}
    out["off"] = await trigger_loop(router, counter, count) / count * 1e6
    http = HttpSide(router, "127.0.0.1", 0)
    await http.start()
    out["on"] = await trigger_loop(router, counter, count) / count * 1e6
    async with aiohttp.ClientSession(base_url=http.url) as session:
        async with session.get("/api/events") as page:
            await page.content.readline()
            out["flood"] = await trigger_loop(router, counter, count) / count * 1e6
            http.live.queue_size = count + 1  # the next page sees every event
            for c in http.live.clients:
                c.size = count + 1
            out["page"] = await trigger_loop(router, counter, count) / count * 1e6
        extra = [AsyncClientRouter("127.0.0.1", router.port, name=f"c{i}") for i in range(links)]
        for c in extra:
            await c.connect()
        start = time.perf_counter()
        for _ in range(20):
            async with session.get("/metrics") as resp:
                body = await resp.read()
        out["scrape_ms"] = (time.perf_counter() - start) / 20 * 1000
        out["scrape_kib"] = len(body) / 1024
        for c in extra:
            await c.close()
    await client.close()
    await http.stop()
    await router.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--links", type=int, default=50)
    args = ap.parse_args(argv)
    print(f"machine: {machine()}")
    print(
        f"method: {args.count} events of a local sender to one TCP listener per case, "
        f"median (min-max) of {args.runs} runs; /metrics: 20 scrapes with {args.links + 1} "
        "TCP links"
    )
    runs = [asyncio.run(one_run(args.count, args.links)) for _ in range(args.runs)]

    def cell(key: str, fmt: str = "{:.2f}") -> str:
        values = [r[key] for r in runs]
        med = fmt.format(statistics.median(values))
        return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"

    print("| case | value |")
    print("|---|---|")
    rows = (
        ("HTTP side off, us per event", "off", "{:.2f}"),
        ("HTTP side on, no page open, us per event", "on", "{:.2f}"),
        ("HTTP side on, one page open (queue 256, a flood: mostly dropped), us per event",
         "flood", "{:.2f}"),
        ("HTTP side on, one page open that gets every event, us per event", "page", "{:.2f}"),
        ("GET /metrics, ms per scrape", "scrape_ms", "{:.2f}"),
        ("/metrics body, KiB", "scrape_kib", "{:.1f}"),
    )  # fmt: skip
    for label, key, fmt in rows:
        print(f"| {label} | {cell(key, fmt)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
