"""Log output for terminals, journald and Loki, and one rate limiter for repeated lines.

* :func:`printable` / :class:`PrintableFormatter`: text a terminal shows as is,
  so a peer's name or message cannot move the cursor or forge a line.
* :class:`JsonFormatter`: one JSON object per line (``--log-format json``).
* :class:`RepeatLimiter`: the one mechanism behind every "this line again"
  limit: :class:`RepeatFilter`, which the CLI installs for the whole ``sig``
  logger hierarchy, and :class:`LogThrottle`, the gateway's one line a minute
  per condition (connection limit, evictions, accept errors).

Nothing here is imported by the sans-I/O modules.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

# --- terminal safety --------------------------------------------------------

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: Any) -> str:
    """``value`` as text a terminal shows as is: every non-printable character escaped.

    Control characters (ESC sequences, newlines, C1), format characters such as
    U+202E RIGHT-TO-LEFT OVERRIDE and line separators become ``\\n``, ``\\x1b``,
    ``\\u202e`` ...; a backslash is doubled, so an escape cannot be faked.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "\\" not in text:
        return text  # the common case, and the cheap one
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(
                f"\\x{code:02x}"
                if code < 0x100
                else f"\\u{code:04x}"
                if code < 0x10000
                else f"\\U{code:08x}"
            )
    return "".join(out)


class PrintableFormatter(logging.Formatter):
    """Log lines with :func:`printable` messages: a peer's text cannot forge a line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return "\n".join(printable(line) for line in super().formatException(ei).split("\n"))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(printable(line) for line in stack_info.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, and ``exception`` (the traceback text) when there is one.

    ``ensure_ascii`` escapes every control or non-ASCII character, so a peer's
    text can neither split the line nor forge a field.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=True, default=str)


# --- repeated lines ---------------------------------------------------------


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0
    last: Any = None


class RepeatLimiter:
    """Per key: the first ``burst`` occurrences of each ``window`` seconds pass.

    The rest are counted, not passed. :meth:`allow` says whether an
    occurrence passes and how many were held back in the window that just
    ended (to be reported once). At most ``max_keys`` keys are remembered
    (least recently seen forgotten first), so a peer that varies its text
    cannot grow the table.
    """

    def __init__(
        self,
        burst: int = 1,
        window: float = 60.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = max(1, burst)
        self.window = window
        self.max_keys = max(1, max_keys)
        self.clock = clock
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()

    def allow(
        self, key: Hashable, now: float | None = None, item: Any = None
    ) -> tuple[bool, int, Any]:
        """``(passes, suppressed_before, last_before)`` for one occurrence of ``key``.

        ``suppressed_before`` > 0 once, when a window that held occurrences back
        has ended and this one opens the next; ``last_before`` is then the
        ``item`` of the last one held back (the record a summary quotes).
        """
        now = self.clock() if now is None else now
        win = self._windows.get(key)
        ended, last = 0, None
        if win is None or now - win.start >= self.window:
            if win is not None:
                ended, last = win.suppressed, win.last
            win = _Window(now)
            self._windows[key] = win
            if len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        self._windows.move_to_end(key)
        if win.passed < self.burst:
            win.passed += 1
            return True, ended, last
        win.suppressed += 1
        win.last = item
        return False, ended, last

    def expired(self, now: float | None = None) -> list[tuple[int, Any]]:
        """Take every ended window that held lines back: ``(count, last record held)``."""
        now = self.clock() if now is None else now
        out = []
        for key, win in list(self._windows.items()):
            if win.suppressed and now - win.start >= self.window:
                out.append((win.suppressed, win.last))
                del self._windows[key]
        return out

    def drain(self) -> list[tuple[int, Any]]:
        """Take every window that held lines back, ended or not (at exit)."""
        out = [(w.suppressed, w.last) for w in self._windows.values() if w.suppressed]
        self._windows.clear()
        return out


#: Default for the CLI's filter: 5 identical lines per key a minute, then a count.
class LogThrottle:
    """One log line per ``interval`` seconds for each recurring condition, with a count.

    A condition is a message template (``msg``): the first occurrence is
    logged at once; the ones after it within the interval are only counted,
    and the next line of that template says how many there were. Distinct
    templates are throttled apart (at most :data:`THROTTLE_KEYS` of them), so
    a flood of one condition never hides the first line of another. The
    counting is :class:`RepeatLimiter`, also behind the CLI's filter for every
    ``sig`` logger.
    """

    def __init__(
        self, log: logging.Logger, interval: float = 60.0, level: int = logging.WARNING
    ) -> None:
        self.log = log
        self.interval = interval
        self.level = level
        self._limiter = RepeatLimiter(burst=1, window=interval, max_keys=THROTTLE_KEYS)

    def __call__(self, msg: str, *args: Any) -> None:
        passes, suppressed, _ = self._limiter.allow(msg)
        if not passes:
            return
        if suppressed:
            msg += " (%d more since the last such line)"
            args = (*args, suppressed)
        self.log.log(self.level, msg, *args)


#: Message templates one LogThrottle tells apart (a program has few such conditions).
THROTTLE_KEYS = 16


REPEAT_BURST = 5
REPEAT_WINDOW = 60.0


class RepeatFilter(logging.Filter):
    """Rate-limit repeated lines of the ``sig`` loggers; say how many were dropped.

    Installed on the CLI's handler. Lines are keyed by (logger, level, message
    template, i.e. before ``%`` arguments): a flapping port or a flooding client
    logs the same template again and again with other values. The first
    ``burst`` lines of a key per ``window`` pass; the others are counted, and
    one "suppressed N similar lines" line is written when the next line of that
    key passes after the window, when any line is logged after the window
    ended, or at :meth:`flush` (the CLI calls it at exit). Lines of other
    loggers (asyncio, aiohttp) are left alone.
    """

    def __init__(
        self,
        handler: logging.Handler,
        burst: int = REPEAT_BURST,
        window: float = REPEAT_WINDOW,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.limiter = RepeatLimiter(burst, window, max_keys, clock)
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "sig_summary", False):
            return True
        if record.name != "sig" and not record.name.startswith("sig."):
            return True
        key = (record.name, record.levelno, str(record.msg))
        with self._lock:
            now = self.limiter.clock()
            passes, ended, last = self.limiter.allow(key, now, record)
            pending = self.limiter.expired(now) if now >= self._next_sweep else []
            if now >= self._next_sweep:
                self._next_sweep = now + self.limiter.window / 4
        if ended:
            self._summary(ended, last or record)
        for count, last in pending:
            self._summary(count, last or record)
        return passes

    def flush(self) -> None:
        """Write the summaries of every window still holding lines back."""
        with self._lock:
            pending = self.limiter.drain()
        for count, last in pending:
            if last is not None:
                self._summary(count, last)

    def _summary(self, count: int, like: logging.LogRecord) -> None:
        summary = logging.LogRecord(
            like.name,
            like.levelno,
            like.pathname,
            like.lineno,
            "suppressed %d similar lines in %g s, the last: %s",
            (count, self.limiter.window, like.getMessage()),
            None,
        )
        summary.sig_summary = True
        self.handler.handle(summary)


def setup(level: int | str, fmt: str, text_format: str) -> RepeatFilter:
    """Log to stderr as text (``fmt`` "text") or JSON lines ("json"), repeats limited."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PrintableFormatter(text_format))
    repeat = RepeatFilter(handler)
    handler.addFilter(repeat)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return repeat
