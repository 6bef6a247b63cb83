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

from _common import ROOT, Child, header, median, percentile, summary, table, terminate

sys.path.insert(0, str(ROOT))

from sig.protocol import messages as w
from sig.protocol.frame import crc16, encode_frame

SOCAT_HINT = "socat not found: install it (Debian/Ubuntu: apt-get install socat)"


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


def one_run(mode: str, count: int, interval_us: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sig-bench-serial-") as tmp:
        pty = PtyPair(Path(tmp))
        children: list[Child] = []
        try:
            gw = Child("sig-gateway", "", str(pty.gateway))
            children.append(gw)
            port = gw.expect("READY")
            listener = Child("sig-listen", port, str(count), "record" if mode == "lat" else "")
            children.append(listener)
            listener.expect("READY")
            dev = Child("dev-sim", str(pty.device), mode, str(count), str(interval_us))
            children.append(dev)
            frame_bytes = float(dev.expect("READY"))
            dev.send("GO")
            sent = dev.result()
            got = listener.result()
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
    else:
        sent_at = sent["sent_at"]
        lat = sorted((t - sent_at[seq]) * 1e6 for seq, t in got["arrivals"])
        out["p50_us"] = percentile(lat, 50)
        out["p99_us"] = percentile(lat, 99)
    return out


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
    args = ap.parse_args(argv)
    if shutil.which("socat") is None:
        print(SOCAT_HINT, file=sys.stderr)
        return 2
    header(
        "sig serial (pty) -> gateway -> TCP listener",
        [
            "socat pty pair (no baud limit); device = bench/_procs.py dev-sim (sig.protocol "
            "only), gateway = ServerRouter process, listener = AsyncClientRouter process",
            f"rate: {args.count:,} triggers (data = sequence number), written 64 frames per "
            f"write; latency: {args.latency_count:,} triggers, one per write, "
            f"{args.interval_us} us apart, from write() returning to the listener callback",
            f"{args.runs} runs; median (min-max)",
        ],
    )
    rate_runs, lat_runs = [], []
    for r in range(args.runs):
        rate_runs.append(one_run("rate", args.count, 0))
        lat_runs.append(one_run("lat", args.latency_count, args.interval_us))
        print(f"run {r + 1}: rate {rate_runs[-1]} latency {lat_runs[-1]}", flush=True)
    per_event = median([x["frame_bytes"] for x in rate_runs])
    rows = [
        ["events/s, pty -> TCP listener", summary([x["rate"] for x in rate_runs])],
        [
            "  lost / dropped by the gateway",
            summary([x["lost"] for x in rate_runs])
            + " / "
            + summary([x["dropped"] for x in rate_runs]),
        ],
        ["added latency p50, us", summary([x["p50_us"] for x in lat_runs])],
        ["added latency p99, us", summary([x["p99_us"] for x in lat_runs])],
        ["  lost (latency runs)", summary([x["lost"] for x in lat_runs])],
        ["bytes per event on the wire (this test's triggers)", f"{per_event:.2f}"],
    ]
    for baud in (115200, 921600):
        limit = baud / 10 / per_event
        rows.append([f"wire limit at {baud} baud (8N1), events/s", f"{limit:,.0f}"])
        rows.append(["  with an 11-byte float32 trigger", f"{baud / 10 / 11:,.0f}"])
    print()
    print(table(["what", "value"], rows))
    print()
    print("A trigger carrying a 4-byte float32, on the wire:")
    print(table(["protocol", "bytes", "what"], breakdown()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
