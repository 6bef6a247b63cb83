"""What TLS costs on sig's TCP port: the same gateway, plain and TLS, in the same run.

    python bench/tls.py                  # 3 runs
    python bench/tls.py --runs 5 --count 100000 --requests 5000 --connects 200

For each mode a ``sig serve`` child process (plain TCP, or ``--tls-cert`` /
``--tls-key`` with an EC P-256 certificate the script makes with the openssl
CLI, the README's commands) and AsyncClientRouter clients in this process:

  connect  time from connect() to a session (TCP, TLS handshake, HELLO/WELCOME), p50
  request  sequential request/response round trips to the gateway's timer, p50
  fan-in   one sender -> one listener, --count 16-byte events, events/s
           (deliveries / (last delivery - first send); the sender paces on its
           link's write buffer like bench/router.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import header, percentile, sig_serve, summary, table

import sig
from carriers.tcp import client_context

PAYLOAD = b"x" * 16


def make_certificate(where: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 it signs (openssl CLI): (ca, cert, key)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=bench CA", "-keyout", "ca.key",
        "-out", "ca.pem")  # fmt: skip
    run("req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", "gw.key", "-out", "gw.csr")
    (where / "gw.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "gw.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "gw.ext", "-out", "gw.pem")  # fmt: skip
    return where / "ca.pem", where / "gw.pem", where / "gw.key"


def gateway(tls: tuple[Path, Path] | None) -> contextlib.AbstractContextManager[int]:
    """``sig serve`` on a free loopback port (TLS with ``(cert, key)``); yields the port."""
    flags = ["--timer-interval", "3600"]
    if tls is not None:
        flags += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    return sig_serve(*flags)


async def measure(port: int, ca: Path | None, args: argparse.Namespace) -> dict[str, float]:
    tls = client_context(None, str(ca)) if ca is not None else None
    connects = []
    for _ in range(args.connects):
        client = sig.AsyncClientRouter(port=port, auto_reconnect=False, tls=tls)
        start = time.perf_counter()
        await client.connect()
        connects.append(time.perf_counter() - start)
        await client.close()
    sender = sig.AsyncClientRouter(port=port, name="bench-s", tls=tls)
    listener = sig.AsyncClientRouter(port=port, name="bench-l", tls=tls)
    await sender.connect()
    await listener.connect()
    rtts = []
    for _ in range(args.requests):
        start = time.perf_counter()
        await sender.request("timer", "get_ticks")
        rtts.append(time.perf_counter() - start)
    got = 0
    done = asyncio.Event()
    last = 0.0

    def on_event(info: object, data: object) -> None:
        nonlocal got, last
        got += 1
        last = time.perf_counter()
        if got >= args.count:
            done.set()

    await listener.add_listener(on_event, "bench", "e")
    source = await sender.add_sender("bench", ["e"])
    await listener.request("$gateway", "stats")  # the listener is registered
    start = time.perf_counter()
    for _ in range(args.count):
        source.trigger("e", PAYLOAD)
        link = sender._link
        while link is not None and link.write_buffer_size() > 256 << 10:
            await asyncio.sleep(0)  # pace on the write buffer: nothing dropped
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(done.wait(), 120)
    await sender.close()
    await listener.close()
    return {
        "connect_us": percentile(sorted(connects), 50) * 1e6,
        "request_us": percentile(sorted(rtts), 50) * 1e6,
        "events_s": got / max(last - start, 1e-9),
        "lost": args.count - got,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=100_000, help="fan-in events per run")
    ap.add_argument("--requests", type=int, default=2000, help="round trips per run")
    ap.add_argument("--connects", type=int, default=100, help="connections per run")
    args = ap.parse_args()
    header(
        "sig TCP port: plain vs TLS (same gateway, same run)",
        [
            f"sig serve child process per mode; clients in one process; {args.runs} runs,"
            f" median (min-max); {args.connects} connects, {args.requests} round trips,"
            f" {args.count} 16-byte events fan-in 1->1",
            "TLS: EC P-256 certificate, the client's default context (TLS 1.3, cert and name"
            " checked)",
        ],
    )
    results: dict[str, list[dict[str, float]]] = {"plain": [], "tls": []}
    with tempfile.TemporaryDirectory() as tmp:
        ca, cert, key = make_certificate(Path(tmp))
        for _ in range(args.runs):
            for mode in ("plain", "tls"):
                with gateway((cert, key) if mode == "tls" else None) as port:
                    results[mode].append(
                        asyncio.run(measure(port, ca if mode == "tls" else None, args))
                    )
    rows = []
    for key, label, fmt in (
        ("connect_us", "connect to session p50, us", "{:,.0f}"),
        ("request_us", "request p50, us", "{:,.0f}"),
        ("events_s", "fan-in 1->1, events/s", "{:,.0f}"),
    ):
        plain = [r[key] for r in results["plain"]]
        tls = [r[key] for r in results["tls"]]
        ratio = sorted(t / p for t, p in zip(tls, plain, strict=True))[len(tls) // 2]
        rows.append([label, summary(plain, fmt), summary(tls, fmt), f"{ratio:.2f}"])
    print(table(["", "plain TCP", "TLS", "TLS / plain"], rows))
    lost = {m: sum(int(r["lost"]) for r in rs) for m, rs in results.items()}
    print(f"\nlost: plain={lost['plain']} tls={lost['tls']}")
    return 0 if not any(lost.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
