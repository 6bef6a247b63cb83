"""Soak benchmark of issue 9: what one misbehaving peer costs the gateway and the others.

    python bench/soak.py                        # every scenario, full scale (~4 min)
    python bench/soak.py --only teardown,busy   # some of them
    python bench/soak.py --smoke                # each at a tiny scale, seconds
    python bench/soak.py --json                 # the figures as one JSON object
    python bench/soak.py --json soak.json       # the table, and the JSON into soak.json

The gateway is a real ``sig serve`` process (``--host 127.0.0.1 --port 0
--no-timer``, its default log level) with stdout and stderr in files; every
scenario starts its own. All peers are on loopback. The misbehaving peers and
the probes speak the protocol on raw sockets (``sig.protocol.frame`` + ``sig.protocol.messages``,
bench/_common.py ``RawPeer``), so every wait has a deadline: a gateway that
stalls or never answers gives a figure ("not served within 30 s"), not a hang.

Scenarios:

* ``rss``: ``--flood-clients`` connections (a child process) write requests to
  ``$gateway links``, requests to a real handler (``svc.echo``, an
  ``AsyncClientRouter`` child) and PINGs for ``--flood-seconds`` and never
  read. The gateway's VmRSS is sampled every 0.25 s (start, max, end). Beside
  them one well-behaved client sends one ``svc.echo`` request every
  ``--side-interval`` s and reads: answered vs sent, p50/p99 latency.
  ``--rss-cap-mib`` stops the flood early rather than let the machine swap.
* ``lag``: during the same flood, a probe sends back-to-back PINGs; the largest
  gap between two PONGs is the longest the gateway's loop was busy (measured
  from outside, so it always works). ``max_loop_lag_ms`` of ``$gateway stats``
  is shown too when the gateway reports it.
* ``teardown``: one link registers N senders (or N listeners) in one pipelined
  burst, then closes; the probe's largest PONG gap from the close until
  ``$gateway stats`` shows them all gone is the event-loop stall.
* ``fd``: the gateway runs under RLIMIT_NOFILE ``--fd-limit`` (soft and hard,
  as ``ulimit -n``), the bench opens ``--fd-idle`` idle TCP connections (never a
  byte), then a client tries to connect, HELLO and get ``$gateway stats``
  (retrying until ``--fd-timeout``): served or not, how long, and the bytes the
  gateway wrote to stderr meanwhile.
* ``busy``: a child keeps ``--busy-inflight`` requests pending on ``svc.echo``
  (more than the per-handler cap of 64) while a second requester sends
  ``svc.echo`` requests one at a time for ``--busy-seconds``: its BUSY rate.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Child,
    RawPeer,
    frames,
    header,
    machine,
    percentile,
    raise_nofile,
    rss_kib,
    table,
    terminate,
)

from sig.errors import ErrorCode
from sig.protocol import messages as w
from sig.protocol.data import pack

PAYLOAD = bytes(range(16))
SCENARIOS = ("rss", "lag", "teardown", "fd", "busy")
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
MIB = 1024.0


# --- the gateway under test -----------------------------------------------------------


class Gateway:
    """``sig serve`` on 127.0.0.1, a free port, stdout/stderr in files; stopped by its PID."""

    def __init__(self, workdir: Path, tag: str, nofile: int = 0, extra: list[str] | None = None):
        self.out_path = workdir / f"{tag}.stdout"
        self.err_path = workdir / f"{tag}.stderr"
        cmd = [sys.executable, "-m", "sig", "serve", "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--no-timer", *(extra or [])]

        def limit_fds() -> None:  # runs in the child between fork and exec, as `ulimit -n`
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=str(ROOT),
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                preexec_fn=limit_fds if nofile else None,
            )
        self.port = self._wait_port(20.0)

    def _wait_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(self.out_path.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        tail = " ".join(self.err_path.read_text(errors="replace")[-400:].split())
        code = self.proc.poll()
        self.stop()
        what = f"exited with code {code}" if code is not None else f"not up within {timeout} s"
        raise RuntimeError(f"sig serve {what}: {tail}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mib(self) -> float:
        """VmRSS in MiB; NaN once the process is gone."""
        try:
            return rss_kib(self.pid) / MIB
        except OSError:
            return float("nan")

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return -1

    def stderr_bytes(self) -> int:
        try:
            return self.err_path.stat().st_size
        except OSError:
            return 0

    def stop(self) -> None:
        terminate(self.proc)


class Probe(threading.Thread):
    """Back-to-back PINGs on one connection; the time of every PONG.

    The gateway answers a PING as soon as its loop reads it, so the gap between
    two PONGs is an upper bound of how long the loop was busy with something else.
    """

    def __init__(self, port: int, name: str = "probe") -> None:
        super().__init__(name=name, daemon=True)
        self.peer = RawPeer(port, name)
        if not self.peer.hello():
            raise RuntimeError("probe: no WELCOME")
        self.answers: list[float] = []
        self.rtts: list[float] = []
        self.started_at = time.monotonic()
        self.waiting_since: float | None = None
        self.error = ""
        self._halt = threading.Event()

    def run(self) -> None:
        token = 0
        try:
            while not self._halt.is_set():
                token = (token + 1) & 0xFFFFFFFF
                sent = self.waiting_since = time.monotonic()
                self.peer.send(w.Ping(token))
                got = self.peer.wait(
                    lambda m, want=token: isinstance(m, w.Pong) and m.token == want,
                    3600,
                    self._halt,
                )
                if got is None:
                    break
                now = time.monotonic()
                self.waiting_since = None
                self.answers.append(now)
                self.rtts.append(now - sent)
        except OSError as exc:  # ConnectionError included: the gateway closed the probe
            self.error = f"{type(exc).__name__}: {exc}"

    def wait_answers(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.answers) < n and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.01)
        return len(self.answers) >= n

    def finish(self) -> float:
        """Stop; return the time of stopping (an unanswered PING counts up to it)."""
        t = time.monotonic()
        self._halt.set()
        self.join(2.0)
        self.peer.close()
        return t

    def max_gap(self, start: float, end: float) -> tuple[float, bool]:
        """Largest gap between PONGs that ends in [start, end], in s; True if still open at end.

        The gap that spans ``start`` counts: it is the one a stall right after
        ``start`` makes.
        """
        best = 0.0
        prev = self.started_at
        for t in self.answers:
            if t > end:
                break
            if t >= start:
                best = max(best, t - prev)
            prev = t
        open_gap = self.waiting_since is not None and end - prev > best
        if open_gap:
            best = end - prev
        return best, open_gap


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def gap_text(gap: float, open_gap: bool) -> str:
    return f">= {ms(gap)} (no answer yet)" if open_gap else ms(gap)


# --- rss + lag --------------------------------------------------------------------------


class SideClient(threading.Thread):
    """A well-behaved client: one ``svc.echo`` request per interval, each read before the next."""

    def __init__(self, port: int, interval: float, answer_timeout: float) -> None:
        super().__init__(name="side", daemon=True)
        self.port = port
        self.interval = interval
        self.answer_timeout = answer_timeout
        self.peer = RawPeer(port, "side")
        if not self.peer.hello():
            raise RuntimeError("side client: no WELCOME")
        self.sent = self.ok = self.errors = self.unanswered = self.reconnects = 0
        self.statuses: dict[str, int] = {}
        self.lat: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        data = pack(PAYLOAD)
        next_at = time.monotonic()
        while not self._halt.is_set():
            t = time.monotonic()
            self.sent += 1
            try:
                response = self.peer.request("svc", "echo", data, self.answer_timeout)
            except OSError:
                response = None
                self._reconnect()
            if response is None:
                self.unanswered += 1
            else:
                self.lat.append(time.monotonic() - t)
                if response.status == ErrorCode.OK:
                    self.ok += 1
                else:
                    self.errors += 1
                    name = _code_name(response.status)
                    self.statuses[name] = self.statuses.get(name, 0) + 1
            next_at = max(next_at + self.interval, time.monotonic())
            self._halt.wait(next_at - time.monotonic())

    def _reconnect(self) -> None:
        self.peer.close()
        self.reconnects += 1
        with contextlib.suppress(OSError):
            self.peer = RawPeer(self.port, "side", timeout=self.answer_timeout)
            self.peer.hello(self.answer_timeout)

    def finish(self) -> None:
        self._halt.set()
        self.join(self.answer_timeout + 5)
        self.peer.close()

    def result(self) -> dict[str, Any]:
        lat = sorted(self.lat)
        return {
            "sent": self.sent,
            "answered": len(self.lat),
            "ok": self.ok,
            "errors": self.statuses,
            "unanswered": self.unanswered,
            "reconnects": self.reconnects,
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "max_ms": (lat[-1] if lat else float("nan")) * 1e3,
        }


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def scenario_rss(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    gw = Gateway(workdir, "rss", extra=args.serve_arg)
    children: list[Child] = []
    side: SideClient | None = None
    probe: Probe | None = None
    out: dict[str, Any] = {}
    try:
        handler = Child("sig-respond", str(gw.port))
        children.append(handler)
        handler.expect("READY", 30)
        flood = Child("soak-flood", str(gw.port), str(args.flood_clients), str(args.flood_seconds))
        children.append(flood)
        out["flood_connected"] = int(flood.expect("READY", 60) or 0)
        probe = Probe(gw.port)
        probe.start()
        probe.wait_answers(20, 10)
        side = SideClient(gw.port, args.side_interval, args.answer_timeout)
        out["rss_start_mib"] = gw.rss_mib()
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()
        flood.send("GO")
        side.start()
        stopped = "ran its course"
        while time.monotonic() < t0 + args.flood_seconds:
            rss = gw.rss_mib()
            samples.append((time.monotonic() - t0, rss))
            if not gw.alive():
                stopped = f"gateway exited (code {gw.proc.returncode})"
                break
            if rss > args.rss_cap_mib:
                stopped = f"stopped at {samples[-1][0]:.1f} s: RSS above {args.rss_cap_mib} MiB"
                break
            time.sleep(0.25)
        t_end = time.monotonic()
        flood.send("STOP")  # no-op if it already stopped by itself
        out["rss_end_mib"] = gw.rss_mib()
        samples.append((t_end - t0, out["rss_end_mib"]))
        side.finish()
        t_probe = probe.finish()
        out["flood_s"] = t_end - t0
        out["flood_stopped"] = stopped
        out["rss_max_mib"] = max((r for _, r in samples if r == r), default=float("nan"))
        out["rss_samples"] = [
            (round(t, 2), round(r, 1)) for t, r in samples[:: max(1, len(samples) // 60)]
        ]
        out["side"] = side.result()
        gap, open_gap = probe.max_gap(t0, t_probe)
        rtts = sorted(probe.rtts)
        out["lag"] = {
            "probe_max_gap_ms": gap * 1e3,
            "probe_gap_open": open_gap,
            "probe_pongs": len(probe.answers),
            "probe_p50_ms": percentile(rtts, 50) * 1e3,
            "probe_p99_ms": percentile(rtts, 99) * 1e3,
            "probe_error": probe.error,
        }
        out["flood"] = flood.result(30)
        out["gateway_stats"] = _stats_after(gw, args.answer_timeout)
        out["lag"]["gateway_max_loop_lag_ms"] = (out["gateway_stats"] or {}).get("max_loop_lag_ms")
        out["stderr_bytes"] = gw.stderr_bytes()
    finally:
        for closer in (side, probe):
            if closer is not None and closer.is_alive():
                closer.finish()
        for child in children:
            child.stop()
        gw.stop()
    return out


def _stats_after(gw: Gateway, timeout: float) -> dict[str, Any] | None:
    """``$gateway stats`` on a fresh connection, or None if the gateway does not answer."""
    if not gw.alive():
        return None
    try:
        peer = RawPeer(gw.port, "stats", timeout)
    except OSError:
        return None
    try:
        return peer.stats(timeout) if peer.hello(timeout) else None
    except OSError:
        return None
    finally:
        peer.close()


# --- teardown ---------------------------------------------------------------------------


def register_many(peer: RawPeer, kind: str, n: int, timeout: float) -> dict[str, Any]:
    """Send N REGISTER_SENDERs (or LISTENs) in one pipelined burst, reading the answers.

    Reads while it writes: a gateway that stops reading a link whose answers
    pile up must not deadlock the bench. Returns accepted / refused counts.
    """
    if kind == "senders":
        msgs = [w.RegisterSender(i + 1, f"td{i}", ()) for i in range(n)]
        accepted_type: type = w.SenderRegistered
    else:
        msgs = [w.Listen(i + 1, f"td{i}", "e") for i in range(n)]
        accepted_type = w.Listening
    out = memoryview(frames(*msgs))
    sock = peer.sock
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    accepted = refused = 0
    first_refusal = ""
    t0 = time.monotonic()
    deadline = t0 + timeout
    closed = False
    try:
        while accepted + refused < n and time.monotonic() < deadline:
            for _, mask in sel.select(0.1):
                if mask & selectors.EVENT_WRITE and out:
                    with contextlib.suppress(BlockingIOError):
                        out = out[sock.send(out[: 1 << 16]) :]
                    if not out:
                        sel.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        closed = True
                        break
                    for body in peer.decoder.feed(chunk):
                        msg = w.decode(body)
                        if isinstance(msg, accepted_type):
                            accepted += 1
                        elif isinstance(msg, w.Error):
                            refused += 1
                            first_refusal = first_refusal or msg.message
            if closed:
                break
    except OSError as exc:
        first_refusal = first_refusal or f"{type(exc).__name__}: {exc}"
        closed = True
    finally:
        sel.close()
        sock.setblocking(True)
    return {
        "accepted": accepted,
        "refused": refused,
        "first_refusal": first_refusal,
        "closed_by_gateway": closed,
        "register_s": time.monotonic() - t0,
    }


def teardown_one(args: argparse.Namespace, workdir: Path, kind: str, n: int) -> dict[str, Any]:
    gw = Gateway(workdir, f"teardown-{kind}-{n}", extra=args.serve_arg)
    peers: list[RawPeer] = []
    probe: Probe | None = None
    out: dict[str, Any] = {"kind": kind, "n": n}
    try:
        ctl = RawPeer(gw.port, "ctl", args.answer_timeout)
        peers.append(ctl)
        ctl.hello()
        base = ctl.stats(args.answer_timeout) or {}
        reg = RawPeer(gw.port, f"td-{kind}", args.answer_timeout)
        peers.append(reg)
        reg.hello()
        out.update(register_many(reg, kind, n, args.teardown_timeout))
        loaded = ctl.stats(args.teardown_timeout) or {}
        out["registered_seen"] = loaded.get(kind if kind == "senders" else "subscriptions", 0) - (
            base.get(kind if kind == "senders" else "subscriptions", 0)
        )
        probe = Probe(gw.port)
        probe.start()
        probe.wait_answers(50, 10)
        time.sleep(args.probe_baseline)
        t_close = time.monotonic()
        reg.close()
        done = False
        while time.monotonic() < t_close + args.teardown_timeout:
            left = t_close + args.teardown_timeout - time.monotonic()
            st = ctl.stats(max(0.1, left))
            if st is not None and all(
                st.get(k) == base.get(k) for k in ("senders", "subscriptions")
            ):
                done = True
                break
            time.sleep(0.05)
        t_done = time.monotonic()
        time.sleep(0.1)  # a few PONGs after it, so the gap that ends the stall is closed
        t_stop = probe.finish()
        gap, open_gap = probe.max_gap(t_close, t_stop)
        idle_gap, _ = probe.max_gap(t_close - args.probe_baseline, t_close - 1e-9)
        out.update(
            {
                "done": done,
                "stall_ms": gap * 1e3,
                "stall_open": open_gap,
                "until_gone_s": t_done - t_close,
                "idle_gap_ms": idle_gap * 1e3,
                "probe_error": probe.error,
            }
        )
    finally:
        if probe is not None and probe.is_alive():
            probe.finish()
        for peer in peers:
            peer.close()
        gw.stop()
    return out


def scenario_teardown(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    runs = []
    for kind in args.teardown_kinds:
        for n in args.teardown_n:
            res = attempt(f"teardown {kind} {n:,}", teardown_one, args, workdir, kind, n)
            runs.append({"kind": kind, "n": n, **res})
            if "error" in res:
                continue
            progress(
                f"teardown {kind} {n:,}: stall {gap_text(res['stall_ms'] / 1e3, res['stall_open'])}"
                f" ms, registered {res['accepted']:,}/{n:,} in {res['register_s']:.2f} s"
            )
    return {"runs": runs}


# --- fd ---------------------------------------------------------------------------------


def open_idle(gw: Gateway, n: int, settle: float) -> tuple[list[socket.socket], int]:
    """N connections that never send a byte, 50 at a time; (sockets, connects that failed).

    After each batch it waits (at most 1 s) until the gateway's fd count stops
    growing, so the listen backlog does not overflow before the gateway has had
    the chance to accept: the connections reach the gateway as they would over
    time, and only those it cannot take wait in the backlog. Then at most
    ``settle`` s for the connects to complete.
    """
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    failed = 0
    for base in range(0, n, 50):
        for _ in range(min(50, n - base)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", gw.port))
            if err not in (0, errno.EINPROGRESS):
                failed += 1
                s.close()
                continue
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE)
        _settle(gw.fds, 1.0, 0.2)
    pending = len(socks)
    deadline = time.monotonic() + settle
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.1):
            sel.unregister(key.fileobj)
            pending -= 1
    sel.close()
    return socks, failed


def serve_one(port: int, timeout: float) -> dict[str, Any]:
    """Connect, HELLO, ``$gateway stats``, retrying until ``timeout``; served or not, how long."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    attempts = 0
    last = ""
    while time.monotonic() < deadline:
        attempts += 1
        left = deadline - time.monotonic()
        peer = None
        try:
            peer = RawPeer(port, "fd-client", max(0.05, left))
            if peer.hello(deadline - time.monotonic()):
                if peer.stats(deadline - time.monotonic()) is not None:
                    return {"served": True, "s": time.monotonic() - t0, "attempts": attempts}
                last = "no answer to $gateway stats"
            else:
                last = "no WELCOME"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            if peer is not None:
                peer.close()
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    return {"served": False, "s": time.monotonic() - t0, "attempts": attempts, "last": last}


def scenario_fd(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    own_limit = raise_nofile(args.fd_idle + 256)
    idle_n = min(args.fd_idle, own_limit - 128)
    gw = Gateway(workdir, "fd", nofile=args.fd_limit, extra=args.serve_arg)
    socks: list[socket.socket] = []
    out: dict[str, Any] = {"limit": args.fd_limit, "idle_wanted": args.fd_idle, "idle_n": idle_n}
    try:
        t_start = time.monotonic()
        err_start = gw.stderr_bytes()
        socks, failed = open_idle(gw, idle_n, args.fd_settle)
        fds = _settle(gw.fds, args.fd_settle, 0.5)
        out.update({"opened": len(socks), "failed": failed, "gateway_fds": fds})
        t0 = time.monotonic()
        err0 = gw.stderr_bytes()
        out.update(serve_one(gw.port, args.fd_timeout))
        t1 = time.monotonic()
        out["stderr_during_bytes"] = gw.stderr_bytes() - err0
        out["stderr_total_bytes"] = gw.stderr_bytes() - err_start
        out["total_s"] = t1 - t_start
        out["during_s"] = t1 - t0
        out["gateway_alive"] = gw.alive()
    finally:
        for s in socks:
            s.close()
        gw.stop()
    return out


def _settle(read: Callable[[], int], timeout: float, quiet: float) -> int:
    """Poll ``read()`` until it has not changed for ``quiet`` s (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.02)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


# --- busy -------------------------------------------------------------------------------


def scenario_busy(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    gw = Gateway(workdir, "busy", extra=args.serve_arg)
    children: list[Child] = []
    peer: RawPeer | None = None
    out: dict[str, Any] = {"inflight": args.busy_inflight}
    try:
        handler = Child("sig-respond", str(gw.port))
        children.append(handler)
        handler.expect("READY", 30)
        warmup = 0.5
        flooder = Child(
            "soak-busy",
            str(gw.port),
            str(args.busy_inflight),
            str(warmup + args.busy_seconds + 1.0),
        )
        children.append(flooder)
        flooder.expect("READY", 30)
        peer = RawPeer(gw.port, "second", args.answer_timeout)
        peer.hello()
        flooder.send("GO")
        time.sleep(warmup)
        data = pack(PAYLOAD)
        counts: dict[str, int] = {"sent": 0, "ok": 0, "busy": 0, "other": 0, "unanswered": 0}
        lat: list[float] = []
        deadline = time.monotonic() + args.busy_seconds
        while time.monotonic() < deadline:
            t = time.monotonic()
            counts["sent"] += 1
            try:
                response = peer.request("svc", "echo", data, args.answer_timeout)
            except OSError:
                counts["unanswered"] += 1
                break
            if response is None:
                counts["unanswered"] += 1
                continue
            lat.append(time.monotonic() - t)
            key = {ErrorCode.OK: "ok", ErrorCode.BUSY: "busy"}.get(response.status, "other")
            counts[key] += 1
            time.sleep(args.busy_interval)
        lat.sort()
        out["second"] = {**counts, "p50_ms": percentile(lat, 50) * 1e3}
        out["flooder"] = flooder.result(args.busy_seconds + args.answer_timeout + 10)
    finally:
        if peer is not None:
            peer.close()
        for child in children:
            child.stop()
        gw.stop()
    return out


# --- report -----------------------------------------------------------------------------


def attempt(what: str, scenario: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one scenario; a failure of the bench itself becomes its row, not the end of the run."""
    try:
        return scenario(*args)
    except Exception as exc:
        progress(f"{what} failed:\n{traceback.format_exc()}")
        return {"error": " ".join(f"{type(exc).__name__}: {exc}".split())[:200]}


def rows(results: dict[str, Any], shown: list[str]) -> list[list[str]]:
    """The table: scenario | figure | value (rss and lag come from one run)."""
    out: list[list[str]] = []
    results = dict(results)
    for name in ("rss", "fd", "busy"):
        if "error" in results.get(name, {}):
            out.append([name, "bench failed", results.pop(name)["error"]])
    rss = results.get("rss")
    if rss is not None and "rss" in shown:
        side = rss["side"]
        errors = ", ".join(f"{k} {v:,}" for k, v in side["errors"].items()) or "none"
        out += [
            ["rss", "gateway RSS start, MiB", f"{rss['rss_start_mib']:,.1f}"],
            ["rss", "gateway RSS max, MiB", f"{rss['rss_max_mib']:,.1f}"],
            ["rss", "gateway RSS end, MiB", f"{rss['rss_end_mib']:,.1f}"],
            ["rss", "flood", f"{rss['flood_s']:.1f} s, {rss['flood_stopped']}"],
            [
                "rss",
                "flood frames written / connections closed by the gateway",
                f"{rss['flood']['frames']:,} / {rss['flood']['closed_by_gateway']:,}",
            ],
            ["rss", "side client: answered / sent", f"{side['answered']:,} / {side['sent']:,}"],
            ["rss", "side client: answered OK / errors", f"{side['ok']:,} / {errors}"],
            [
                "rss",
                "side client: latency p50 / p99 / max, ms",
                f"{side['p50_ms']:,.1f} / {side['p99_ms']:,.1f} / {side['max_ms']:,.1f}",
            ],
        ]
    if rss is not None and "lag" in shown:
        lag = rss["lag"]
        reported = lag["gateway_max_loop_lag_ms"]
        out += [
            [
                "lag",
                "max gap between probe PONGs (rss run), ms",
                gap_text(lag["probe_max_gap_ms"] / 1e3, lag["probe_gap_open"]),
            ],
            [
                "lag",
                "probe PING round trip p50 / p99, ms",
                f"{lag['probe_p50_ms']:,.2f} / {lag['probe_p99_ms']:,.1f}",
            ],
            [
                "lag",
                "max_loop_lag_ms in $gateway stats",
                "not reported" if reported is None else f"{reported:,.1f}",
            ],
        ]
    for run in results.get("teardown", {}).get("runs", []):
        if "error" in run:
            out.append(["teardown", f"{run['n']:,} {run['kind']}", f"bench failed: {run['error']}"])
            continue
        regs = f"{run['accepted']:,} of {run['n']:,} registered"
        if run["refused"]:
            regs += f", {run['refused']:,} refused ({run['first_refusal'][:60]})"
        stall = gap_text(run["stall_ms"] / 1e3, run["stall_open"])
        if not run["done"]:
            stall += " (not torn down)"
        out.append(["teardown", f"{run['n']:,} {run['kind']}: event-loop stall, ms", stall])
        if run["accepted"] != run["n"]:
            out.append(["teardown", f"  {run['n']:,} {run['kind']}: registrations", regs])
    fd = results.get("fd")
    if fd is not None:
        served = (
            f"yes, in {fd['s']:.2f} s"
            if fd["served"]
            else f"no: not served within {fd['s']:.0f} s ({fd['last'][:60]})"
        )
        out += [
            [
                "fd",
                f"served with RLIMIT_NOFILE {fd['limit']} + {fd['idle_n']:,} idle connections",
                served,
            ],
            [
                "fd",
                "idle connections opened (connect failed); gateway's open fds",
                f"{fd['opened']:,} ({fd['failed']:,}); {fd['gateway_fds']:,}",
            ],
            [
                "fd",
                "gateway stderr while the client tried, bytes",
                f"{fd['stderr_during_bytes']:,} in {fd['during_s']:.1f} s",
            ],
            [
                "fd",
                "gateway stderr over the scenario, bytes",
                f"{fd['stderr_total_bytes']:,} in {fd['total_s']:.1f} s",
            ],
        ]
    busy = results.get("busy")
    if busy is not None:
        second, flooder = busy["second"], busy["flooder"]
        answered = max(1, second["sent"] - second["unanswered"])
        out += [
            [
                "busy",
                f"second requester got BUSY (flooder keeps {busy['inflight']} pending), %",
                f"{100 * second['busy'] / answered:.1f} ({second['busy']:,} of {answered:,})",
            ],
            [
                "busy",
                "second requester: OK / other errors / unanswered",
                f"{second['ok']:,} / {second['other']:,} / {second['unanswered']:,}",
            ],
            [
                "busy",
                "flooder: answers OK / BUSY",
                f"{flooder['ok']:,} / {flooder['busy']:,}",
            ],
        ]
    return out


def finite(value: Any) -> Any:
    """``value`` with every NaN replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--smoke", action="store_true", help="every scenario at a tiny scale")
    ap.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="the results as JSON: alone, on stdout instead of the table; with PATH, into it",
    )
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `sig serve` argument")
    ap.add_argument("--logs", help="keep the gateways' stdout/stderr in this directory")
    ap.add_argument("--answer-timeout", type=float, default=15.0, help="s a request may take")
    ap.add_argument("--flood-clients", type=int, default=40)
    ap.add_argument("--flood-seconds", type=float, default=60.0)
    ap.add_argument("--side-interval", type=float, default=0.05, help="s between side requests")
    ap.add_argument("--rss-cap-mib", type=float, default=3072.0, help="stop the flood above it")
    ap.add_argument("--teardown-n", default="10000,20000,40000")
    ap.add_argument("--teardown-kinds", default="senders,listeners")
    ap.add_argument("--teardown-timeout", type=float, default=120.0)
    ap.add_argument("--probe-baseline", type=float, default=0.3, help="s of probe before close")
    ap.add_argument("--fd-limit", type=int, default=1024)
    ap.add_argument("--fd-idle", type=int, default=1100)
    ap.add_argument("--fd-timeout", type=float, default=30.0)
    ap.add_argument("--fd-settle", type=float, default=5.0, help="s for the idle connects")
    ap.add_argument("--busy-inflight", type=int, default=256)
    ap.add_argument("--busy-seconds", type=float, default=10.0)
    ap.add_argument("--busy-interval", type=float, default=0.002, help="s between requests")
    args = ap.parse_args(argv)
    if args.smoke:
        args.flood_clients, args.flood_seconds = 4, 2.0
        args.answer_timeout, args.teardown_timeout = 3.0, 10.0
        args.teardown_n, args.probe_baseline = "300,600", 0.1
        args.fd_limit, args.fd_idle, args.fd_timeout, args.fd_settle = 128, 150, 2.0, 2.0
        args.busy_inflight, args.busy_seconds = 100, 1.0
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    args.teardown_n = [int(n) for n in args.teardown_n.split(",") if n.strip()]
    args.teardown_kinds = [k.strip() for k in args.teardown_kinds.split(",") if k.strip()]
    if set(args.teardown_kinds) - {"senders", "listeners"}:
        ap.error("--teardown-kinds: senders, listeners")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally blocks stop the children
    method = [
        f"gateway: `sig serve --host 127.0.0.1 --port 0 --no-timer {' '.join(args.serve_arg)}`"
        "; one per scenario; peers on raw sockets (sig.protocol), all on loopback",
        f"rss: {args.flood_clients} non-reading clients flood $gateway links / svc.echo / PING "
        f"for {args.flood_seconds:g} s; VmRSS every 0.25 s; side client: svc.echo every "
        f"{args.side_interval:g} s, answer timeout {args.answer_timeout:g} s",
        "lag: largest gap between PONGs of back-to-back PINGs during the rss flood",
        f"teardown: one link registers {', '.join(f'{n:,}' for n in args.teardown_n)} "
        f"{'/'.join(args.teardown_kinds)}, then closes; stall = largest PONG gap until "
        "$gateway stats shows them gone",
        f"fd: gateway under RLIMIT_NOFILE {args.fd_limit} (soft = hard), {args.fd_idle:,} idle "
        f"connections, then connect + HELLO + $gateway stats within {args.fd_timeout:g} s",
        f"busy: one requester keeps {args.busy_inflight} svc.echo requests pending; a second "
        f"one sends one at a time for {args.busy_seconds:g} s",
    ]
    if args.json != "-":
        header("sig gateway soak (issue 9)", method)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sig-soak-") as tmp:
        workdir = Path(args.logs or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if "rss" in args.only or "lag" in args.only:
            progress(f"rss/lag: {args.flood_seconds:g} s of flood...")
            results["rss"] = attempt("rss", scenario_rss, args, workdir)
        if "teardown" in args.only:
            results["teardown"] = scenario_teardown(args, workdir)
        if "fd" in args.only:
            progress(f"fd: {args.fd_idle:,} idle connections...")
            results["fd"] = attempt("fd", scenario_fd, args, workdir)
        if "busy" in args.only:
            progress(f"busy: {args.busy_seconds:g} s...")
            results["busy"] = attempt("busy", scenario_busy, args, workdir)
    if args.json:
        doc = {"machine": machine(), "method": method, "args": vars(args), "results": results}
        text = json.dumps(finite(doc), indent=1, default=str)
        if args.json == "-":
            print(text)
            return 0
        Path(args.json).write_text(text + "\n")
    print(table(["scenario", "figure", "value"], rows(results, args.only)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
