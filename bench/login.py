"""Logins: what one costs, and what a storm of them does to a client already connected.

sig (``sig serve --users``: scrypt N=2**14 r=8 p=1, checked on two threads)
against Mosquitto with a ``password_file`` (made by ``mosquitto_passwd``:
PBKDF2-SHA512), both on 127.0.0.1, in the same run. And sig with the same
users but its checks run on the event loop ("sig, inline": the design the
thread pool replaces; the gateway for that row is a ServerRouter whose
verifier is switched off, so the core runs scrypt itself).

1. login latency: K logins one after the other, each a new TCP connection
   (sig: HELLO with credentials -> WELCOME; MQTT: CONNECT with username and
   password -> CONNACK); and without users (anonymous) for the cost of the rest.
2. a storm: W threads log in with the right password as fast as they can for
   S seconds, while one connected client measures its PING round trip
   (sig PING/PONG, MQTT PINGREQ/PINGRESP) one after the other.

Usage: python bench/login.py [--runs 3] [--logins 40] [--storm-threads 4] [--seconds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import itertools
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import (
    ROOT,
    RawPeer,
    find_mosquitto,
    free_port,
    header,
    percentile,
    summary,
    table,
    terminate,
)

from sig.core.auth import encode_credentials, format_users, hash_password
from sig.protocol import messages as w

USER, PASSWORD = "alice", "wonderland"

_INLINE_GATEWAY = """
import asyncio, sys
from sig.routers.gateway import ServerRouter
async def main():
    gw = ServerRouter("127.0.0.1", int(sys.argv[1]), users=sys.argv[2])
    await gw.start()
    gw.security.stop()  # the verifier is off: the core runs scrypt on the loop
    print("READY", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the broker did not start") from None
            time.sleep(0.02)


@contextlib.contextmanager
def broker(kind: str, workdir: Path) -> Iterator[int]:
    """Start one broker on a free port: sig, sig-inline, sig-anonymous, mqtt, mqtt-anonymous."""
    port = free_port()
    if kind.startswith("sig"):
        users = workdir / "users"
        users.write_text(format_users({USER: hash_password(PASSWORD)}))
        users.chmod(0o600)
        if kind == "sig-inline":
            argv = [sys.executable, "-c", _INLINE_GATEWAY, str(port), str(users)]
        else:
            argv = [sys.executable, "-m", "sig", "serve", "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--no-timer", "--no-discovery", "--log-level", "error"]
            if kind == "sig":
                argv += ["--users", str(users)]
    else:
        binary = find_mosquitto()
        assert binary is not None
        conf = workdir / f"mosquitto-{port}.conf"
        lines = [f"listener {port} 127.0.0.1", "persistence false", "set_tcp_nodelay true"]
        # as root, mosquitto drops to its own user, which cannot read our temp dir
        lines.append(f"user {getpass.getuser()}")
        if kind == "mqtt":
            pwfile = workdir / "mosquitto.passwd"
            subprocess.run(
                ["mosquitto_passwd", "-c", "-b", str(pwfile), USER, PASSWORD], check=True
            )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines += ["allow_anonymous true"]
        conf.write_text("\n".join(lines) + "\n")
        argv = [binary, "-c", str(conf)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield port
    finally:
        terminate(proc)


# --- one login, each protocol -------------------------------------------------------


def sig_login(port: int, anonymous: bool) -> None:
    peer = RawPeer(port, "bench")
    try:
        creds = b"" if anonymous else encode_credentials(USER, PASSWORD)
        peer.send(w.Hello("bench", 65535, 0, credentials=creds))
        if peer.wait(lambda m: isinstance(m, w.Welcome), 30) is None:
            raise RuntimeError("no WELCOME")
    finally:
        peer.sock.close()


def _mqtt_str(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


_CLIENT_IDS = itertools.count(1)


def mqtt_connect_packet(anonymous: bool) -> bytes:
    """CONNECT with a client id of its own (a second one with the same id would take over)."""
    flags = 0x02 if anonymous else 0xC2  # clean session (+ username, password)
    client_id = _mqtt_str(f"bench-{next(_CLIENT_IDS)}")
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + (60).to_bytes(2, "big") + client_id
    if not anonymous:
        body += _mqtt_str(USER) + _mqtt_str(PASSWORD)
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise RuntimeError("closed")
        out += chunk
    return out


def mqtt_login(port: int, anonymous: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), 30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(mqtt_connect_packet(anonymous))
    ack = _recv_exact(sock, 4)
    if ack[0] != 0x20 or ack[3] != 0:
        raise RuntimeError(f"CONNACK {ack.hex()}")
    return sock


def login(kind: str, port: int) -> None:
    anonymous = kind.endswith("anonymous")
    if kind.startswith("sig"):
        sig_login(port, anonymous)
    else:
        mqtt_login(port, anonymous).close()


# --- the pinging victim ---------------------------------------------------------------


def pinger(kind: str, port: int) -> Callable[[], float]:
    """A connected client; each call is one PING round trip in seconds."""
    if kind.startswith("sig"):
        peer = RawPeer(port, "victim")
        creds = b"" if kind.endswith("anonymous") else encode_credentials(USER, PASSWORD)
        peer.send(w.Hello("victim", 65535, 0, credentials=creds))
        assert peer.wait(lambda m: isinstance(m, w.Welcome), 30) is not None

        def sig_ping() -> float:
            t0 = time.perf_counter()
            peer.send(w.Ping(1))
            assert peer.wait(lambda m: isinstance(m, w.Pong), 30) is not None
            return time.perf_counter() - t0

        return sig_ping
    sock = mqtt_login(port, kind.endswith("anonymous"))

    def mqtt_ping() -> float:
        t0 = time.perf_counter()
        sock.sendall(b"\xc0\x00")
        if _recv_exact(sock, 2) != b"\xd0\x00":
            raise RuntimeError("no PINGRESP")
        return time.perf_counter() - t0

    return mqtt_ping


def storm(kind: str, port: int, threads: int, seconds: float) -> tuple[float, list[float]]:
    """Logins/s of ``threads`` loops, and the victim's round trips meanwhile (sorted)."""
    ping = pinger(kind, port)
    stop = threading.Event()
    counts = [0] * threads

    def loop(i: int) -> None:
        while not stop.is_set():
            login(kind, port)
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    rtts: list[float] = []
    t0 = time.monotonic()
    for t in workers:
        t.start()
    while time.monotonic() - t0 < seconds:
        rtts.append(ping())
        time.sleep(0.005)
    stop.set()
    for t in workers:
        t.join(60)
    return sum(counts) / (time.monotonic() - t0), sorted(rtts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--logins", type=int, default=40, help="sequential logins per run")
    parser.add_argument("--storm-threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each storm")
    parser.add_argument("--no-mqtt", action="store_true", help="sig only")
    args = parser.parse_args()
    kinds = ["sig", "sig-inline", "sig-anonymous"]
    if not args.no_mqtt and find_mosquitto() is not None:
        kinds += ["mqtt", "mqtt-anonymous"]
    header(
        "logins: sig (scrypt on threads) vs sig (scrypt on the loop) vs Mosquitto password_file",
        [
            f"{args.runs} runs; {args.logins} sequential logins, each a new TCP connection",
            f"storm: {args.storm_threads} threads logging in with the right password for"
            f" {args.seconds} s while one connected client PINGs (round trips one after the other)",
            "sig: scrypt N=2**14 r=8 p=1; Mosquitto: mosquitto_passwd's PBKDF2-SHA512",
        ],
    )
    results: dict[str, dict[str, list[float]]] = {
        k: {"login": [], "login_p99": [], "rate": [], "p50": [], "p99": [], "max": []}
        for k in kinds
    }
    for _ in range(args.runs):
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp, broker(kind, Path(tmp)) as port:
                lat = []
                for _ in range(args.logins):
                    t0 = time.perf_counter()
                    login(kind, port)
                    lat.append(time.perf_counter() - t0)
                lat.sort()
                rate, rtts = storm(kind, port, args.storm_threads, args.seconds)
                res = results[kind]
                res["login"].append(percentile(lat, 50) * 1000)
                res["login_p99"].append(percentile(lat, 99) * 1000)
                res["rate"].append(rate)
                res["p50"].append(percentile(rtts, 50) * 1000)
                res["p99"].append(percentile(rtts, 99) * 1000)
                res["max"].append(rtts[-1] * 1000)
    rows = []
    for kind in kinds:
        r = results[kind]
        rows.append(
            [
                kind,
                summary(r["login"], "{:.2f}"),
                summary(r["login_p99"], "{:.2f}"),
                summary(r["rate"], "{:,.0f}"),
                summary(r["p50"], "{:.2f}"),
                summary(r["p99"], "{:.2f}"),
                summary(r["max"], "{:.1f}"),
            ]
        )
    print(
        table(
            [
                "gateway",
                "login p50, ms",
                "login p99, ms",
                "storm logins/s",
                "victim PING p50, ms",
                "p99, ms",
                "max, ms",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
