"""Virtual serial pairs from socat, for the serial tests (and hil/ on CI).

``socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`` joins two ptys:
bytes written to A come out of B and back. Closing one side does not stop
socat (the other side just sees no more data, like a UART whose far end is
powered off); killing socat makes both sides fail their next read with EIO,
which is what an unplugged USB adapter looks like to the gateway.

Usage::

    from socat import SocatPairs

    @pytest.fixture
    def socat(tmp_path):
        with SocatPairs(tmp_path) as pairs:
            yield pairs

    pair = socat.pair("dev1")   # started, both links exist
    pair.a, pair.b              # paths: open one side each
    pair.unplug()               # SIGKILL: both sides die
    pair.replug()               # a new socat at the same paths

Nothing sleeps: start-up waits for socat's "starting data transfer loop"
notice (it creates the links before it prints it) with a bounded deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from types import TracebackType

SOCAT = shutil.which("socat") or "socat"
START_TIMEOUT = 10.0  #: seconds socat may take to create its ptys
_READY = "starting data transfer loop"


class SocatPair:
    """One socat process joining the ptys linked at ``a`` and ``b``."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a = a
        self.b = b
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self.starts = 0
        self._ready = threading.Event()
        self._drainer = threading.Thread()

    def start(self, timeout: float = START_TIMEOUT) -> SocatPair:
        """Start socat and return once both links exist; raises AssertionError if not."""
        if self.running:
            raise AssertionError(f"socat for {self.a} is already running")
        self._ready = threading.Event()
        argv = [SOCAT, "-d", "-d"]
        argv += [f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._drainer = threading.Thread(
            target=self._drain, args=(self.proc, self._ready), daemon=True
        )
        self._drainer.start()
        self.starts += 1
        if not self._ready.wait(timeout) or not (self.a.exists() and self.b.exists()):
            self.stop()
            raise AssertionError(f"socat did not create {self.a} and {self.b}: {self.log[-5:]}")
        return self

    def _drain(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # keep reading so socat never blocks on a full pipe
            self.log.append(line.rstrip("\n"))
            if _READY in line:
                ready.set()
        ready.set()  # socat exited: stop waiting, start() checks the links

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def unplug(self) -> None:
        """Kill socat (SIGKILL, no clean-up): both sides' reads fail, links dangle."""
        self._end(signal.SIGKILL)

    def replug(self, timeout: float = START_TIMEOUT) -> SocatPair:
        """A new socat at the same link paths (it replaces the dangling links)."""
        if self.running:
            self.unplug()
        return self.start(timeout)

    def stop(self) -> None:
        """Terminate socat (it removes its links) and reap it."""
        self._end(signal.SIGTERM)
        for path in (self.a, self.b):
            with contextlib.suppress(FileNotFoundError):
                if path.is_symlink():
                    path.unlink()

    def _end(self, signo: int) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signo)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
        self._drainer.join(5.0)  # socat is gone: its stderr reaches EOF
        if proc.stderr is not None:
            with contextlib.suppress(OSError):
                proc.stderr.close()
        self.proc = None


class SocatPairs:
    """Factory of socat pairs under one directory; ``close()`` stops them all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pairs: list[SocatPair] = []

    def pair(self, name: str = "tty") -> SocatPair:
        """Start a pair whose links are ``<dir>/<name>-a`` and ``<dir>/<name>-b``."""
        pair = SocatPair(self.directory / f"{name}-a", self.directory / f"{name}-b")
        self.pairs.append(pair)
        return pair.start()

    def close(self) -> None:
        for pair in self.pairs:
            pair.stop()

    def __enter__(self) -> SocatPairs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class NoisyRelay:
    """Line noise between two pairs: ``device <-> [left] relay [right] <-> gateway``.

    Bytes from ``left`` to ``right`` (device to gateway) are cut into frames at
    each 0x00 and each frame is written whole, after flipping one random bit in
    a ``fraction`` of its bytes (``random.Random(seed)``) while ``noisy`` is set.
    The other direction passes untouched.

    With ``keep_zeros`` (the default) a flip never makes or unmakes a 0x00, so
    frame boundaries survive and each corrupted frame is exactly one dropped
    frame at the gateway (CRC, COBS or length error): ``corrupted`` must equal
    ``crc_errors + framing_errors + oversize`` and every frame in ``intact``
    must be delivered. Without it a flip may split or merge frames; then
    ``reference`` (a decoder fed exactly the bytes written to ``right``) says
    what the gateway's counters must be.

    With ``fix_crc`` the bits are flipped in the body only and the frame is
    framed again with a fresh CRC: every corrupted frame passes the CRC, so
    only a check above it (a signed link's tag) can catch it.
    """

    def __init__(
        self,
        left: Path,
        right: Path,
        *,
        fraction: float,
        seed: int,
        keep_zeros: bool = True,
        fix_crc: bool = False,
    ) -> None:
        import random

        from sig.protocol.frame import FrameDecoder

        self.fraction = fraction
        self.keep_zeros = keep_zeros
        self.fix_crc = fix_crc
        self.noisy = False
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.frames = 0  #: non-empty frames forwarded device -> gateway
        self.flipped_bytes = 0
        self.intact: list[bytes] = []  #: COBS bytes of the frames forwarded unchanged
        self.corrupted: list[bytes] = []  #: COBS bytes (as sent) of frames it changed
        self.bytes_to_right = 0
        self.reference = FrameDecoder()
        self.reference_bodies: list[bytes] = []  #: what a receiver decodes from the output
        self._fds = [self._open(left), self._open(right)]
        self._stop_r, self._stop_w = os.pipe()
        self._pending = bytearray()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="noisy-relay")
        self._thread.start()

    @staticmethod
    def _open(path: Path) -> int:
        import tty

        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)  # byte-transparent: no XON/XOFF, CR/LF or echo processing
        return fd

    def _loop(self) -> None:
        import select

        left, right = self._fds
        while True:
            ready, _, _ = select.select([left, right, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return  # a pair was unplugged: the relay is done
                if not data:
                    return
                if fd == left:
                    self._forward(data)
                else:
                    os.write(left, data)

    def _forward(self, data: bytes) -> None:
        self._pending += data
        *frames, rest = bytes(self._pending).split(b"\x00")
        self._pending = bytearray(rest)
        out = bytearray()
        with self.lock:
            for frame in frames:
                out += self._corrupt(frame)
            self.bytes_to_right += len(out)
            self.reference_bodies += self.reference.feed(bytes(out))
        os.write(self._fds[1], bytes(out))

    def _corrupt(self, frame: bytes) -> bytes:
        """The wire bytes of ``frame`` and its delimiter, maybe with bits flipped."""
        wire = frame + b"\x00"
        if not frame:
            return wire  # a lone delimiter (resynchronisation), not a frame
        self.frames += 1
        if not self.noisy:
            self.intact.append(frame)
            return wire
        if self.fix_crc:
            return self._corrupt_body(frame)
        rng = self.rng
        buf = bytearray(wire)
        changed = False
        for i, byte in enumerate(buf):
            if rng.random() >= self.fraction or (self.keep_zeros and i == len(frame)):
                continue
            bits = [b for b in range(8) if not self.keep_zeros or byte ^ (1 << b)]
            buf[i] = byte ^ (1 << rng.choice(bits))
            self.flipped_bytes += 1
            changed = True
        if changed:
            self.corrupted.append(frame)
        else:
            self.intact.append(frame)
        return bytes(buf)

    def _corrupt_body(self, frame: bytes) -> bytes:
        """Flip bits in the body of ``frame`` and frame it again (a CRC that matches)."""
        from cobs import cobs

        from sig.protocol.frame import encode_frame

        body = bytearray(cobs.decode(frame)[:-2])
        changed = False
        for i in range(len(body)):
            if self.rng.random() < self.fraction:
                body[i] ^= 1 << self.rng.randrange(8)
                self.flipped_bytes += 1
                changed = True
        (self.corrupted if changed else self.intact).append(frame)
        return encode_frame(bytes(body)) if changed else frame + b"\x00"

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5.0)
        for fd in (*self._fds, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
