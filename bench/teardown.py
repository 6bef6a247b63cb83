"""Teardown cost of a link that holds N registrations, in the sans-I/O core.

``GatewayCore.detach`` runs inside one event-loop callback, so its duration is
the event-loop stall a disconnect causes. The script registers N senders (one
event each) on one link, or N listeners, with a second link listening to
``#disconnect`` of one sender and to one targeted event (so the match cache is
as full as it is in a real gateway), then times ``detach``.

With ``--tcp`` it does the same over loopback: a real gateway, one raw TCP
client that registers N senders and then closes its socket, and a ticker on
the gateway's event loop that records the longest gap between two ticks (the
event-loop stall the disconnect caused).

Run: ``python bench/teardown.py [--tcp] [N ...]`` (default 10000 20000 40000).
Limits on registrations per link are lifted for the measurement.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from _common import ROOT, header

sys.path.insert(0, str(ROOT))

from sig.core import gateway
from sig.core.gateway import GatewayCore
from sig.protocol import messages as w


class NullLink:
    """A link that accepts every frame and keeps none."""

    persistent = False
    dropped = 0  #: events refused (none: it takes every frame)

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, frame: bytes, droppable: bool = False, urgent: bool = False) -> bool:
        return True

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


def _core() -> GatewayCore:
    """A core with the per-link registration limits lifted (if it has them)."""
    limits = getattr(gateway, "Limits", None)
    if limits is None:  # a gateway from before the limits
        return GatewayCore("bench")
    big = 10**9
    return GatewayCore("bench", limits=limits(big, big, big))


def teardown(n: int, kind: str) -> tuple[float, float]:
    """Seconds ``detach`` takes for a link with ``n`` senders or listeners: (wall, CPU)."""
    core = _core()
    watcher = core.attach(NullLink("watcher"))
    core.receive(watcher, w.encode(w.Hello("watcher", 65535, 0)))
    core.receive(watcher, w.encode(w.Listen(1, "s0", "#disconnect")))
    core.receive(watcher, w.encode(w.Listen(2, "s1", "e")))
    victim = core.attach(NullLink("victim"))
    core.receive(victim, w.encode(w.Hello("victim", 65535, 0)))
    for i in range(n):
        if kind == "senders":
            msg: w.Message = w.RegisterSender(i + 1, f"s{i}", ((i + 1, "e"),))  # ids from 1
        else:
            msg = w.Listen(i + 1, f"s{i}", "e")
        core.receive(victim, w.encode(msg))
    start, cpu = time.perf_counter(), time.process_time()
    core.detach(victim)
    return time.perf_counter() - start, time.process_time() - cpu


async def tcp_stall(n: int) -> float:
    """Longest event-loop gap (s) while a TCP link with ``n`` senders goes away."""
    from sig.protocol.frame import FrameDecoder, encode_frame
    from sig.routers.gateway import ServerRouter

    limits = getattr(gateway, "Limits", None)
    kw: dict[str, Any] = {} if limits is None else {"limits": limits(10**9, 10**9, 10**9)}
    async with ServerRouter("127.0.0.1", 0, **kw) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        frames: list[w.Message] = [w.Hello("victim", 65535, 0)]
        frames += [w.RegisterSender(i + 1, f"s{i}", ((i + 1, "e"),)) for i in range(n)]
        writer.write(b"".join(encode_frame(w.encode(m)) for m in frames))
        decoder, last = FrameDecoder(), w.SenderRegistered(n)
        while not any(w.decode(b) == last for b in decoder.feed(await reader.read(1 << 20))):
            pass
        worst = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal worst
            prev = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0)
                now = time.perf_counter()
                worst = max(worst, now - prev)
                prev = now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        worst = 0.0
        writer.close()
        while gw.core.sessions:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        stop.set()
        await task
        return worst


def _fmt(samples: list[float]) -> str:
    ms = sorted(x * 1000 for x in samples)
    return f"{statistics.median(ms):.1f} ({ms[0]:.1f}-{ms[-1]:.1f})"


def main(argv: list[str]) -> int:
    tcp = "--tcp" in argv
    sizes = [int(a) for a in argv if a != "--tcp"] or [10_000, 20_000, 40_000]
    runs = 3
    header(
        "Teardown of a link with N registrations",
        [
            "over TCP: a raw client registers N senders, closes; longest event-loop gap"
            if tcp
            else "in-process GatewayCore.detach of a link with N senders or N listeners"
            " (wall time, and the process's CPU time, which other load does not inflate)",
            f"median (min-max) of {runs} runs, ms; per-link limits lifted",
        ],
    )
    if tcp:
        print("| senders on the TCP link | longest event-loop stall at disconnect |")
        print("|---:|---:|")
        for n in sizes:
            print(f"| {n} | {_fmt([asyncio.run(tcp_stall(n)) for _ in range(runs)])} |", flush=True)
        return 0
    print("| registrations on the link | senders: wall | CPU | listeners: wall | CPU |")
    print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        s = [teardown(n, "senders") for _ in range(runs)]
        lis = [teardown(n, "listeners") for _ in range(runs)]
        cells = [_fmt([x[i] for x in r]) for r in (s, lis) for i in (0, 1)]
        print(f"| {n} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
