"""Serial -> TCP: a device on a socat pty pair, the gateway, a TCP listener.

    python bench/uart.py                   # 3 runs
    python bench/uart.py --count 20000 --latency-count 2000 --runs 3

Needs socat (Debian/Ubuntu: apt-get install socat). Processes: socat (a pty
pair), the gateway (``ServerRouter`` with one end of the pair attached as a
persistent StreamLink, as the serial carrier does), a minimal device emulator
on the other end (``bench/_procs.py dev-sim``: sig.protocol.frame + sig.protocol.messages only;
HELLO, REGISTER_SENDER, TRIGGERs whose data is a sequence number), and an
asyncio TCP listener (``AsyncClientRouter``) in its own process.

* events/s: the device writes --count triggers as fast as the pty takes them;
  rate = delivered / (last delivery - first write).
* added latency: one trigger per write, --interval-us apart; latency = the
  listener callback's time - the time the device's write of the frame's last
  byte returned (one monotonic clock for all processes).
* wire-limited: bytes per event x events/s against 115200 and 921600 baud
  (8N1: 10 bits per byte), and a trigger's bytes next to other protocols.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Child,
    cpu_seconds,
    header,
    median,
    percentile,
    summary,
    table,
    terminate,
)

sys.path.insert(0, str(ROOT))

from sig.protocol import messages as w
from sig.protocol.frame import crc16, encode_frame

SOCAT_HINT = "socat not found: install it (Debian/Ubuntu: apt-get install socat)"
#: The asyncio serial libraries compared (module -> its PyPI name).
LIBS = {"serial_asyncio": "pyserial-asyncio", "serial_asyncio_fast": "pyserial-asyncio-fast"}


class PtyPair:
    """socat linking two ptys; stopped by its PID."""

    def __init__(self, workdir: Path) -> None:
        self.device = workdir / "device"
        self.gateway = workdir / "gateway"
        self.proc = subprocess.Popen(
            [
                "socat",
                f"pty,raw,echo=0,link={self.device}",
                f"pty,raw,echo=0,link={self.gateway}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.device.exists() and self.gateway.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.02)

    def stop(self) -> None:
        terminate(self.proc)


def one_run(mode: str, count: int, interval_us: int, lib: str) -> dict[str, Any]:
    """One run of ``mode`` (rate, lat or echo) with the gateway on serial library ``lib``."""
    with tempfile.TemporaryDirectory(prefix="sig-bench-serial-") as tmp:
        pty = PtyPair(Path(tmp))
        children: list[Child] = []
        try:
            gw = Child("sig-gateway", "", str(pty.gateway), lib)
            children.append(gw)
            port = gw.expect("READY")
            if mode == "echo":
                return _echo_run(gw, port, pty, count, children)
            listener = Child("sig-listen", port, str(count), "record" if mode == "lat" else "")
            children.append(listener)
            listener.expect("READY")
            dev = Child("dev-sim", str(pty.device), mode, str(count), str(interval_us))
            children.append(dev)
            frame_bytes = float(dev.expect("READY"))
            cpu0 = cpu_seconds(gw.pid)
            dev.send("GO")
            sent = dev.result()
            got = listener.result()
            cpu = cpu_seconds(gw.pid) - cpu0
            gw.send("STATS")
            counters = gw.result(10)
        finally:
            for child in reversed(children):
                child.stop()
            pty.stop()
    out: dict[str, Any] = {
        "frame_bytes": frame_bytes,
        "delivered": got["count"],
        "lost": sent["sent"] - got["count"],
        "dropped": counters.get("dropped_events", 0),
    }
    if mode == "rate":
        out["rate"] = got["count"] / (got["t_last"] - sent["t_start"]) if got["count"] else 0.0
        out["cpu_us_per_event"] = cpu / got["count"] * 1e6 if got["count"] else float("nan")
        out["cpu_ns_per_byte"] = cpu / (sent["sent"] * frame_bytes) * 1e9
    else:
        sent_at = sent["sent_at"]
        lat = sorted((t - sent_at[seq]) * 1e6 for seq, t in got["arrivals"])
        out["p50_us"] = percentile(lat, 50)
        out["p99_us"] = percentile(lat, 99)
    return out


def _echo_run(gw: Child, port: str, pty: PtyPair, count: int, children: list[Child]) -> Any:
    """Sequential requests from a TCP client to the device's ``echo``: both directions."""
    dev = Child("dev-sim", str(pty.device), "echo", "0")
    children.append(dev)
    dev.expect("READY")
    requester = Child("sig-request", port, str(count), "dev")
    children.append(requester)
    requester.expect("READY")
    cpu0 = cpu_seconds(gw.pid)
    requester.send("GO")
    res = requester.result()
    cpu = cpu_seconds(gw.pid) - cpu0
    return {
        "rt_p50_us": res["lat"]["p50_us"],
        "rt_p99_us": res["lat"]["p99_us"],
        "cpu_us_per_rt": cpu / res["n"] * 1e6,
    }


def breakdown() -> list[list[str]]:
    """The bytes of a trigger of a float32 (PROTOCOL.md section 6), from sig's encoder."""
    # a measurement sent as float32 (CBOR FA 41 B8 CC CD), as in PROTOCOL.md
    body = w.encode(w.Trigger(1, b"\xfa" + struct.pack(">f", 23.1)))
    frame = encode_frame(body)
    assert len(frame) == 11 and frame[-1] == 0
    crc = crc16(body).to_bytes(2, "big")
    return [
        [
            "**sig** TRIGGER (this encoder)",
            str(len(frame)),
            f"COBS code 1 + type 1 + event_ref 1 + CBOR float32 {len(body) - 2} + CRC-16 "
            f"{len(crc)} + delimiter 1 = `{frame.hex(' ')}`",
        ],
        [
            "MQTT-SN 1.2 PUBLISH, 2-byte topic id",
            "11",
            "length 1 + type 1 + flags 1 + topic id 2 + msg id 2 + data 4 (MQTT-SN spec v1.2 "
            "s. 5.4.12); no framing, no CRC: needs a datagram layer below it",
        ],
        [
            "MAVLink v2, unsigned",
            "16",
            "STX 1 + len 1 + incompat 1 + compat 1 + seq 1 + sysid 1 + compid 1 + msgid 3 + "
            "payload 4 + CRC-16 2 (MAVLink v2 serialization spec); start-byte framing",
        ],
        [
            "zenoh-pico over serial",
            "19-22",
            "serial framing with CRC-32 + transport frame + push/put headers + 4 (per "
            "PROTOCOL.md section 6 and the zenoh-pico serial link)",
        ],
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=20000, help="triggers of the rate test")
    ap.add_argument("--latency-count", type=int, default=2000, help="triggers of the latency test")
    ap.add_argument("--interval-us", type=int, default=1000, help="between latency triggers")
    ap.add_argument("--requests", type=int, default=2000, help="round trips through the device")
    ap.add_argument(
        "--libs",
        default=",".join(LIBS),
        help="comma list of the gateway's serial libraries to compare (default: both)",
    )
    args = ap.parse_args(argv)
    if shutil.which("socat") is None:
        print(SOCAT_HINT, file=sys.stderr)
        return 2
    libs = [lib for lib in args.libs.split(",") if lib]
    if unknown := set(libs) - set(LIBS):
        ap.error(f"unknown libraries {sorted(unknown)}")
    header(
        "sig serial (pty) -> gateway -> TCP listener",
        [
            "socat pty pair (no baud limit); device = bench/_procs.py dev-sim (sig.protocol "
            "only), gateway = ServerRouter process, listener = AsyncClientRouter process",
            f"rate: {args.count:,} triggers (data = sequence number), written 64 frames per "
            f"write; latency: {args.latency_count:,} triggers, one per write, "
            f"{args.interval_us} us apart, from write() returning to the listener callback",
            f"round trip: {args.requests:,} sequential requests from a TCP client to the "
            "device's echo (the gateway writes to the serial port)",
            "serial libraries (the gateway's side), interleaved: "
            + ", ".join(LIBS[x] for x in libs),
            f"{args.runs} runs; median (min-max)",
        ],
    )
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        lib: {"rate": [], "lat": [], "echo": []} for lib in libs
    }
    for r in range(args.runs):
        for lib in libs:
            got = runs[lib]
            got["rate"].append(one_run("rate", args.count, 0, lib))
            got["lat"].append(one_run("lat", args.latency_count, args.interval_us, lib))
            got["echo"].append(one_run("echo", args.requests, 0, lib))
            print(
                f"run {r + 1} {lib}: rate {got['rate'][-1]} latency {got['lat'][-1]}"
                f" round trip {got['echo'][-1]}",
                flush=True,
            )

    def col(mode: str, key: str, fmt: str = "{:,.0f}") -> list[str]:
        return [summary([x[key] for x in runs[lib][mode]], fmt) for lib in libs]

    first = runs[libs[0]]["rate"]
    per_event = median([x["frame_bytes"] for x in first])
    rows = [
        ["events/s, pty -> TCP listener", *col("rate", "rate")],
        [
            "  lost / dropped by the gateway",
            *(
                summary([x["lost"] for x in runs[lib]["rate"]])
                + " / "
                + summary([x["dropped"] for x in runs[lib]["rate"]])
                for lib in libs
            ),
        ],
        ["  gateway CPU us per event", *col("rate", "cpu_us_per_event", "{:.2f}")],
        ["  gateway CPU ns per byte read", *col("rate", "cpu_ns_per_byte", "{:.0f}")],
        ["added latency p50, us", *col("lat", "p50_us")],
        ["added latency p99, us", *col("lat", "p99_us")],
        ["  lost (latency runs)", *col("lat", "lost")],
        ["request round trip via the device p50, us", *col("echo", "rt_p50_us")],
        ["request round trip via the device p99, us", *col("echo", "rt_p99_us")],
        ["  gateway CPU us per round trip", *col("echo", "cpu_us_per_rt", "{:.1f}")],
        [
            "bytes per event on the wire (this test's triggers)",
            f"{per_event:.2f}",
            *("" for _ in libs[1:]),
        ],
    ]
    for baud in (115200, 921600):
        limit = baud / 10 / per_event
        rows.append(
            [f"wire limit at {baud} baud (8N1), events/s", f"{limit:,.0f}", *("" for _ in libs[1:])]
        )
        rows.append(
            ["  with an 11-byte float32 trigger", f"{baud / 10 / 11:,.0f}", *("" for _ in libs[1:])]
        )
    print()
    print(table(["what", *(LIBS[lib] for lib in libs)], rows))
    print()
    print("A trigger carrying a 4-byte float32, on the wire:")
    print(table(["protocol", "bytes", "what"], breakdown()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
