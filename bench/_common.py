"""Shared helpers of the benchmark scripts: machine line, statistics, tables, processes.

Benchmarks are scripts, not tests: each prints the machine, the method and a
table of medians with min-max over several runs. Child processes talk to the
driving script over pipes with one line per message (``READY ...``,
``GO``, ``RESULT {json}``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree's sig

from sig.protocol import messages as w
from sig.protocol.data import unpack
from sig.protocol.frame import FrameDecoder, encode_frame

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PROCS = BENCH_DIR / "_procs.py"


def machine() -> str:
    """One line: CPU count and model, Python, OS, load (the machine may be shared)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = " load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model or platform.machine()}), "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()},{load}"
    )


def header(title: str, method: Sequence[str]) -> None:
    print(f"# {title}")
    print(f"machine: {machine()}")
    for line in method:
        print(f"method: {line}")
    print()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def summary(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median (min-max)`` of the runs, or ``-`` when there are none."""
    vals = [v for v in values if v == v]  # drop NaN
    if not vals:
        return "-"
    med = fmt.format(statistics.median(vals))
    if len(vals) == 1:
        return med
    return f"{med} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"


def median(values: Sequence[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (readable as plain text too)."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        )
    return "\n".join(lines)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, all its threads, so far (Linux /proc, ns resolution).

    /proc/PID/task/*/schedstat counts nanoseconds per thread; /proc/PID/stat
    only clock ticks (10 ms), too coarse for short runs. Threads that ended
    are not counted: nats-server's goroutines run on long-lived threads.
    """
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
        if total:
            return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def raise_nofile(need: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``need`` (as far as the hard limit allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


class Child:
    """A child process speaking the line protocol; always stopped by its PID."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, str(PROCS), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """Read lines until one starts with ``prefix``; return the rest of it."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.args[0]} exited ({self.proc.poll()}) before {prefix}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise RuntimeError(f"{self.args[0]}: no {prefix} within {timeout} s")

    def result(self, timeout: float = 120.0) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.expect("RESULT ", timeout))
        return out

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.send("QUIT")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError, OSError):  # a child that died
                    stream.close()


def terminate(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a helper process (broker, socat), SIGKILL it if it lingers, reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: The line ``sig serve`` prints once it listens (``--port 0``: the port it got).
SERVE_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@contextlib.contextmanager
def sig_serve(*flags: str) -> Iterator[int]:
    """``sig serve --port 0 --no-discovery --log-level warning FLAGS...`` as a child
    process on a free loopback port; yields the port, stops it on exit."""
    args = [sys.executable, "-m", "sig", "serve", "--port", "0", "--no-discovery",
            "--log-level", "warning", *flags]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        match = SERVE_LISTENING.search(proc.stdout.readline())
        if match is None:
            raise RuntimeError("sig serve did not start")
        yield int(match.group(1))
    finally:
        terminate(proc)



def find_mosquitto() -> str | None:
    """Path of the mosquitto broker binary, or None."""
    for candidate in (
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


MOSQUITTO_HINT = (
    "mosquitto not found: install it (Debian/Ubuntu: apt-get install mosquitto; "
    "macOS: brew install mosquitto) and paho-mqtt (pip install -e '.[bench]')"
)


class BrokerProcess:
    """A peer broker's process on 127.0.0.1:port: its config written, started, stopped."""

    NAME = "broker"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / f"{self.NAME}-{self.port}.conf"
        self.log = workdir / f"{self.NAME}-{self.port}.log"
        self.conf.write_text("\n".join([*self.config_lines(), ""]))
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.NAME} did not start (see {self.log})") from None
                time.sleep(0.02)

    def config_lines(self) -> list[str]:
        """The config file's lines (``self.port`` and ``self.log`` are set)."""
        raise NotImplementedError

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        terminate(self.proc)


class Mosquitto(BrokerProcess):
    """A private Mosquitto on 127.0.0.1:port, configured for no silent QoS-0 drops."""

    NAME = "mosquitto"

    def config_lines(self) -> list[str]:
        return [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # 0 = no limit: QoS-0 messages for a subscriber whose socket is
            # full are queued, not dropped (mosquitto 2 drops them once
            # either queue limit is reached).
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "persistence false",
            "set_tcp_nodelay true",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
        ]


def find_nats_server() -> str | None:
    """Path of the nats-server binary, or None."""
    for candidate in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


NATS_HINT = (
    "nats-server not found: install it (Debian/Ubuntu: apt-get install nats-server) "
    "and nats-py (pip install -e '.[bench]')"
)


class NatsServer(BrokerProcess):
    """A private nats-server on 127.0.0.1:port, configured not to cut slow consumers early."""

    NAME = "nats-server"

    def config_lines(self) -> list[str]:
        return [
            "host: 127.0.0.1",
            f"port: {self.port}",
            # as Mosquitto here: a slow subscriber is queued for (up to
            # 1 GiB, 60 s), not disconnected at the default 64 MiB / 10 s
            "max_pending: 1073741824",
            'write_deadline: "60s"',
            f'log_file: "{self.log}"',
        ]


def frames(*msgs: w.Message) -> bytes:
    """The wire bytes of ``msgs``, one frame each."""
    return b"".join(encode_frame(w.encode(m)) for m in msgs)


class RawPeer:
    """A sig peer on a plain blocking socket, built from the codec (sig.protocol) only.

    No asyncio and no client library in between: what it measures is the
    gateway. Every wait has a deadline, so a gateway that stalls or never
    answers costs a timeout, never a hang. Messages that arrive while it waits
    for something else are dropped: a caller only asks for what it waits for.
    """

    def __init__(self, port: int, name: str, timeout: float = 10.0) -> None:
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.decoder = FrameDecoder()
        self.inbox: list[w.Message] = []
        self._ids = itertools.count(1)

    def hello(self, timeout: float = 10.0) -> bool:
        """Open the session (no keepalive asked); True once WELCOME came."""
        self.send(w.Hello(self.name, 65535, 0))
        return self.wait(lambda m: isinstance(m, w.Welcome), timeout) is not None

    def send(self, *msgs: w.Message) -> None:
        self.sock.sendall(frames(*msgs))

    def read(self, timeout: float) -> bool:
        """Receive once (at most ``timeout`` s) into ``inbox``; False when the gateway closed."""
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(1 << 16)
        except (TimeoutError, BlockingIOError):
            return True
        if not data:
            return False
        for body in self.decoder.feed(data):
            try:
                self.inbox.append(w.decode(body))
            except Exception:  # a frame this peer cannot parse is not what it waits for
                continue
        return True

    def wait(
        self,
        match: Callable[[w.Message], bool],
        timeout: float,
        stop: threading.Event | None = None,
    ) -> w.Message | None:
        """The first message that ``match``es within ``timeout`` s (or until ``stop``), else None.

        Raises ConnectionError when the gateway closes the connection.
        """
        deadline = time.monotonic() + timeout
        while True:
            while self.inbox:
                msg = self.inbox.pop(0)
                if match(msg):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return None
            if not self.read(min(left, 0.2)):
                raise ConnectionError(f"{self.name}: the gateway closed the connection")

    def request(
        self, sender: str, method: str, data: bytes = b"", timeout: float = 10.0
    ) -> w.Response | None:
        """One request; its RESPONSE, or None when none came within ``timeout`` s."""
        rid = next(self._ids) & 0xFFFFFFFF
        self.send(w.Request(rid, sender, method, data))
        msg = self.wait(lambda m: isinstance(m, w.Response) and m.request_id == rid, timeout)
        return msg if isinstance(msg, w.Response) else None

    def stats(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """``$gateway stats``, or None when it is not answered in time."""
        response = self.request("$gateway", "stats", b"", timeout)
        if response is None or response.status:
            return None
        value: dict[str, Any] = unpack(response.data)
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
