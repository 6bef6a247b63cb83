"""``sig top`` in a real pseudo-terminal against a real ``sig serve``."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from procs import Gateway, child_env, wait_until

import sig

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")


class PtyProc:
    """A child whose stdout and stderr are the slave side of a pty (a terminal to it)."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = pty.openpty()
        env = child_env(COLUMNS="80", LINES="40", TERM="xterm-256color")
        env.pop("NO_COLOR", None)
        self.popen = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self.master = master
        self.raw = b""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed its side
                return
            if not chunk:
                return
            with self._lock:
                self.raw += chunk

    def text(self) -> str:
        with self._lock:
            return self.raw.decode(errors="replace")

    def frames(self) -> list[str]:
        """Each redraw, as plain text: rich's Live repaints from the title line on."""
        plain = ANSI.sub("", self.text())
        return ["sig top " + part for part in plain.split("sig top ")[1:]]

    def close(self) -> int:
        if self.popen.poll() is None:
            self.popen.kill()
        rc = self.popen.wait(10)
        self._reader.join(10)
        os.close(self.master)
        return rc


def sender_row(frame: str, name: str) -> list[str] | None:
    """The cells of ``name``'s row in the senders table of one frame."""
    for line in frame.splitlines():
        cells = line.split()
        if cells and cells[0] == name and len(cells) == 4:
            return cells
    return None


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gw = Gateway(0)
    yield gw
    assert gw.stop() == 0


def top(port: int, *extra: str) -> PtyProc:
    return PtyProc([sys.executable, "-m", "sig", "top", "--port", str(port), *extra])


def test_top_refreshes_in_place_and_rates_follow_triggers(gateway: Gateway) -> None:
    client = sig.ClientRouter(port=gateway.port, name="top-src")
    client.connect()
    proc = top(gateway.port, "--interval", "0.05", "--iterations", "2000")
    try:
        pulse = client.add_sender("pulse", ["beat"])
        client.add_sender("[blink]x[/blink]", ["e"])  # rich markup is a name, not a style

        def quiet_frame() -> str | None:
            # two polls that both saw pulse: its rate is measured and it is 0
            return next(
                (f for f in proc.frames() if (sender_row(f, "pulse") or ["", "", ""])[2] == "0.0"),
                None,
            )

        before = wait_until(quiet_frame, what="a frame with pulse at 0.0 events/s")
        row = sender_row(before, "pulse")
        assert row is not None and row[1].startswith("tcp:127.0.0.1:") and row[3] == "0", row
        seen = len(proc.frames())
        for i in range(30):
            pulse.trigger("beat", i)

        def busy_frame() -> str | None:
            for f in proc.frames()[seen:]:
                row = sender_row(f, "pulse")
                if row and row[3] == "30":
                    return f
            return None

        after = wait_until(busy_frame, what="a frame that counted pulse's 30 events")
        counted = [sender_row(f, "pulse") for f in proc.frames()[seen:]]
        rates = [float(r[2]) for r in counted if r]
        assert any(rate > 0 for rate in rates), counted  # the rate rose with the triggers
        assert "[blink]x[/blink]" in after  # shown as text (rich did not eat it as markup)
        head = after.splitlines()[0]
        assert head.startswith(f"sig top 127.0.0.1:{gateway.port}  poll ")
        assert "LINK" in after and "IN/s" in after and "EVENTS/s" in after
        assert all(len(line) <= 80 for line in after.splitlines()), after
        raw = proc.text()
        # in place: rich's Live moves the cursor up and erases before each redraw
        assert "\x1b[1A" in raw or re.search(r"\x1b\[\d+A", raw), raw[-300:]
        assert "\x1b[2K" in raw
        # Ctrl-C: a clean exit, the cursor shown again
        proc.popen.send_signal(signal.SIGINT)
        assert proc.popen.wait(10) == 0
        proc._reader.join(10)
        assert "Traceback" not in proc.text()
        assert proc.text().rstrip().endswith("\x1b[?25h") or "\x1b[?25h" in proc.text()[-200:]
    finally:
        proc.close()
        client.close()


def test_top_bounded_run_exits_by_itself(gateway: Gateway) -> None:
    proc = top(gateway.port, "--interval", "0.01", "--iterations", "3")
    try:
        assert proc.popen.wait(20) == 0
        proc._reader.join(10)
        polls = [int(f.split("poll ")[1].split()[0]) for f in proc.frames()]
        assert polls and polls[-1] == 3 and polls == sorted(polls), polls
    finally:
        proc.close()
