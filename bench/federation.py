"""What the MQTT bridge adds: gateway A -> Mosquitto -> gateway B against A alone.

    python bench/federation.py                 # 3 runs
    python bench/federation.py --runs 5 --count 20000 --latency-count 1000

One private Mosquitto on a free loopback port and two ``sig serve --mqtt``
child processes, A and B, joined through it. AsyncClientRouter clients in
this process: a sender on A; its listener on A (``local``, the direct path)
or on B (``federated``: A's bridge publishes, the broker forwards, B's bridge
triggers it on B). Both modes run in each run, on the same gateways.

  fan-in   one sender -> one listener, --count 16-byte events, events/s
           (deliveries / (last delivery - first send)); the sender paces on its
           link's write buffer, and on what the listener has got (at most
           --window events in flight), so that nothing is dropped on the way
  latency  one event at a time, trigger to callback (the same process's
           clock), p50 and p99 over --latency-count events
  request  sequential round trips to a handler of the sender on A, p50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    MOSQUITTO_HINT,
    Mosquitto,
    find_mosquitto,
    header,
    percentile,
    sig_serve,
    summary,
    table,
)

import sig

PAYLOAD = b"x" * 16


def gateway(url: str, gid: str) -> contextlib.AbstractContextManager[int]:
    """``sig serve --mqtt URL --mqtt-id GID`` on a free loopback port; yields the port."""
    return sig_serve("--no-timer", "--mqtt", url, "--mqtt-id", gid)


class Sink:
    """The listener's callback: counts, timestamps the last delivery, wakes waiters."""

    def __init__(self) -> None:
        self.got = 0
        self.last = 0.0
        self.changed = asyncio.Event()

    def __call__(self, info: Any, data: Any) -> None:
        if data == "warm":
            self.changed.set()
            return
        self.got += 1
        self.last = time.perf_counter()
        self.changed.set()

    async def wait(self, least: int, timeout: float = 30) -> None:
        deadline = time.perf_counter() + timeout
        while self.got < least and time.perf_counter() < deadline:
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self.changed.wait(), max(0.0, deadline - time.perf_counter())
                )


async def warm(source: Any, sink: Sink) -> None:
    """Until the path carries events (B follows the listen: a round of the bridges' ticks)."""
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        sink.changed.clear()
        source.trigger("e", "warm")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(sink.changed.wait(), 0.05)
            return
    raise RuntimeError("the path never carried an event")


async def measure(sender_port: int, listener_port: int, args: argparse.Namespace,
                  name: str) -> dict[str, float]:  # fmt: skip
    sender = sig.AsyncClientRouter(port=sender_port, name=f"{name}-s")
    listener = sig.AsyncClientRouter(port=listener_port, name=f"{name}-l")
    await sender.connect()
    await listener.connect()
    sink = Sink()
    await listener.add_listener(sink, name, "e")
    source = await sender.add_sender(name, ["e"], {"echo": lambda p: p})
    await warm(source, sink)
    # latency: one at a time
    lat = []
    for i in range(args.latency_count):
        start = time.perf_counter()
        source.trigger("e", i)
        await sink.wait(i + 1)
        lat.append(time.perf_counter() - start)
    # fan-in: paced on the write buffer and on a window of events in flight
    base = sink.got
    start = time.perf_counter()
    for i in range(args.count):
        source.trigger("e", PAYLOAD)
        link = sender._link
        while link is not None and link.write_buffer_size() > 256 << 10:
            await asyncio.sleep(0)
        if i - (sink.got - base) > args.window:
            await sink.wait(base + i - args.window // 2, 10)
    await sink.wait(base + args.count, 60)
    got = sink.got - base
    rtts = []
    requester = listener
    for _ in range(args.requests):
        t0 = time.perf_counter()
        await requester.request(name, "echo", 1)
        rtts.append(time.perf_counter() - t0)
    await sender.close()
    await listener.close()
    lat.sort()
    return {
        "events_s": got / max(sink.last - start, 1e-9),
        "lat50_us": percentile(lat, 50) * 1e6,
        "lat99_us": percentile(lat, 99) * 1e6,
        "request_us": percentile(sorted(rtts), 50) * 1e6,
        "lost": args.count - got,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=20_000, help="fan-in events per run and mode")
    ap.add_argument("--latency-count", type=int, default=500, help="one-at-a-time events")
    ap.add_argument("--requests", type=int, default=500, help="round trips per run and mode")
    ap.add_argument("--window", type=int, default=2000, help="fan-in events in flight at most")
    args = ap.parse_args()
    binary = find_mosquitto()
    if binary is None:
        print(MOSQUITTO_HINT, file=sys.stderr)
        return 2
    header(
        "MQTT bridge: A -> Mosquitto -> B against the direct path on A (same run)",
        [
            f"one mosquitto, two sig serve --mqtt child processes; clients in one process;"
            f" {args.runs} runs, median (min-max)",
            f"{args.count} 16-byte events fan-in 1->1 (at most {args.window} in flight),"
            f" {args.latency_count} one-at-a-time events, {args.requests} round trips",
        ],
    )
    results: dict[str, list[dict[str, float]]] = {"local": [], "federated": []}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(binary, Path(tmp))
        try:
            url = f"mqtt://127.0.0.1:{broker.port}"
            with gateway(url, "A") as a, gateway(url, "B") as b:
                for run in range(args.runs):
                    results["local"].append(asyncio.run(measure(a, a, args, f"l{run}")))
                    results["federated"].append(asyncio.run(measure(a, b, args, f"f{run}")))
        finally:
            broker.stop()
    rows = []
    for key, label in (
        ("events_s", "fan-in 1->1, events/s"),
        ("lat50_us", "event latency p50, us"),
        ("lat99_us", "event latency p99, us"),
        ("request_us", "request p50, us"),
    ):
        local = [r[key] for r in results["local"]]
        fed = [r[key] for r in results["federated"]]
        ratio = sorted(f / max(x, 1e-9) for f, x in zip(fed, local, strict=True))[len(fed) // 2]
        rows.append([label, summary(local), summary(fed), f"{ratio:.2f}"])
    print(table(["", "local (A only)", "federated (A -> broker -> B)", "fed / local"], rows))
    lost = {m: sum(int(r["lost"]) for r in rs) for m, rs in results.items()}
    print(f"\nlost: local={lost['local']} federated={lost['federated']}")
    return 0 if not any(lost.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
