"""Scale and memory: the gateway with 1,000 TCP clients and 10,000 listener registrations.

    python bench/scale.py                  # 3 runs
    python bench/scale.py --clients 1000 --per-client 10 --runs 3

Part 1 (real processes, loopback): a gateway process (``ServerRouter``) and this
script as 1,000 asyncio clients (``AsyncClientRouter``), each registering
``--per-client`` listeners on (sender, event) keys that nothing triggers. The
table shows the gateway's RSS before and after, its CPU time for the set-up
and while idle, and its CPU time per trigger of an event that matches none of
the registrations and then 100 that match (100 clients listen to it).
RLIMIT_NOFILE is raised to what this needs (both processes hold one socket
per client).

Part 2 (in-process, sans-I/O): ``GatewayCore.receive`` of one TRIGGER with
fake links, with 0 registrations, 10,000 that do not match, and 100 that do:
the first two must cost the same.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from _common import ROOT, Child, cpu_seconds, header, raise_nofile, rss_kib, summary, table

sys.path.insert(0, str(ROOT))

from sig.core.gateway import GatewayCore
from sig.protocol import messages as w
from sig.protocol.data import pack
from sig.routers.client import AsyncClientRouter

PAYLOAD = bytes(range(16))


async def trigger_cost(port: int, gw_pid: int, n: int) -> float:
    """Gateway CPU microseconds per trigger of ("hot", "tick") over TCP."""
    async with AsyncClientRouter("127.0.0.1", port, keepalive=0, name="hot") as client:
        sender = await client.add_sender("hot", ["tick"])
        signal = sender.get_signal("tick")
        # a request round trip makes sure the gateway has handled what came before
        await client.request("$gateway", "stats")
        cpu0 = cpu_seconds(gw_pid)
        for i in range(n):
            signal.trigger(PAYLOAD)
            if i % 64 == 63:
                await asyncio.sleep(0)
                link = client._link
                while link is not None and link.write_buffer_size() > 65536:
                    await asyncio.sleep(0.0005)
        await client.request("$gateway", "stats")
        cpu = cpu_seconds(gw_pid) - cpu0
        await client.remove_sender("hot")
    return cpu / n * 1e6


async def one_run(args: argparse.Namespace) -> dict[str, float]:
    gw = Child("sig-gateway")
    clients: list[AsyncClientRouter] = []
    try:
        port = int(gw.expect("READY"))
        await asyncio.sleep(0.2)
        out: dict[str, float] = {"rss0_mib": rss_kib(gw.pid) / 1024}
        out["trig_empty_us"] = await trigger_cost(port, gw.pid, args.triggers)
        cpu0 = cpu_seconds(gw.pid)
        t0 = time.monotonic()

        async def start(i: int) -> AsyncClientRouter:
            c = AsyncClientRouter("127.0.0.1", port, keepalive=0, name=f"c{i}")
            await c.connect()
            for j in range(args.per_client):
                await c.add_listener(_noop, f"dev{i}", f"ev{j}")
            return c

        for base in range(0, args.clients, 100):
            batch = range(base, min(args.clients, base + 100))
            clients += await asyncio.gather(*(start(i) for i in batch))
        out["setup_s"] = time.monotonic() - t0
        out["setup_cpu_s"] = cpu_seconds(gw.pid) - cpu0
        stats = await clients[0].request("$gateway", "stats")
        out["links"] = stats["links"]
        out["subscriptions"] = stats["subscriptions"]
        await asyncio.sleep(0.5)
        out["rss1_mib"] = rss_kib(gw.pid) / 1024
        cpu0 = cpu_seconds(gw.pid)
        await asyncio.sleep(args.idle)
        out["idle_cpu_pct"] = (cpu_seconds(gw.pid) - cpu0) / args.idle * 100
        out["trig_10k_us"] = await trigger_cost(port, gw.pid, args.triggers)
        for c in clients[:100]:
            await c.add_listener(_noop, "hot", "tick")
        out["trig_100_us"] = await trigger_cost(port, gw.pid, max(1, args.triggers // 50))
        stats = await clients[0].request("$gateway", "stats")
        out["dropped"] = stats["dropped_events"]
        out["rss2_mib"] = rss_kib(gw.pid) / 1024
    finally:
        for c in clients:
            await c.close()
        gw.stop()
    return out


def _noop(info: dict[str, Any], data: Any) -> None:
    pass


class FakeLink:
    name = "fake"
    persistent = False
    dropped = 0  #: events refused (none: it takes every frame)

    def __init__(self) -> None:
        self.frames = 0

    def send(self, frame: bytes, droppable: bool = False, urgent: bool = False) -> bool:
        self.frames += 1
        return True

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


def core_trigger_ns(non_matching: int, matching: int, n: int) -> float:
    """ns per GatewayCore.receive(TRIGGER) with the given registrations."""
    core = GatewayCore()

    def session(name: str) -> Any:
        s = core.attach(FakeLink())
        core.receive(s, w.encode(w.Hello(name, 65535, 0)))
        return s

    sender = session("src")
    core.receive(sender, w.encode(w.RegisterSender(1, "hot", ((1, "tick"),))))
    per = 10
    for i in range(0, non_matching, per):
        s = session(f"l{i}")
        for j in range(min(per, non_matching - i)):
            core.receive(s, w.encode(w.Listen(j + 1, f"dev{i}", f"ev{j}")))
    for i in range(matching):
        s = session(f"m{i}")
        core.receive(s, w.encode(w.Listen(1, "hot", "tick")))
    body = w.encode(w.Trigger(1, pack(PAYLOAD)))
    receive = core.receive
    for _ in range(1000):
        receive(sender, body)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        receive(sender, body)
    return (time.perf_counter_ns() - t0) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--per-client", type=int, default=10, help="listener registrations each")
    ap.add_argument("--triggers", type=int, default=100_000)
    ap.add_argument("--idle", type=float, default=2.0, help="seconds of idle CPU measurement")
    ap.add_argument("--core-n", type=int, default=50000, help="triggers per in-process timing")
    args = ap.parse_args(argv)
    limit = raise_nofile(2 * args.clients + 256)
    header(
        "sig gateway: scale and memory",
        [
            f"gateway process + this process as {args.clients:,} asyncio clients on loopback, "
            f"{args.per_client} listener registrations each "
            f"({args.clients * args.per_client:,} in all); RLIMIT_NOFILE {limit}",
            "trigger cost = gateway CPU time (/proc) / triggers, "
            f"{args.triggers:,} triggers (100-match case: {max(1, args.triggers // 50):,})",
            "in-process: GatewayCore.receive(TRIGGER) with fake links, "
            f"{args.core_n:,} calls after 1,000 warm-up",
            f"{args.runs} runs; median (min-max)",
        ],
    )
    runs = []
    for r in range(args.runs):
        res = asyncio.run(one_run(args))
        core = {
            "core_0_ns": core_trigger_ns(0, 0, args.core_n),
            "core_10k_ns": core_trigger_ns(args.clients * args.per_client, 0, args.core_n),
            "core_100_ns": core_trigger_ns(0, 100, max(1, args.core_n // 10)),
        }
        res.update(core)
        runs.append(res)
        print(f"run {r + 1}: " + " ".join(f"{k}={v:,.2f}" for k, v in res.items()), flush=True)

    regs = f"{args.clients * args.per_client:,}"

    def col(key: str, fmt: str = "{:,.1f}") -> str:
        return summary([r[key] for r in runs], fmt)

    print()
    print(
        table(
            ["what", "value"],
            [
                [
                    "TCP clients connected / subscriptions",
                    f"{col('links', '{:,.0f}')} / {col('subscriptions', '{:,.0f}')}",
                ],
                ["gateway RSS idle, MiB", col("rss0_mib")],
                ["gateway RSS with clients + registrations, MiB", col("rss1_mib")],
                [
                    "  per client (10 registrations), KiB",
                    summary([(r["rss1_mib"] - r["rss0_mib"]) * 1024 / args.clients for r in runs]),
                ],
                ["set-up wall time, s", col("setup_s")],
                ["set-up gateway CPU, s", col("setup_cpu_s", "{:.2f}")],
                ["gateway CPU idle with all connected, %", col("idle_cpu_pct")],
                ["trigger, no registrations (TCP), gateway us", col("trig_empty_us", "{:.2f}")],
                [f"trigger, {regs} non-matching (TCP), gateway us", col("trig_10k_us", "{:.2f}")],
                ["trigger, 100 matching links (TCP), gateway us", col("trig_100_us", "{:.1f}")],
                ["  events dropped by the gateway", col("dropped", "{:,.0f}")],
                ["trigger, no registrations (in-process), ns", col("core_0_ns", "{:,.0f}")],
                [f"trigger, {regs} non-matching (in-process), ns", col("core_10k_ns", "{:,.0f}")],
                ["trigger, 100 matching (in-process), ns", col("core_100_ns", "{:,.0f}")],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
