"""Log output: JSON lines, and the filter that rate-limits repeated lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from procs import child_env

from sig.logs import (
    JsonFormatter,
    LogThrottle,
    PrintableFormatter,
    RepeatFilter,
    RepeatLimiter,
)


class Clock:
    """A clock the test moves by hand: windows end when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Captured = tuple[io.StringIO, logging.Handler, "Clock", RepeatFilter]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """A handler on a private ``sig.test`` logger with the repeat filter, burst 3 per 10 s."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    clock = Clock()
    repeat = RepeatFilter(handler, burst=3, window=10.0, max_keys=8, clock=clock)
    handler.addFilter(repeat)
    log = logging.getLogger("sig.test.repeat")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield out, handler, clock, repeat
    finally:
        log.removeHandler(handler)


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_burst_of_identical_lines_is_counted_exactly(captured: Captured) -> None:
    out, _, clock, repeat = captured
    log = logging.getLogger("sig.test.repeat")
    for i in range(1000):
        log.warning("serial:%s: cannot open (%s)", "/dev/ttyUSB0", f"try {i}")
    assert lines(out) == [
        f"sig.test.repeat WARNING serial:/dev/ttyUSB0: cannot open (try {i})" for i in range(3)
    ]
    clock.now += 10.0  # the window ends; the next line of the key reports the count first
    log.warning("serial:%s: cannot open (%s)", "/dev/ttyUSB0", "again")
    assert lines(out)[3:] == [
        "sig.test.repeat WARNING suppressed 997 similar lines in 10 s, the last:"
        " serial:/dev/ttyUSB0: cannot open (try 999)",
        "sig.test.repeat WARNING serial:/dev/ttyUSB0: cannot open (again)",
    ]
    for _ in range(5):
        log.warning("serial:%s: cannot open (%s)", "/dev/ttyUSB0", "x")
    repeat.flush()  # at exit: what the open window held back is reported too
    assert lines(out)[5:] == [
        "sig.test.repeat WARNING serial:/dev/ttyUSB0: cannot open (x)",
        "sig.test.repeat WARNING serial:/dev/ttyUSB0: cannot open (x)",
        "sig.test.repeat WARNING suppressed 3 similar lines in 10 s, the last:"
        " serial:/dev/ttyUSB0: cannot open (x)",
    ]


def test_keys_are_logger_level_and_template(captured: Captured) -> None:
    out, _, clock, _ = captured
    log = logging.getLogger("sig.test.repeat")
    for _ in range(5):
        log.warning("a %s", 1)
        log.error("a %s", 1)  # another level: another key
        log.warning("b %s", 1)  # another template: another key
        logging.getLogger("sig.test.repeat").info("a %s", 1)
    assert len(lines(out)) == 4 * 3
    # a window that ended is reported by the next line of any key
    clock.now += 10.0
    log.warning("c")
    summaries = [x for x in lines(out) if "suppressed" in x]
    assert sorted(x.split(" suppressed ")[1][:1] for x in summaries) == ["2"] * 4
    assert lines(out)[-1] == "sig.test.repeat WARNING c"


def test_other_loggers_pass_untouched() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    repeat = RepeatFilter(handler, burst=1, window=60.0)
    handler.addFilter(repeat)
    log = logging.getLogger("asyncio.test-repeat")
    log.addHandler(handler)
    log.propagate = False
    try:
        for _ in range(4):
            log.warning("same")
        assert lines(out) == ["same"] * 4
    finally:
        log.removeHandler(handler)


def test_the_key_table_is_bounded() -> None:
    clock = Clock()
    limiter = RepeatLimiter(burst=1, window=60.0, max_keys=16, clock=clock)
    for i in range(10_000):  # a peer that varies its text cannot grow the table
        assert limiter.allow(("sig", 30, f"msg {i}")) == (True, 0, None)
    assert len(limiter._windows) == 16


def test_log_throttle_uses_the_same_limiter() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log = logging.getLogger("sig.test.throttle")
    log.addHandler(handler)
    log.propagate = False
    try:
        throttle = LogThrottle(log, interval=60.0)
        clock = Clock()
        throttle._limiter.clock = clock
        for _ in range(7):
            throttle("accept failed: %s", "EMFILE")
        clock.now += 60.0
        throttle("accept failed: %s", "EMFILE")
        assert lines(out) == [
            "accept failed: EMFILE",
            "accept failed: EMFILE (6 more since the last such line)",
        ]
    finally:
        log.removeHandler(handler)


def test_log_throttle_keeps_conditions_apart() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log = logging.getLogger("sig.test.throttle2")
    log.addHandler(handler)
    log.propagate = False
    try:
        throttle = LogThrottle(log, interval=60.0)
        throttle._limiter.clock = Clock()
        for _ in range(5):  # a flood of accept errors does not hide the first eviction
            throttle("accept failed: %s", "EMFILE")
            throttle("evicting %s", "tcp:a")
        assert lines(out) == ["accept failed: EMFILE", "evicting tcp:a"]
    finally:
        log.removeHandler(handler)


def test_json_formatter_lines() -> None:
    fmt = JsonFormatter()
    record = logging.LogRecord(
        "sig.routers.client", logging.WARNING, __file__, 1,
        "gateway error %s: %s", (6, "x\n\x1b[1m"), None,
    )
    line = fmt.format(record)
    assert "\n" not in line and line.isascii()
    got = json.loads(line)
    assert got["level"] == "WARNING" and got["logger"] == "sig.routers.client"
    assert got["message"] == "gateway error 6: x\n\x1b[1m"
    assert got["time"].endswith("+00:00") and "exception" not in got
    try:
        raise ValueError("boom\nforged")
    except ValueError:
        record = logging.LogRecord(
            "sig.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    got = json.loads(fmt.format(record))
    assert "Traceback" in got["exception"] and "ValueError: boom\nforged" in got["exception"]
    text = PrintableFormatter("%(message)s").format(record)
    assert text.startswith("failed\nTraceback") and json.loads(fmt.format(record))["message"] == (
        "failed"
    )


def test_client_command_logs_as_json_lines() -> None:
    """``--log-format json`` on a client command: its one warning is one JSON line."""
    r = subprocess.run(
        [sys.executable, "-m", "sig", "senders", "--port", "1", "--log-format", "json",
         "--log-level", "debug"],
        capture_output=True, text=True, timeout=20, env=child_env(),
    )  # fmt: skip
    assert r.returncode == 1
    *logs, last = r.stderr.splitlines()
    assert "cannot reach the gateway" in last  # the command's own error stays one text line
    for line in logs:
        assert {"time", "level", "logger", "message"} <= set(json.loads(line))
