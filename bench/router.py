"""TCP router benchmark: sig's gateway against Mosquitto, same run, same load shapes.

    python bench/router.py                    # 3 runs of every shape, both systems
    python bench/router.py --runs 5 --count 200000 --shapes fanin,fanout

Each system is driven by its own Python client in separate processes: sig's
asyncio AsyncClientRouter against a sig gateway (``ServerRouter``, its own
process), paho-mqtt against a Mosquitto broker this script starts on a free
127.0.0.1 port with a config file it writes (no QoS-0 queue limits, so a slow
subscriber is queued for, not silently dropped), and stops by its PID.
Mosquitto and paho are optional: without them the sig side runs alone.

Shapes (16-byte payload, best effort / QoS 0):
  fanin    1 sender -> 1 listener, --count events
  fanout   1 sender -> 4 listeners, --count events (4 x count deliveries)
  many     --senders connections (in --sender-procs processes) -> 1 listener,
           --count events in total
  request  sequential request/response round trips (MQTT: two topics)
Loss: the senders send N, each listener counts what it got, and a listener
ends when its count reaches N or has not grown for 1 s (bounded by 120 s).
Rate: deliveries / (last delivery at any listener - first send).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    MOSQUITTO_HINT,
    Child,
    Mosquitto,
    cpu_seconds,
    find_mosquitto,
    header,
    median,
    summary,
    table,
)

SHAPES = ("fanin", "fanout", "many", "request")
FANOUT_LISTENERS = 4


def have_paho() -> bool:
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return False
    return True


class Broker:
    """The system under test: a sig gateway process or a Mosquitto broker."""

    def __init__(self, system: str, workdir: Path, mosquitto: str | None) -> None:
        self.system = system
        self.gateway: Child | None = None
        self.mosquitto: Mosquitto | None = None
        if system == "sig":
            self.gateway = Child("sig-gateway")
            self.port = int(self.gateway.expect("READY"))
            self.pid = self.gateway.pid
        else:
            assert mosquitto is not None
            self.mosquitto = Mosquitto(mosquitto, workdir)
            self.port = self.mosquitto.port
            self.pid = self.mosquitto.pid

    def counters(self) -> dict[str, Any]:
        if self.gateway is None:
            return {}
        self.gateway.send("STATS")
        return self.gateway.result(10)

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.mosquitto is not None:
            self.mosquitto.stop()


def run_flow(
    system: str, broker: Broker, listeners: int, senders: int, procs: int, count: int
) -> dict[str, Any]:
    """One throughput run: start listeners, then senders, GO, wait for the counts."""
    p = "sig" if system == "sig" else "mqtt"
    children: list[Child] = []
    try:
        lst = [Child(f"{p}-listen", str(broker.port), str(count)) for _ in range(listeners)]
        children += lst
        for child in lst:
            child.expect("READY")
        per_proc = [senders // procs + (1 if i < senders % procs else 0) for i in range(procs)]
        per_conn = count // senders
        snd = [Child(f"{p}-send", str(broker.port), str(k), str(per_conn)) for k in per_proc if k]
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
    return {
        "sent": sent,
        "delivered": delivered,
        "lost": expected - delivered,
        "rate": delivered / (t_last - t_start) if delivered else 0.0,
        "send_rate": sent / send_time if send_time > 0 else 0.0,
        "broker_cpu_us": cpu / delivered * 1e6 if delivered else float("nan"),
        "gateway": broker.counters(),
    }


def run_request(system: str, broker: Broker, count: int) -> dict[str, Any]:
    p = "sig" if system == "sig" else "mqtt"
    responder = Child(f"{p}-respond", str(broker.port))
    requester: Child | None = None
    try:
        responder.expect("READY")
        requester = Child(f"{p}-request", str(broker.port), str(count))
        requester.expect("READY")
        requester.send("GO")
        res = requester.result()
    finally:
        if requester is not None:
            requester.stop()
        responder.stop()
    return {
        "p50_us": res["lat"]["p50_us"],
        "p99_us": res["lat"]["p99_us"],
        "rt_per_s": res["n"] / res["total"],
    }


def run_shape(
    system: str, shape: str, args: argparse.Namespace, workdir: Path, mosquitto: str | None
) -> dict[str, Any]:
    broker = Broker(system, workdir, mosquitto)
    try:
        if shape == "fanin":
            return run_flow(system, broker, 1, 1, 1, args.count)
        if shape == "fanout":
            return run_flow(system, broker, FANOUT_LISTENERS, 1, 1, args.count)
        if shape == "many":
            return run_flow(system, broker, 1, args.senders, args.sender_procs, args.count)
        return run_request(system, broker, args.requests)
    finally:
        broker.stop()


def report(results: dict[str, dict[str, list[dict[str, Any]]]], systems: list[str]) -> None:
    def col(system: str, shape: str, key: str) -> list[float]:
        return [r[key] for r in results.get(system, {}).get(shape, [])]

    def ratio(shape: str, key: str) -> str:
        if len(systems) < 2 or not col("mqtt", shape, key):
            return "-"
        return f"{median(col('sig', shape, key)) / median(col('mqtt', shape, key)):.2f}"

    rows = []
    labels = {
        "fanin": "fan-in 1->1, events/s",
        "fanout": f"fan-out 1->{FANOUT_LISTENERS}, deliveries/s",
        "many": "many senders ->1, events/s",
    }
    for shape, label in labels.items():
        if shape not in results.get("sig", {}):
            continue
        rows.append(
            [
                label,
                summary(col("sig", shape, "rate")),
                summary(col("mqtt", shape, "rate")),
                ratio(shape, "rate"),
            ]
        )
        expected = results["sig"][shape][0]["sent"] * (FANOUT_LISTENERS if shape == "fanout" else 1)
        rows.append(
            [
                f"  lost of {expected:,}",
                summary(col("sig", shape, "lost")),
                summary(col("mqtt", shape, "lost")),
                "",
            ]
        )
        rows.append(
            [
                "  broker CPU us/delivery",
                summary(col("sig", shape, "broker_cpu_us"), "{:.2f}"),
                summary(col("mqtt", shape, "broker_cpu_us"), "{:.2f}"),
                "",
            ]
        )
        rows.append(
            [
                "  sender rate, events/s",
                summary(col("sig", shape, "send_rate")),
                summary(col("mqtt", shape, "send_rate")),
                "",
            ]
        )
    if "request" in results.get("sig", {}):
        for key, label, fmt in (
            ("p50_us", "request p50, us", "{:,.0f}"),
            ("p99_us", "request p99, us", "{:,.0f}"),
            ("rt_per_s", "request round trips/s", "{:,.0f}"),
        ):
            rows.append(
                [
                    label,
                    summary(col("sig", "request", key), fmt),
                    summary(col("mqtt", "request", key), fmt),
                    ratio("request", key),
                ]
            )
    print(table(["shape", "sig", "Mosquitto + paho", "sig/Mosquitto"], rows))
    drops = [
        r["gateway"].get("dropped_events", 0)
        for s in results.get("sig", {}).values()
        for r in s
        if "gateway" in r
    ]
    print(f"\nsig gateway dropped_events counter over all runs: {sum(drops)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=200_000, help="events per sender shape")
    ap.add_argument("--senders", type=int, default=50, help="connections of the 'many' shape")
    ap.add_argument("--sender-procs", type=int, default=5, help="processes they run in")
    ap.add_argument("--requests", type=int, default=5000, help="round trips per run")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--only", choices=["sig", "mqtt"], help="run one system only")
    ap.add_argument(
        "--require-mosquitto",
        action="store_true",
        help="fail instead of running sig alone when mosquitto/paho are missing",
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
    shapes = [s for s in args.shapes.split(",") if s]
    if unknown := set(shapes) - set(SHAPES):
        ap.error(f"unknown shapes {sorted(unknown)}")

    mosquitto = find_mosquitto()
    systems = ["sig", "mqtt"]
    if args.only:
        systems = [args.only]
    if "mqtt" in systems and (mosquitto is None or not have_paho()):
        if args.require_mosquitto or args.only == "mqtt":
            print(MOSQUITTO_HINT, file=sys.stderr)
            return 2
        print(f"NOTE: {MOSQUITTO_HINT}; running sig alone\n")
        systems = ["sig"]

    header(
        "sig gateway vs Mosquitto, TCP loopback",
        [
            "each client its own process; sig: asyncio AsyncClientRouter, gateway = ServerRouter"
            " process; MQTT: paho-mqtt 2 (QoS 0) against mosquitto started by this script",
            f"16-byte payload; {args.count:,} events per shape; many = {args.senders} connections"
            f" in {args.sender_procs} processes; {args.requests:,} sequential requests",
            "senders yield every 64 events and wait while their socket buffer is full "
            "(sig: transport.get_write_buffer_size() > 0; paho: want_write())",
            f"{args.runs} runs, interleaved; median (min-max)",
        ],
    )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in systems}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sig-bench-") as tmp:
        for run in range(args.runs):
            for shape in shapes:
                for system in systems:
                    res = run_shape(system, shape, args, Path(tmp), mosquitto)
                    results[system].setdefault(shape, []).append(res)
                    brief = {k: v for k, v in res.items() if k != "gateway"}
                    print(
                        f"run {run + 1} {system:4} {shape:7} "
                        + " ".join(
                            f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in brief.items()
                        ),
                        flush=True,
                    )
    print(f"\n({time.monotonic() - t0:.0f} s)\n")
    report(results, systems)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
