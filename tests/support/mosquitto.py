"""A private Mosquitto broker on a free 127.0.0.1 port, for the MQTT bridge's tests.

Usage::

    from mosquitto import Mosquitto

    with Mosquitto(tmp_path) as broker:   # started: it accepts connections
        broker.url                        # mqtt://127.0.0.1:PORT
        broker.restart()                  # stopped, then started on the same port
        broker.sub("sig/#")               # a mosquitto_sub child (its lines collected)
        broker.pub("topic", "payload")    # mosquitto_pub, to its end

Nothing sleeps to wait: start-up polls the port against a bounded deadline.
Retained messages live only in the broker's memory (``persistence false``),
so a restart forgets them, as a broker that lost its disk would.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from procs import Proc

START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise AssertionError("mosquitto is not installed (./run-tests installs it)")


def password_file(workdir: Path, user: str, password: str) -> Path:
    """A ``mosquitto_passwd`` file with one user (for a ``password_file`` line in ``extra``)."""
    path = workdir / "mosquitto.passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), user, password], check=True,
                   timeout=START_TIMEOUT, capture_output=True)  # fmt: skip
    return path


class Mosquitto:
    """One broker process; ``port`` stays the same across restarts."""

    def __init__(self, workdir: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        """``extra``: more lines for the listener (TLS files, password_file, ...)."""
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.conf.write_text(
            "\n".join([
                f"listener {self.port} 127.0.0.1",
                # as root, mosquitto would drop to its own user, who cannot read workdir
                f"user {getpass.getuser()}",
                *(extra or ("allow_anonymous true",)),
                "persistence false",
                "max_queued_messages 0",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "",
            ])
        )  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.children: list[Proc] = []
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.workdir / f"mosquitto-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mosquitto did not start on {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def sub(self, *topics: str, retained_only: bool = False) -> Proc:
        """``mosquitto_sub -v`` on ``topics``: a child whose lines ``TOPIC PAYLOAD`` collect."""
        argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-v", "-V", "mqttv5"]
        for topic in topics:
            argv += ["-t", topic]
        if retained_only:
            argv += ["--retained-only", "-W", "2"]
        proc = Proc(argv)
        self.children.append(proc)
        return proc

    def pub(self, topic: str, payload: str | None, *, retain: bool = False) -> None:
        """``mosquitto_pub`` one message (None: an empty one), to its end."""
        argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-t", topic]
        argv += ["-n"] if payload is None else ["-m", payload]
        if retain:
            argv.append("-r")
        subprocess.run(argv, check=True, timeout=START_TIMEOUT, capture_output=True)

    def close(self) -> None:
        for child in self.children:
            child.kill()
        self.stop()

    def __enter__(self) -> Mosquitto:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
