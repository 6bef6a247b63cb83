"""TCP router benchmark: sig's gateway against Mosquitto, NATS and the bare relay, one run.

    python bench/router.py                    # 3 runs of every shape, every system
    python bench/router.py --runs 5 --count 200000 --shapes fanin,fanout
    python bench/router.py --cpus 1           # everything pinned to one core
    python bench/router.py --loop uvloop      # sig's gateway and clients on uvloop

Systems, each driven by its own Python client in separate processes:
  sig        sig's asyncio AsyncClientRouter against a sig gateway (``ServerRouter``)
  mosquitto  paho-mqtt against a Mosquitto broker (no QoS-0 queue limits, so a
             slow subscriber is queued for, not silently dropped)
  nats       nats-py against nats-server (slow consumers queued up to 1 GiB)
  relay      sig's clients against the bare asyncio relay (bench/_relay.py): the
             same frames, no checks, no limits, no counters; the floor for any
             Python gateway
The brokers are started on free 127.0.0.1 ports with config files this script
writes, and stopped by their PIDs. Mosquitto/paho and nats-server/nats-py are
optional: without them the other systems run alone.

Shapes (16-byte payload, best effort / QoS 0):
  fanin         1 sender -> 1 listener, --count events
  fanout        1 sender -> 4 listeners, --count events (4 x count deliveries)
  many          --senders connections (in --sender-procs processes) -> 1 listener,
                --count events in total
  request       sequential request/response round trips (MQTT: two topics;
                NATS: nc.request)
  sync-fanin    fanin through the synchronous ClientRouter (sender and listener)
  sync-request  request through the synchronous ClientRouter (the seed's API)
  many-block    many, the listener with policy="block" (lossless: senders paused)
  many-latest   many, the listener with policy="latest" (conflated: it must end
                with every sender's last value)
The sync and policy shapes are sig's (and the relay's, for the sync ones); the
table's peer columns on those rows repeat the peer's base shape (fanin,
request, many), the nearest thing the peer has.
Loss: the senders send N, each listener counts what it got, and a listener
ends when its count reaches N or has not grown for 1 s (bounded by 120 s).
Rate: deliveries / (last delivery at any listener - first send).
CPU: the broker's (all its threads, /proc) and every process's (the broker's +
each client's own process time), per delivery or per round trip.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    MOSQUITTO_HINT,
    NATS_HINT,
    Child,
    Mosquitto,
    NatsServer,
    cpu_seconds,
    find_mosquitto,
    find_nats_server,
    header,
    median,
    summary,
    table,
)

BASE_SHAPES = ("fanin", "fanout", "many", "request")
SYNC_SHAPES = ("sync-fanin", "sync-request")
POLICY_SHAPES = ("many-block", "many-latest")
SHAPES = BASE_SHAPES + SYNC_SHAPES + POLICY_SHAPES
SYSTEMS = ("sig", "mosquitto", "nats", "relay")
LABELS = {"sig": "sig", "mosquitto": "Mosquitto + paho", "nats": "NATS + nats-py", "relay": "relay"}
#: The shapes each system runs; the others show their base shape in the table.
RUNS = {
    "sig": SHAPES,
    "relay": BASE_SHAPES + SYNC_SHAPES,
    "mosquitto": BASE_SHAPES,
    "nats": BASE_SHAPES,
}
BASE = {
    "sync-fanin": "fanin",
    "sync-request": "request",
    "many-block": "many",
    "many-latest": "many",
}
FANOUT_LISTENERS = 4


def have_module(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def policy_missing() -> str | None:
    """Why the policy shapes cannot run in this tree, or None when they can."""
    from sig.routers.client import AsyncClientRouter

    if "policy" not in inspect.signature(AsyncClientRouter.add_listener).parameters:
        return (
            "the shapes many-block and many-latest need AsyncClientRouter.add_listener(...,"
            " policy=...), the per-listener delivery policy of issue 13; this tree has none"
        )
    return None


class Broker:
    """The system under test: a sig gateway, the relay, Mosquitto or nats-server."""

    def __init__(self, system: str, workdir: Path, binaries: dict[str, str | None]) -> None:
        self.system = system
        self.gateway: Child | None = None
        self.server: Mosquitto | NatsServer | None = None
        if system in ("sig", "relay"):
            self.gateway = Child("sig-gateway" if system == "sig" else "relay-gateway")
            self.port = int(self.gateway.expect("READY"))
            self.pid = self.gateway.pid
        else:
            binary = binaries[system]
            assert binary is not None
            self.server = (Mosquitto if system == "mosquitto" else NatsServer)(binary, workdir)
            self.port = self.server.port
            self.pid = self.server.pid

    @property
    def prefix(self) -> str:
        """The client roles' prefix: sig's clients serve the sig gateway and the relay."""
        return {"sig": "sig", "relay": "sig", "mosquitto": "mqtt", "nats": "nats"}[self.system]

    def counters(self) -> dict[str, Any]:
        if self.gateway is None:
            return {}
        self.gateway.send("STATS")
        return self.gateway.result(10)

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.server is not None:
            self.server.stop()


def run_flow(
    broker: Broker,
    listeners: int,
    senders: int,
    procs: int,
    count: int,
    kind: str = "",
    policy: str = "",
) -> dict[str, Any]:
    """One throughput run: start listeners, then senders, GO, wait for the counts.

    ``kind`` "sync" uses the synchronous client roles; ``policy`` is the
    listeners' delivery policy ("latest": they check every sender's last value).
    """
    p = broker.prefix + ("-sync" if kind == "sync" else "")
    children: list[Child] = []
    per_proc = [senders // procs + (1 if i < senders % procs else 0) for i in range(procs)]
    per_conn = count // senders
    try:
        expect = str(senders if policy == "latest" else count)
        extra = ("latest" if policy == "latest" else "", policy) if policy else ()
        lst = [Child(f"{p}-listen", str(broker.port), expect, *extra) for _ in range(listeners)]
        children += lst
        for child in lst:
            child.expect("READY")
        last = ("last",) if policy == "latest" else ()
        snd = [
            Child(f"{p}-send", str(broker.port), str(k), str(per_conn), *last)
            for k in per_proc
            if k
        ]
        children += snd
        for child in snd:
            child.expect("READY")
        cpu0 = cpu_seconds(broker.pid)
        for child in snd:
            child.send("GO")
        sent_results = [child.result() for child in snd]
        got = [child.result() for child in lst]
        cpu = cpu_seconds(broker.pid) - cpu0
    finally:
        for child in children:
            child.stop()
    sent = sum(r["sent"] for r in sent_results)
    t_start = min(r["t_start"] for r in sent_results)
    delivered = sum(r["count"] for r in got)
    t_last = max(r["t_last"] for r in got)
    expected = sent * listeners
    send_time = max(r["t_end"] for r in sent_results) - t_start
    clients_cpu = sum(r.get("cpu", 0.0) for r in [*sent_results, *got])
    out = {
        "sent": sent,
        "delivered": delivered,
        "lost": expected - delivered,
        "rate": delivered / (t_last - t_start) if delivered else 0.0,
        "p50_us": None,
        "p99_us": None,
        "send_rate": sent / send_time if send_time > 0 else 0.0,
        "broker_cpu_us": cpu / delivered * 1e6 if delivered else float("nan"),
        "all_cpu_us": (cpu + clients_cpu) / delivered * 1e6 if delivered else float("nan"),
        "gateway": broker.counters(),
    }
    if policy == "latest":
        out["senders"] = senders
        out["last_ok"] = sum(r["last_ok"] for r in got)
    return out


def run_request(broker: Broker, count: int, kind: str = "") -> dict[str, Any]:
    """Sequential round trips: a responder process, then a requester process."""
    p = broker.prefix
    responder = Child(f"{p}-respond", str(broker.port))
    requester: Child | None = None
    try:
        responder.expect("READY")
        role = f"{p}{'-sync' if kind == 'sync' else ''}-request"
        requester = Child(role, str(broker.port), str(count))
        requester.expect("READY")
        b0, r0 = cpu_seconds(broker.pid), cpu_seconds(responder.pid)
        requester.send("GO")
        res = requester.result()
        b1, r1 = cpu_seconds(broker.pid), cpu_seconds(responder.pid)
    finally:
        if requester is not None:
            requester.stop()
        responder.stop()
    n = res["n"]
    return {
        "delivered": n,
        "lost": 0,
        "rate": n / res["total"],
        "p50_us": res["lat"]["p50_us"],
        "p99_us": res["lat"]["p99_us"],
        "rt_per_s": n / res["total"],
        "all_cpu_us": (b1 - b0 + r1 - r0 + res.get("cpu", 0.0)) / n * 1e6,
        "broker_cpu_us": (b1 - b0) / n * 1e6,
        "responder_cpu_us": (r1 - r0) / n * 1e6,
        "requester_cpu_us": res.get("cpu", 0.0) / n * 1e6,
    }


def run_shape(
    system: str,
    shape: str,
    args: argparse.Namespace,
    workdir: Path,
    binaries: dict[str, str | None],
) -> dict[str, Any]:
    broker = Broker(system, workdir, binaries)
    try:
        if shape in ("fanin", "sync-fanin"):
            return run_flow(broker, 1, 1, 1, args.count, shape[:4] if "-" in shape else "")
        if shape == "fanout":
            return run_flow(broker, FANOUT_LISTENERS, 1, 1, args.count)
        if shape.startswith("many"):
            policy = shape.split("-", 1)[1] if "-" in shape else ""
            return run_flow(broker, 1, args.senders, args.sender_procs, args.count, "", policy)
        return run_request(broker, args.requests, "sync" if shape == "sync-request" else "")
    finally:
        broker.stop()


def _col(
    results: dict[str, dict[str, list[dict[str, Any]]]], system: str, shape: str, key: str
) -> list[float]:
    runs = results.get(system, {}).get(shape)
    if runs is None and system != "sig":
        runs = results.get(system, {}).get(BASE.get(shape, shape))
    return [r[key] for r in runs or [] if r.get(key) is not None]


def report(
    results: dict[str, dict[str, list[dict[str, Any]]]], systems: list[str], loop: str
) -> None:
    peers = [s for s in systems if s != "sig"]

    def ratio(shape: str, key: str, peer: str) -> str:
        sig, other = _col(results, "sig", shape, key), _col(results, peer, shape, key)
        if not sig or not other or not median(other):
            return "-"
        return f"{median(sig) / median(other):.2f}"

    def row(label: str, shape: str, key: str, fmt: str = "{:,.0f}", ratios: bool = True) -> None:
        cells = [summary(_col(results, s, shape, key), fmt) for s in systems]
        rows.append([label, *cells, *(ratio(shape, key, p) if ratios else "" for p in peers)])

    rows: list[list[str]] = []
    labels = {
        "fanin": "fan-in 1->1, events/s",
        "fanout": f"fan-out 1->{FANOUT_LISTENERS}, deliveries/s",
        "many": "many senders ->1, events/s",
        "sync-fanin": "sync fan-in 1->1 (ClientRouter), events/s",
        "many-block": "many ->1, policy block, events/s",
        "many-latest": "many ->1, policy latest, deliveries/s",
    }
    for shape, label in labels.items():
        if shape not in results.get("sig", {}):
            continue
        row(label, shape, "rate")
        first = results["sig"][shape][0]
        expected = first["sent"] * (FANOUT_LISTENERS if shape == "fanout" else 1)
        what = "replaced (conflated)" if shape == "many-latest" else "lost"
        row(f"  {what} of {expected:,}", shape, "lost", ratios=False)
        if shape == "many-latest":
            rows.append(
                [
                    f"  senders whose last value arrived, of {first['senders']}",
                    summary([r["last_ok"] for r in results["sig"][shape]]),
                    *("" for _ in systems[1:]),
                    *("" for _ in peers),
                ]
            )
        row("  broker CPU us/delivery", shape, "broker_cpu_us", "{:.2f}")
        row("  all processes CPU us/delivery", shape, "all_cpu_us", "{:.2f}")
        row("  sender rate, events/s", shape, "send_rate", ratios=False)
    for shape, name in (("request", "request"), ("sync-request", "sync request (ClientRouter)")):
        if shape not in results.get("sig", {}):
            continue
        row(f"{name} p50, us", shape, "p50_us")
        row(f"{name} p99, us", shape, "p99_us")
        row(f"{name} round trips/s", shape, "rt_per_s")
        row("  all processes CPU us/round trip", shape, "all_cpu_us", "{:.1f}")
        row("  broker CPU us/round trip", shape, "broker_cpu_us", "{:.1f}")
        row("  responder CPU us/round trip", shape, "responder_cpu_us", "{:.1f}")
        row("  requester CPU us/round trip", shape, "requester_cpu_us", "{:.1f}")
    head = ["shape", *(LABELS[s] for s in systems), *(f"sig/{s}" for s in peers)]
    print(table(head, rows))
    if any(shape in BASE for shape in results.get("sig", {})):
        print(
            "\n(peer columns of the sync and policy rows: the peer's own fanin, request or many"
            " run; the relay runs the sync shapes itself with sig's ClientRouter)"
        )
    drops = [
        r["gateway"].get("dropped_events", 0)
        for s in results.get("sig", {}).values()
        for r in s
        if "gateway" in r
    ]
    print(f"\nsig gateway dropped_events counter over all runs: {sum(drops)}")
    goals(results, loop)


def goals(results: dict[str, dict[str, list[dict[str, Any]]]], loop: str) -> None:
    """Issue 13's goals, each measured in this run: met or not, with the figures."""

    def med(system: str, shape: str, key: str) -> float:
        return median(_col(results, system, shape, key))

    checks = []
    for shape, share in (("fanin", 0.9), ("fanout", 0.5)):
        sig, relay = med("sig", shape, "rate"), med("relay", shape, "rate")
        if sig == sig and relay == relay:
            checks.append(
                (
                    f"{shape} >= {share:.0%} of the relay's rate",
                    sig / relay >= share,
                    f"{sig / relay:.0%}",
                )
            )
    sig, mqtt = med("sig", "request", "p50_us"), med("mosquitto", "request", "p50_us")
    if sig == sig and mqtt == mqtt:
        if loop == "uvloop":
            checks.append(
                (
                    "request p50 <= 0.8x Mosquitto's (uvloop, the fast extra)",
                    sig <= 0.8 * mqtt,
                    f"{sig:.0f} vs {mqtt:.0f} us, {sig / mqtt:.2f}x",
                )
            )
        else:
            checks.append(
                (
                    "request p50 <= Mosquitto's",
                    sig <= mqtt,
                    f"{sig:.0f} vs {mqtt:.0f} us, {sig / mqtt:.2f}x",
                )
            )
    sync = med("sig", "sync-request", "p50_us")
    if sync == sync and sig == sig:
        checks.append(("sync request p50 <= 1.3x async", sync <= 1.3 * sig, f"{sync / sig:.2f}x"))
    block = results.get("sig", {}).get("many-block")
    if block and med("mosquitto", "many", "rate") == med("mosquitto", "many", "rate"):
        lost = max(r["lost"] for r in block)
        share = med("sig", "many-block", "rate") / med("mosquitto", "many", "rate")
        checks.append(
            (
                "many-block: 0 lost, >= 1.5x Mosquitto's many",
                lost == 0 and share >= 1.5,
                f"lost {lost}, {share:.2f}x",
            )
        )
    latest = results.get("sig", {}).get("many-latest")
    if latest:
        ok = all(r["last_ok"] == r["senders"] for r in latest)
        checks.append(
            (
                "many-latest: the last value of every sender",
                ok,
                ", ".join(f"{r['last_ok']}/{r['senders']}" for r in latest),
            )
        )
    if checks:
        print("\ngoals (issue 13), this run:")
        for name, met, figure in checks:
            print(f"  {'met    ' if met else 'NOT met'}  {name}: {figure}")


def pin(cpus: int) -> list[int]:
    """Pin this process (and so every child it starts) to the first ``cpus`` allowed cores."""
    chosen = sorted(os.sched_getaffinity(0))[:cpus]
    os.sched_setaffinity(0, chosen)
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=200_000, help="events per sender shape")
    ap.add_argument("--senders", type=int, default=50, help="connections of the 'many' shapes")
    ap.add_argument("--sender-procs", type=int, default=5, help="processes they run in")
    ap.add_argument("--requests", type=int, default=5000, help="round trips per run")
    ap.add_argument(
        "--shapes",
        help=f"comma list of {', '.join(SHAPES)} (default: all; the policy shapes when the"
        " tree has policies)",
    )
    ap.add_argument(
        "--only", help="comma list of systems to run: sig, mosquitto (or mqtt), nats, relay"
    )
    ap.add_argument(
        "--require-peers",
        action="store_true",
        help="fail instead of leaving out a peer whose broker or client is missing",
    )
    ap.add_argument("--require-mosquitto", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--cpus",
        type=int,
        help="pin the broker and every client to this many cores (1: what one core carries)",
    )
    ap.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of sig's gateway, sig's clients and the relay (uvloop: the fast extra)",
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument(
        "--acl",
        type=Path,
        help="a TOML file whose [acl] the sig gateway enforces (bench/acl-restrictive.toml)",
    )
    args = ap.parse_args(argv)
    if args.acl:
        os.environ["SIG_BENCH_ACL"] = str(args.acl.resolve())  # read by the gateway child
    if args.loop == "uvloop":
        if not have_module("uvloop"):
            print("--loop uvloop needs uvloop: pip install -e '.[fast]'", file=sys.stderr)
            return 2
        os.environ["SIG_UVLOOP"] = "all"  # read by bench/_procs.py: sig-* and relay-* roles
    why_not = policy_missing()
    if args.shapes is None:
        shapes = [s for s in SHAPES if not (why_not and s in POLICY_SHAPES)]
        if why_not:
            print(f"NOTE: {why_not}: leaving them out\n")
    else:
        shapes = [s for s in args.shapes.split(",") if s]
        if unknown := set(shapes) - set(SHAPES):
            ap.error(f"unknown shapes {sorted(unknown)}")
        if why_not and set(shapes) & set(POLICY_SHAPES):
            print(f"error: {why_not}", file=sys.stderr)
            return 2

    binaries = {"mosquitto": find_mosquitto(), "nats": find_nats_server()}
    missing = {
        "mosquitto": None if binaries["mosquitto"] and have_module("paho") else MOSQUITTO_HINT,
        "nats": None if binaries["nats"] and have_module("nats") else NATS_HINT,
    }
    systems = list(SYSTEMS)
    if args.only:
        systems = [{"mqtt": "mosquitto"}.get(s, s) for s in args.only.split(",") if s]
        if unknown := set(systems) - set(SYSTEMS):
            ap.error(f"unknown systems {sorted(unknown)}")
        systems = [s for s in SYSTEMS if s in systems]  # sig first, the peers after
    for system, hint in missing.items():
        if hint and system in systems:
            required = (
                args.require_peers
                or args.only
                or (args.require_mosquitto and system == "mosquitto")
            )
            if required:
                print(hint, file=sys.stderr)
                return 2
            print(f"NOTE: {hint}; leaving {system} out\n")
            systems.remove(system)
    cpus = pin(args.cpus) if args.cpus else None

    header(
        "sig gateway vs Mosquitto, NATS and the bare asyncio relay, TCP loopback",
        [
            "each client its own process; sig and relay: sig's AsyncClientRouter (sync shapes:"
            " ClientRouter); MQTT: paho-mqtt 2 (QoS 0); NATS: nats-py; brokers started by"
            " this script",
            f"16-byte payload; {args.count:,} events per shape; many = {args.senders} connections"
            f" in {args.sender_procs} processes; {args.requests:,} sequential requests",
            "senders yield every 64 events and wait while their socket buffer is full "
            "(sig: transport.get_write_buffer_size() > 0; paho: want_write(); nats-py: its"
            " pending buffer + transport)",
            f"event loop of sig and the relay: {args.loop}; "
            + (f"pinned to CPU {cpus}" if cpus else "not pinned"),
            f"{args.runs} runs, interleaved; median (min-max)",
        ],
    )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in systems}
    failed: list[str] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sig-bench-") as tmp:
        for run in range(args.runs):
            for shape in shapes:
                for system in systems:
                    if shape not in RUNS[system]:
                        continue
                    try:
                        res = run_shape(system, shape, args, Path(tmp), binaries)
                    except (RuntimeError, OSError) as exc:  # a child died or timed out
                        failed.append(f"run {run + 1} {system} {shape}: {exc!r}")
                        print(f"run {run + 1} {system:9} {shape:12} FAILED: {exc!r}", flush=True)
                        continue
                    results[system].setdefault(shape, []).append(res)
                    brief = {k: v for k, v in res.items() if k != "gateway" and v is not None}
                    print(
                        f"run {run + 1} {system:9} {shape:12} "
                        + " ".join(
                            f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in brief.items()
                        ),
                        flush=True,
                    )
    print(f"\n({time.monotonic() - t0:.0f} s)\n")
    report(results, systems, args.loop)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if failed:  # left out of the table above, and the exit status says so
        print(f"\n{len(failed)} run(s) FAILED:\n  " + "\n  ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
