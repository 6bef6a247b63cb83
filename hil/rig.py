"""Hardware-in-the-loop rig: a gateway, a device on a serial port, a TCP client.

With ``SIG_HIL_PORT`` set (and optionally ``SIG_HIL_BAUD``, default 115200) the
device is a real board on that port running ``firmware_bridge/examples/sig_sensor``.
Without it, the device is the host-built ``posix_device`` on one end of a socat
pty pair and the gateway opens the other end: the same cases then run in CI.

Board mode needs commands for the cases a test cannot do to hardware by itself:
``SIG_HIL_RESET_CMD`` (reset the board, e.g. toggle its reset line through a
GPIO), ``SIG_HIL_UNPLUG_CMD`` and ``SIG_HIL_REPLUG_CMD`` (cut and restore the
USB port's power, e.g. with uhubctl). A case whose command is not set is
skipped in board mode only; in socat mode nothing is skipped.
"""

from __future__ import annotations

import os
import queue
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from procs import Gateway, Proc  # noqa: E402
from socat import SocatPair, SocatPairs  # noqa: E402

import sig  # noqa: E402

FIRMWARE = ROOT / "firmware_bridge"
DEVICE_BIN = FIRMWARE / "build" / "posix_device"
SENDER = os.environ.get("SIG_HIL_SENDER", "sensor1")
BOARD_PORT = os.environ.get("SIG_HIL_PORT")
BAUD = int(os.environ.get("SIG_HIL_BAUD", "115200"))
#: The device reads every 200 ms and keeps alive every 500 ms (link timeout 1.5 s).
INTERVAL_MS = 200
KEEPALIVE_MS = 500
WAIT = 15.0


def build_device() -> Path:
    if BOARD_PORT:
        return DEVICE_BIN
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), "examples"], check=True)
    assert DEVICE_BIN.exists()
    return DEVICE_BIN


class Inbox:
    """Events a TCP listener received, to wait on without sleeping."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[str, str, Any]] = queue.Queue()

    def __call__(self, info: dict[str, Any], data: Any) -> None:
        self.q.put((info["sender"], info["event"], data))

    def wait(self, sender: str, event: str, timeout: float = WAIT) -> Any:
        """Data of the next (sender, event) to arrive; earlier other events are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {sender}:{event} within {timeout} s")
            try:
                s, e, data = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if (s, e) == (sender, event):
                return data

    def drain(self) -> None:
        while not self.q.empty():
            self.q.get_nowait()


class Rig:
    """One gateway, one device, one TCP client."""

    def __init__(self, tmp: Path, device_binary: Path) -> None:
        self.board = BOARD_PORT is not None
        self.device_binary = device_binary
        self.pairs = SocatPairs(tmp)
        self.pair: SocatPair | None = None
        self.device: Proc | None = None
        if self.board:
            assert BOARD_PORT is not None
            port_path = BOARD_PORT
        else:
            self.pair = self.pairs.pair("uart")
            port_path = str(self.pair.a)
        self.gateway = Gateway(0, "--no-timer", "--serial", f"{port_path}:{BAUD}")
        self.client = sig.ClientRouter(
            host="127.0.0.1", port=self.gateway.port, name="hil-client", auto_reconnect=False
        )
        self.client.connect()
        self.inbox = Inbox()

    def listen(self, sender: str | None, event: str | None) -> Inbox:
        self.client.add_listener(self.inbox, sender, event)
        return self.inbox

    def wait_device_listening(self) -> None:
        """Return once the gateway has taken the device's LISTEN registrations.

        A device sends its LISTENs right after its REGISTER_SENDER, before it can
        answer anything; the serial link is in order, so the gateway has handled
        them by the time a response to a request made now comes back.
        """
        self.client.request(SENDER, "get_temp")

    # --- the device ---------------------------------------------------------

    def start_device(self) -> None:
        if self.board:
            return
        assert self.pair is not None
        self.device = Proc(
            [
                str(self.device_binary),
                "--port",
                str(self.pair.b),
                "--baud",
                str(BAUD),
                "--sender",
                SENDER,
                "--interval-ms",
                str(INTERVAL_MS),
                "--keepalive-ms",
                str(KEEPALIVE_MS),
            ]
        )

    def device_lines(self) -> list[str]:
        return list(self.device.lines) if self.device else []

    def reset_device(self) -> None:
        """The device restarts (power glitch, watchdog, reset button)."""
        if self.board:
            _run_env_command("SIG_HIL_RESET_CMD")
            return
        assert self.device is not None
        self.device.kill()
        self.start_device()

    def unplug(self) -> None:
        """The USB adapter goes away: port gone, device powered off."""
        if self.board:
            _run_env_command("SIG_HIL_UNPLUG_CMD")
            return
        assert self.pair is not None and self.device is not None
        self.pair.unplug()
        assert self.device.wait(WAIT) == 2  # posix_device: tty_error, exit status 2
        assert any(line.startswith("tty_error") for line in self.device.lines)

    def replug(self) -> None:
        if self.board:
            _run_env_command("SIG_HIL_REPLUG_CMD")
            return
        assert self.pair is not None
        self.pair.replug()
        self.start_device()

    def close(self) -> None:
        self.client.close()
        if self.device is not None:
            self.device.kill()
        self.gateway.stop()
        self.pairs.close()


def _run_env_command(name: str) -> None:
    command = os.environ.get(name)
    if not command:
        pytest.skip(f"board mode: set {name} to run this case on real hardware")
    subprocess.run(shlex.split(command), check=True, timeout=30)
