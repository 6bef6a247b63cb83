"""Goodput of the reliable UART mode at 0 %, 1 % and 5 % of bytes corrupted.

    python bench/reliable.py                       # 3 runs of every cell, ~4 minutes
    python bench/reliable.py --runs 1 --seconds 2 --noise 0,0.05 --payloads 4 --windows 2

Needs socat. One process: the gateway (``ServerRouter`` with one serial port,
the reliable mode on, ``retransmit_ms`` 200), ``sig device-sim --reliable``
(its window 2 like the C library's default, or 8 like the gateway's), and a
TCP listener (``AsyncClientRouter``), all on one event loop. Between the
device and the gateway, two socat pty pairs joined by a relay thread per
direction that

* paces the bytes at a line rate (115200 baud, 8N1: 11,520 bytes/s): a pty
  has no baud rate, so without this the "fraction of the line" would mean
  nothing. Each piece of at most 16 bytes leaves when the line would have
  carried the bytes before it (a wire clock per direction);
* flips one random bit in a fraction of the bytes, both directions, never
  making or unmaking a 0x00 (frame boundaries survive, as with
  tests/support/socat.py's NoisyRelay): each corrupted frame is one lost frame.

The device triggers one reliable event over and over (data: a CBOR byte string
of ``--payloads`` bytes; 4 bytes gives the 7-byte body of a float32 reading),
keeping its window full and 4 more queued, for ``--seconds``; then the run
waits until every triggered event is delivered (bounded). Goodput = bytes of
the TRIGGER bodies delivered to the listener (header, event_ref and data: what
the device asked to send, without seq, CRC, COBS) per second, from the first
trigger to the last delivery; its fraction of the line rate is the table's
figure. ``in order, no repeat`` checks that the listener got 1, 2, 3, ... with
no gap and no repeat; ``delivered`` is the share of the triggered events that
arrived (less than 100 % only when a session gave up after 16 retransmissions
and lost what it kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import select
import shutil
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Any

from _common import ROOT, header, summary, table
from uart import SOCAT_HINT, PtyPair

sys.path.insert(0, str(ROOT))

from sig.protocol import messages as w
from sig.protocol.data import pack
from sig.protocol.frame import encode_frame
from sig.protocol.reliable import add_seq
from sig.routers.client import AsyncClientRouter
from sig.routers.gateway import ServerRouter
from sig.routers.serial import open_serial_links
from sig.tools.device_sim import DeviceSim

#: 115200 baud, 8N1: 10 bits per byte.
LINE_RATE = 115200 / 10
PIECE = 16  #: bytes the relay writes at a time


class PacedNoisyRelay:
    """Two pty ends joined at a line rate, with a fraction of the bytes corrupted."""

    def __init__(self, left: Path, right: Path, *, rate: float, fraction: float, seed: int):
        self.rate = rate
        self.fraction = fraction
        self.rng = random.Random(seed)
        self.flipped = 0
        self.carried = [0, 0]  #: bytes left -> right, right -> left
        self._fds = [self._open(left), self._open(right)]
        self._stop_r, self._stop_w = os.pipe()
        self._threads = [
            threading.Thread(target=self._pump, args=(0, 1), daemon=True),
            threading.Thread(target=self._pump, args=(1, 0), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _open(path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        return fd

    def _corrupt(self, data: bytes) -> bytes:
        if not self.fraction:
            return data
        buf = bytearray(data)
        rng = self.rng
        for i, byte in enumerate(buf):
            if byte and rng.random() < self.fraction:
                bits = [b for b in range(8) if byte ^ (1 << b)]  # never make a 0x00
                buf[i] = byte ^ (1 << rng.choice(bits))
                self.flipped += 1
        return bytes(buf)

    def _pump(self, src: int, dst: int) -> None:
        """Copy src -> dst at the line rate; each piece leaves when the wire is free."""
        fd_in, fd_out = self._fds[src], self._fds[dst]
        wire_free = time.monotonic()
        while True:
            ready, _, _ = select.select([fd_in, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(fd_in, 4096)
            except OSError:
                return
            if not data:
                return
            data = self._corrupt(data)
            for i in range(0, len(data), PIECE):
                piece = data[i : i + PIECE]
                wire_free = max(wire_free, time.monotonic()) + len(piece) / self.rate
                delay = wire_free - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                try:
                    os.write(fd_out, piece)
                except OSError:
                    return
                self.carried[src] += len(piece)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        for thread in self._threads:
            thread.join(5.0)
        for fd in (*self._fds, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


async def one_run(
    workdir: Path, fraction: float, payload: int, window: int, rto_ms: int, seconds: float,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    """One cell: returns goodput, delivery check and the counters of both sides."""
    (workdir / "d").mkdir()
    (workdir / "g").mkdir()
    dev, gw = PtyPair(workdir / "d"), PtyPair(workdir / "g")
    relay = PacedNoisyRelay(dev.gateway, gw.device, rate=LINE_RATE, fraction=0, seed=seed)
    router = ServerRouter("127.0.0.1", 0)
    got: list[int] = []
    last = [0.0]
    sim: DeviceSim | None = None
    app: AsyncClientRouter | None = None
    try:
        await router.start()
        await open_serial_links(router, [str(gw.gateway)])
        app = AsyncClientRouter("127.0.0.1", router.port, name="bench-listener")
        await app.connect()

        def on_event(info: Any, data: Any) -> None:
            got.append(int.from_bytes(data[:4], "big"))
            last[0] = time.monotonic()

        await app.add_listener(on_event, "dev", "r")
        sim = DeviceSim(str(dev.device), name="dev", events=("r",), reliable=True,
                        keepalive_ms=2000)  # fmt: skip
        sim.rel.window = window  # the device's own choices (the C library: macros)
        sim.rel.rto = rto_ms / 1000
        await sim.start()
        await sim.wait_for("REGISTERED", 20)
        relay.fraction = fraction
        body_len = len(w.encode(w.Trigger(1, pack(bytes(payload)))))
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            data = (n + 1).to_bytes(4, "big") + bytes(payload - 4)
            if sim.rel.backlog() < window + 4 and sim.trigger("r", data):
                n += 1
            else:
                await asyncio.sleep(0.001)
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # All delivered: until the last; some lost (a session that gave up): the whole wait.
        elapsed = (last[0] if len(got) == n else time.monotonic()) - t0
        row = next(r for r in router.links() if r["link"] == f"serial:{gw.gateway}")
        counts = sim.rel.counts
        return {
            "goodput": len(got) * body_len / elapsed,
            "fraction": len(got) * body_len / elapsed / LINE_RATE,
            "sent": n,
            "delivered": len(got),
            "exactly_once": got == list(range(1, len(got) + 1)),
            "body": body_len,
            "wire": len(encode_frame(add_seq(w.encode(w.Trigger(1, pack(bytes(payload)))), 300))),
            "retransmits": counts["retransmits"],
            "failures": counts["reliable_failures"] + row["reliable_failures"],
            "out_of_order": row["out_of_order"],
            "duplicates": row["duplicates"],
            "crc_errors": row["crc_errors"] + row["framing_errors"],
            "flipped": relay.flipped,
        }
    finally:
        if sim is not None:
            await sim.stop()
        if app is not None:
            await app.close()
        await router.stop()
        relay.close()
        dev.stop()
        gw.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="triggering time per run")
    ap.add_argument("--noise", default="0,0.01,0.05", help="fractions of bytes corrupted")
    ap.add_argument("--payloads", default="4,24", help="data bytes per event")
    ap.add_argument("--windows", default="2", help="the device's window sizes")
    ap.add_argument("--rto-ms", default="200,30", help="the device's initial RTOs")
    args = ap.parse_args(argv)
    if shutil.which("socat") is None:
        print(SOCAT_HINT, file=sys.stderr)
        return 2
    noises = [float(x) for x in args.noise.split(",")]
    payloads = [max(4, int(x)) for x in args.payloads.split(",")]  # 4: the sequence number
    windows = [int(x) for x in args.windows.split(",")]
    rtos = [int(x) for x in args.rto_ms.split(",")]
    header(
        "sig reliable UART mode: goodput through a paced, noisy line",
        [
            f"line: {LINE_RATE:,.0f} bytes/s (115200 baud 8N1), paced by a relay thread per "
            "direction; noise: one bit flipped in that fraction of the bytes, both "
            "directions, never a 0x00",
            "device = sig device-sim --reliable (window and initial RTO as given); gateway = "
            "ServerRouter, port defaults; listener = AsyncClientRouter on TCP; one process",
            f"each run: {args.seconds:g} s of triggers (window full + 4 queued), then wait "
            "for every delivery; goodput = TRIGGER body bytes delivered / s",
            f"{args.runs} runs; median (min-max)",
        ],
    )
    rows = []
    seed = 1
    cells = [(f, p, w_, r) for f in noises for p in payloads for w_ in windows for r in rtos]
    for fraction, payload, window, rto in cells:
        runs = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="sig-bench-rel-") as tmp:
                result = asyncio.run(
                    one_run(Path(tmp), fraction, payload, window, rto, args.seconds, seed)
                )
            seed += 1
            runs.append(result)
            print(f"noise {fraction:g} payload {payload} window {window} rto {rto}: {result}")
        rows.append(
            [
                f"{fraction:.0%}",
                f"{payload} ({runs[0]['body']} B body, {runs[0]['wire']} B frame)",
                str(window),
                str(rto),
                summary([r["goodput"] for r in runs]),
                summary([100 * r["fraction"] for r in runs], "{:.1f}") + " %",
                "yes" if all(r["exactly_once"] for r in runs) else "NO",
                summary([100 * r["delivered"] / max(1, r["sent"]) for r in runs], "{:.0f}") + " %",
                summary([r["retransmits"] for r in runs]),
                summary([r["failures"] for r in runs]),
            ]
        )
    print()
    print(
        table(
            [
                "noise",
                "payload B",
                "window",
                "RTO ms",
                "goodput B/s",
                "of the line",
                "in order, no repeat",
                "delivered",
                "retransmits",
                "session failures",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
