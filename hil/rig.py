"""Hardware-in-the-loop rig: a gateway, a device on a serial port, a TCP client.

Three kinds of device, the same cases for each:

``board``
    A real board on ``SIG_HIL_PORT`` (and optionally ``SIG_HIL_BAUD``, default
    115200) running ``firmware_bridge/examples/sig_sensor``. Chosen whenever
    ``SIG_HIL_PORT`` is set.
``posix``
    The host-built ``posix_device`` on one end of a socat pty pair; the
    gateway opens the other end.
``qemu``
    The sensor sketch built for the nRF51 (``make -C firmware_bridge
    target-sensor``: arm-none-eabi-gcc, the library's shipped configuration,
    startup code and UART/timer layer of ``firmware_bridge/targets/nrf51``) in
    ``qemu-system-arm -M microbit``, its UART0 on the socat pty: the firmware
    image itself is the device. QEMU's monitor (QMP, a unix socket) resets the
    CPU and reads the RAM, so the stack high-water mark of the painted stack
    is measured after every case (``stack_peaks``).

Without ``SIG_HIL_PORT`` every case runs against ``posix`` and ``qemu``;
``SIG_HIL_DEVICE=posix`` or ``=qemu`` runs one of them.

Board mode needs commands for the cases a test cannot do to hardware by itself:
``SIG_HIL_RESET_CMD`` (reset the board, e.g. toggle its reset line through a
GPIO), ``SIG_HIL_UNPLUG_CMD`` and ``SIG_HIL_REPLUG_CMD`` (cut and restore the
USB port's power, e.g. with uhubctl). A case whose command is not set is
skipped in board mode only; with posix and qemu nothing is skipped.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from procs import Gateway, Proc, wait_until  # noqa: E402
from socat import SocatPair, SocatPairs  # noqa: E402

import sig  # noqa: E402

FIRMWARE = ROOT / "firmware_bridge"
DEVICE_BIN = FIRMWARE / "build" / "posix_device"
#: posix_device built with SIG_CONFIG_AUTH=1: every frame signed (PROTOCOL.md section 5).
SIGNED_BIN = FIRMWARE / "build" / "posix_device_signed"
POSIX_KINDS = ("posix", "posix-signed")
QEMU_ELF = FIRMWARE / "build" / "targets" / "m0" / "sig_sensor.elf"
QEMU_SYMS = QEMU_ELF.with_suffix(".syms")
QEMU = shutil.which("qemu-system-arm") or "qemu-system-arm"
SENDER = os.environ.get("SIG_HIL_SENDER", "sensor1")
BOARD_PORT = os.environ.get("SIG_HIL_PORT")
BAUD = int(os.environ.get("SIG_HIL_BAUD", "115200"))
#: posix_device reads every 200 ms and keeps alive every 500 ms (link timeout 1.5 s).
INTERVAL_MS = 200
POSIX_KEEPALIVE_MS = 500
#: The sketch's settings (examples/sig_sensor/sig_sensor.ino): a reading a second, 2 s keepalive.
SKETCH_KEEPALIVE_MS = 2000
WAIT = 15.0
#: The stack the nRF51 firmware reserves (targets/nrf51/sections.ld) and its paint.
STACK_PAINT = 0xA5A5A5A5


def device_kinds() -> list[str]:
    """The kinds the cases run against in this session."""
    if BOARD_PORT:
        return ["board"]
    chosen = os.environ.get("SIG_HIL_DEVICE")
    if chosen:
        assert chosen in (*POSIX_KINDS, "qemu"), (
            f"SIG_HIL_DEVICE={chosen}: posix, posix-signed or qemu"
        )
        return [chosen]
    return [*POSIX_KINDS, "qemu"]


def build_device(kind: str) -> Path:
    """Build what a kind runs (nothing for a board) and return its path."""
    if kind == "board":
        return DEVICE_BIN
    target = "examples" if kind in POSIX_KINDS else "target-sensor"
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), target], check=True, timeout=600)
    path = {"posix": DEVICE_BIN, "posix-signed": SIGNED_BIN}.get(kind, QEMU_ELF)
    assert path.exists(), path
    return path


def sketch_temperatures() -> set[float]:
    """Every value the sketch can send in QEMU: analogRead() * (100.0f / 1023.0f) in float32.

    targets/nrf51/arduino.cpp's fake sensor reads 200, 205, ..., 245; the
    product of two float32 is exact in a double, so rounding it once to float32
    is the sketch's float32 multiplication.
    """

    def f32(x: float) -> float:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])

    scale = f32(100.0 / 1023.0)
    return {f32(f32(200 + 5 * k) * scale) for k in range(10)}


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


class Qmp:
    """QEMU's machine protocol on a unix socket: one command at a time."""

    def __init__(self, path: Path) -> None:
        # QEMU creates the socket file before it listens: connect until it accepts
        self.sock = wait_until(lambda: self._connect(path), WAIT, f"QEMU's QMP socket {path}")
        self.stream = self.sock.makefile("rw", encoding="utf-8")
        greeting = json.loads(self.stream.readline())
        assert "QMP" in greeting, greeting
        self.command("qmp_capabilities")

    @staticmethod
    def _connect(path: Path) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(WAIT)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        return sock

    def command(self, name: str, **arguments: Any) -> Any:
        """Run one command and return its result; events in between are skipped."""
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.stream.write(json.dumps(request) + "\n")
        self.stream.flush()
        while True:
            line = self.stream.readline()
            assert line, f"QMP closed during {name}"
            reply = json.loads(line)
            if "error" in reply:
                raise AssertionError(f"QMP {name}: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def _stack_bounds() -> tuple[int, int]:
    """(__StackLimit, __StackTop) of the firmware, from the symbols make wrote."""
    syms = {}
    for line in QEMU_SYMS.read_text(encoding="ascii").splitlines():
        addr, _, name = line.split()
        syms[name] = int(addr, 16)
    return syms["__StackLimit"], syms["__StackTop"]


class QemuDevice:
    """The nRF51 firmware in QEMU, UART0 on a tty path, QMP on a socket."""

    def __init__(self, elf: Path, tty: Path, workdir: Path) -> None:
        self.qmp_path = workdir / "qmp.sock"
        self.mem_path = workdir / "stack.bin"
        if self.qmp_path.exists():
            self.qmp_path.unlink()
        self.proc = Proc(
            [
                QEMU,
                "-M",
                "microbit",
                "-display",
                "none",
                "-monitor",
                "none",
                "-semihosting-config",
                "enable=on,target=native",
                "-chardev",
                f"serial,id=uart,path={tty}",
                "-serial",
                "chardev:uart",
                "-qmp",
                f"unix:{self.qmp_path},server=on,wait=off",
                "-kernel",
                str(elf),
            ]
        )
        self.qmp = Qmp(self.qmp_path)

    @property
    def running(self) -> bool:
        return self.proc.popen.poll() is None

    def reset(self) -> None:
        """A system reset: the firmware starts over from its reset vector."""
        self.qmp.command("system_reset")

    def stack_peak(self) -> int:
        """Bytes of the painted stack ever used since the last reset.

        The reset handler fills __StackLimit..SP with the paint; the lowest
        word that no longer holds it is the deepest the stack went (an
        interrupt's frame included).
        """
        low, top = _stack_bounds()
        self.qmp.command("memsave", val=low, size=top - low, filename=str(self.mem_path))
        data = self.mem_path.read_bytes()
        assert len(data) == top - low
        paint = struct.pack("<I", STACK_PAINT)
        unused = 0
        while unused < len(data) and data[unused : unused + 4] == paint:
            unused += 4
        return len(data) - unused

    def stop(self) -> None:
        self.qmp.close()
        self.proc.kill()


@dataclass
class StackRecord:
    """Stack high-water marks of the QEMU firmware, one per case."""

    peaks: dict[str, int] = field(default_factory=dict)
    reserved: int = 0


#: Filled by Rig.close() for the qemu kind; conftest.py reports it.
stack_peaks = StackRecord()


class Rig:
    """One gateway, one device, one TCP client."""

    def __init__(self, tmp: Path, kind: str, device_binary: Path, case: str = "") -> None:
        self.kind = kind
        self.board = kind == "board"
        self.case = case
        self.tmp = tmp
        self.device_binary = device_binary
        self.keepalive_ms = POSIX_KEEPALIVE_MS if kind in POSIX_KINDS else SKETCH_KEEPALIVE_MS
        #: The posix-signed kind: the port and the device share this key file.
        self.key_file: Path | None = None
        if kind == "posix-signed":
            self.key_file = tmp / "device.key"
            self.key_file.write_text(os.urandom(32).hex() + "\n")
            self.key_file.chmod(0o600)
        self.pairs = SocatPairs(tmp)
        self.pair: SocatPair | None = None
        self.device: Proc | None = None
        self.qemu: QemuDevice | None = None
        if self.board:
            assert BOARD_PORT is not None
            port_path = BOARD_PORT
        else:
            self.pair = self.pairs.pair("uart")
            port_path = str(self.pair.a)
        spec = f"{port_path}:{BAUD}" + (f",key_file={self.key_file}" if self.key_file else "")
        self.gateway = Gateway(0, "--no-timer", "--serial", spec)
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
        if self.kind == "qemu":
            self.qemu = QemuDevice(self.device_binary, self.pair.b, self.tmp)
            return
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
                str(POSIX_KEEPALIVE_MS),
                *(["--key-file", str(self.key_file)] if self.key_file else []),
            ]
        )

    def device_lines(self) -> list[str]:
        return list(self.device.lines) if self.device else []

    def reset_device(self) -> None:
        """The device restarts (power glitch, watchdog, reset button)."""
        if self.board:
            _run_env_command("SIG_HIL_RESET_CMD")
            return
        if self.qemu is not None:
            self._record_stack()
            self.qemu.reset()
            return
        assert self.device is not None
        self.device.kill()
        self.start_device()

    def unplug(self) -> None:
        """The USB adapter goes away: port gone, device powered off."""
        if self.board:
            _run_env_command("SIG_HIL_UNPLUG_CMD")
            return
        assert self.pair is not None
        if self.qemu is not None:
            assert self.qemu.running, self.qemu.proc.stderr_text()
            self._record_stack()
            self.pair.unplug()
            self.qemu.stop()  # the board loses its power with the adapter
            self.qemu = None
            return
        assert self.device is not None
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

    def stack_peak(self) -> int:
        """The QEMU firmware's stack high-water mark now (qemu kind only)."""
        assert self.qemu is not None, "only the qemu device has a readable RAM"
        return self.qemu.stack_peak()

    def _record_stack(self) -> None:
        assert self.qemu is not None
        peak = self.qemu.stack_peak()
        low, top = _stack_bounds()
        stack_peaks.reserved = top - low
        stack_peaks.peaks[self.case] = max(peak, stack_peaks.peaks.get(self.case, 0))
        assert peak < top - low, f"the firmware used all {top - low} B of its stack"

    def close(self) -> None:
        """Stop everything; for QEMU first check it still runs and record its stack."""
        try:
            if self.qemu is not None:
                assert self.qemu.running, f"QEMU ended: {self.qemu.proc.stderr_text()[-2000:]}"
                self._record_stack()
        finally:
            self.client.close()
            if self.qemu is not None:
                self.qemu.stop()
            if self.device is not None:
                self.device.kill()
            self.gateway.stop()
            self.pairs.close()


def _run_env_command(name: str) -> None:
    command = os.environ.get(name)
    if not command:
        pytest.skip(f"board mode: set {name} to run this case on real hardware")
    subprocess.run(shlex.split(command), check=True, timeout=30)
