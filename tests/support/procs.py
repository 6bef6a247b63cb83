"""Helpers for tests that run gateways and clients as separate processes.

Nothing here sleeps to wait: every wait reads a process's output (or polls a
condition) against a bounded deadline and fails with what it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("peer.py")
EXAMPLES = ROOT / "examples"
TIMEOUT = 10.0  #: default bound for any single wait

_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def child_env(**extra: str) -> dict[str, str]:
    return {**_ENV, **extra}


#: Bound for a whole ``sig`` command run by :func:`run_sig` (a login costs scrypt time).
CLI_TIMEOUT = 30.0


def run_sig(
    *args: str, stdin: str | None = None, prefix: Sequence[str] = (), timeout: float = CLI_TIMEOUT,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``python -m sig ARGS`` to its end, output captured.

    ``prefix`` goes before the interpreter (e.g. ``ip netns exec NS``).
    """
    return subprocess.run(
        [*prefix, sys.executable, "-m", "sig", *args], input=stdin, capture_output=True,
        text=True, timeout=timeout, env=child_env(**env),
    )  # fmt: skip


def wait_until(cond: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    """Poll ``cond`` until it is truthy; its value, or AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        time.sleep(0.01)


async def until(cond: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    """Async ``wait_until``: poll ``cond`` on the event loop until truthy, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await asyncio.sleep(0.005)


class Proc:
    """A child process whose stdout lines are collected by a thread."""

    def __init__(self, argv: Sequence[str], *, stdin: bool = False, **kw: Any) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=kw.pop("env", _ENV),
            cwd=kw.pop("cwd", ROOT),
            **kw,
        )
        self.lines: list[str] = []
        self.err_lines: list[str] = []
        self._new = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.lines), daemon=True),
            threading.Thread(
                target=self._read, args=(self.popen.stderr, self.err_lines), daemon=True
            ),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._new:
                into.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_line(
        self, pred: Callable[[str], bool], timeout: float = TIMEOUT, start: int = 0
    ) -> str:
        """The first stdout line from index ``start`` on that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                for line in self.lines[start:]:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._readers[0].is_alive()):
                    raise AssertionError(
                        f"{self.argv[1:4]}: no matching line within {timeout} s;"
                        f" stdout={self.lines[-20:]} stderr={self.err_lines[-20:]}"
                    )
                self._new.wait(min(left, 0.2))

    def wait_log(self, needle: str, timeout: float = TIMEOUT) -> str:
        """The first stderr (log) line with ``needle``, waited for on the reader's condition."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                for line in self.err_lines:
                    if needle in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.popen.poll() is not None:
                    raise AssertionError(f"no log line with {needle!r}: {self.err_lines[-20:]}")
                self._new.wait(min(left, 0.2))

    def stderr_text(self) -> str:
        with self._new:
            return "\n".join(self.err_lines)

    def signal(self, signo: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signo)

    def wait(self, timeout: float = TIMEOUT) -> int:
        rc = self.popen.wait(timeout)
        for t in self._readers:
            t.join(timeout)
        self._close_streams()
        return rc

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(TIMEOUT)
        for t in self._readers:
            t.join(TIMEOUT)
        self._close_streams()

    def _close_streams(self) -> None:
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class Gateway(Proc):
    """``sig serve`` in a child process; ``port`` is read from its first line."""

    def __init__(self, port: int = 0, *args: str) -> None:
        argv = [sys.executable, "-m", "sig", "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(port), *(args or ("--no-timer",))]
        super().__init__(argv)
        line = self.wait_line(lambda s: _LISTENING.search(s) is not None)
        match = _LISTENING.search(line)
        assert match is not None
        self.port = int(match.group(2))

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.wait()
        finally:
            self.kill()


class Peer(Proc):
    """``tests/support/peer.py``: a sync-API client driven by JSON commands."""

    _ids = itertools.count(1)

    def __init__(self, port: int, name: str | None = None, *extra: str) -> None:
        argv = [sys.executable, str(PEER), "--port", str(port)]
        if name:
            argv += ["--name", name]
        super().__init__([*argv, *extra], stdin=True)
        self.name = name
        self.wait_msg(lambda m: m.get("ev") == "ready")

    def messages(self, start: int = 0) -> list[dict[str, Any]]:
        with self._new:
            lines = self.lines[start:]
        return [json.loads(s) for s in lines if s.startswith("{")]

    def wait_msg(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT, start: int = 0
    ) -> dict[str, Any]:
        def match(line: str) -> bool:
            return line.startswith("{") and bool(pred(json.loads(line)))

        found: dict[str, Any] = json.loads(self.wait_line(match, timeout, start))
        return found

    def send(self, op: str, **kw: Any) -> int:
        cid = next(self._ids)
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps({"id": cid, "op": op, **kw}) + "\n")
        self.popen.stdin.flush()
        return cid

    def reply(self, cid: int, timeout: float = TIMEOUT) -> dict[str, Any]:
        return self.wait_msg(lambda m: m.get("id") == cid, timeout)

    def call(self, op: str, *, wait: float = TIMEOUT, **kw: Any) -> Any:
        """Run a command; its result, or AssertionError if it failed."""
        answer = self.reply(self.send(op, **kw), wait)
        assert answer["ok"], answer
        return answer["result"]

    def fail(self, op: str, *, wait: float = TIMEOUT, **kw: Any) -> dict[str, Any]:
        """Run a command that must fail; its error reply."""
        answer = self.reply(self.send(op, **kw), wait)
        assert not answer["ok"], answer
        return answer

    def events(self, tag: str | None = None, start: int = 0) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages(start)
            if m.get("ev") == "event" and (tag is None or m["tag"] == tag)
        ]

    def wait_event(
        self, tag: str, event: str, sender: str | None = None, timeout: float = TIMEOUT, **kw: Any
    ) -> dict[str, Any]:
        def pred(m: dict[str, Any]) -> bool:
            return (
                m.get("ev") == "event"
                and m["tag"] == tag
                and m["event"] == event
                and (sender is None or m["sender"] == sender)
                and all(m.get(k) == v for k, v in kw.items())
            )

        return self.wait_msg(pred, timeout)

    def mark(self) -> int:
        """Index of the next stdout line (to wait only for what comes after)."""
        with self._new:
            return len(self.lines)

    def close(self) -> None:
        if self.popen.poll() is None and self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(TIMEOUT)
        self.kill()
