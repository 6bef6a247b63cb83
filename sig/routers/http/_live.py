"""What the status page shows live: the event tail, per-event rates, triggers per sender.

One in-process router listener (``add_listener(cb, None, None)``) sees every
event the gateway routes. Per event it does a few dict operations: a trigger
count per sender, a one-second bucket of the (sender, event) rate, and, only
while a page is connected, one short text preview of the data offered to each
page's queue. Everything it keeps is bounded:

* trigger counts and rates only for live senders (a ``#disconnect`` forgets
  the sender), and at most :data:`MAX_TRACKED` (sender, event) pairs (beyond,
  counted in :attr:`LiveState.untracked`);
* a preview is at most :data:`PREVIEW_CHARS` characters;
* each page has a queue of at most ``queue_size`` events; when it is full (the
  page reads slower than events come) the event is dropped for that page and
  counted, for the page and in ``sig_http_tail_dropped_events_total``, and no
  preview is made for it (a flood costs a page a length check per event); a
  page holds at most ``queue_size`` x (two names + a preview), under 200 KiB
  with the defaults;
* at most ``max_clients`` pages at once (the next one gets 503).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sig.core.routing import BUILTIN_EVENTS, DISCONNECT

logger = logging.getLogger(__name__)

#: Seconds of history behind each sparkline.
RATE_WINDOW = 60
#: (sender, event) pairs whose rate is kept.
MAX_TRACKED = 1024
#: Characters of an event's data shown in the tail.
PREVIEW_CHARS = 240
#: Events a page's queue holds before new ones are dropped for it.
DEFAULT_QUEUE = 256
#: Pages connected at once.
DEFAULT_MAX_CLIENTS = 16

#: One tail entry: (unix time, sender, event, preview of the data).
Entry = tuple[float, str, str, str]


def preview(data: Any) -> str:
    """Short JSON text of an event's data (bytes as hex), cut at PREVIEW_CHARS."""
    try:
        text = json.dumps(data, default=_jsonable, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(data)
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return repr(value)


class Rate:
    """Events per second over the last RATE_WINDOW seconds (a ring of one-second buckets)."""

    __slots__ = ("buckets", "last")

    def __init__(self, second: int) -> None:
        self.buckets = [0] * RATE_WINDOW
        self.last = second

    def hit(self, second: int) -> None:
        self._advance(second)
        self.buckets[second % RATE_WINDOW] += 1

    def series(self, second: int) -> list[int]:
        """Counts of the last RATE_WINDOW seconds, oldest first, the current second last."""
        self._advance(second)
        start = second + 1
        return [self.buckets[(start + i) % RATE_WINDOW] for i in range(RATE_WINDOW)]

    def _advance(self, second: int) -> None:
        gap = second - self.last
        if gap <= 0:
            return
        buckets = self.buckets
        if gap >= RATE_WINDOW:
            buckets[:] = [0] * RATE_WINDOW
        else:
            for s in range(self.last + 1, second + 1):
                buckets[s % RATE_WINDOW] = 0
        self.last = second


class TailClient:
    """One page's bounded queue of tail entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.queue: collections.deque[Entry] = collections.deque()
        self.dropped = 0
        self.wake = asyncio.Event()
        self.closed = False

    def full(self) -> bool:
        return len(self.queue) >= self.size

    def offer(self, entry: Entry) -> bool:
        if len(self.queue) >= self.size:
            self.dropped += 1
            return False
        self.queue.append(entry)
        self.wake.set()
        return True

    def take(self) -> list[Entry]:
        items = list(self.queue)
        self.queue.clear()
        self.wake.clear()
        return items


class LiveState:
    """The router listener behind the tail, the sparklines and ``sig_sender_triggers_total``."""

    def __init__(
        self, queue_size: int = DEFAULT_QUEUE, max_clients: int = DEFAULT_MAX_CLIENTS
    ) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.clients: set[TailClient] = set()
        self.triggers: dict[str, int] = {}
        self.rates: dict[tuple[str, str], Rate] = {}
        self.untracked = 0  # events of pairs beyond MAX_TRACKED
        self.dropped = 0  # tail entries dropped, all pages
        self.clock = time.monotonic

    # --- the router listener (called inside route(): keep it cheap) -------

    def on_event(self, info: dict[str, Any], data: Any) -> None:
        if info.get("retained"):  # a last value handed over at registration, not a trigger
            return
        sender: str = info["sender"]
        event: str = info["event"]
        if event in BUILTIN_EVENTS:
            if event == DISCONNECT:
                self._forget(sender)
        else:
            self.triggers[sender] = self.triggers.get(sender, 0) + 1
            second = int(self.clock())
            rate = self.rates.get((sender, event))
            if rate is None:
                if len(self.rates) >= MAX_TRACKED:
                    self.untracked += 1
                    rate = None
                else:
                    rate = self.rates[(sender, event)] = Rate(second)
            if rate is not None:
                rate.hit(second)
        if self.clients:
            entry: Entry | None = None  # built once, and only if a page has room
            for client in self.clients:
                if client.full():
                    client.dropped += 1
                    self.dropped += 1
                    continue
                if entry is None:
                    entry = (time.time(), sender, event, preview(data))
                client.offer(entry)

    def _forget(self, sender: str) -> None:
        self.triggers.pop(sender, None)
        for key in [k for k in self.rates if k[0] == sender]:
            del self.rates[key]

    # --- pages --------------------------------------------------------------

    def open_client(self) -> TailClient | None:
        """A new page's queue, or None at max_clients."""
        if len(self.clients) >= self.max_clients:
            return None
        client = TailClient(self.queue_size)
        self.clients.add(client)
        return client

    def close_client(self, client: TailClient) -> None:
        client.closed = True
        client.wake.set()
        self.clients.discard(client)

    def close_all(self) -> None:
        for client in list(self.clients):
            self.close_client(client)

    def rate_rows(self, limit: int = 200) -> list[dict[str, Any]]:
        """Sparkline data: pairs with events in the window, busiest first."""
        second = int(self.clock())
        rows: list[dict[str, Any]] = []
        for (sender, event), rate in self.rates.items():
            counts = rate.series(second)
            total = sum(counts)
            if total:
                rows.append({"sender": sender, "event": event, "counts": counts, "total": total})
        rows.sort(key=lambda r: (-r["total"], r["sender"], r["event"]))
        return rows[:limit]

    def metrics(self) -> Iterator[Metric]:
        """The HTTP side's own figures, for the collector."""
        pages = len(self.clients)
        yield GaugeMetricFamily("sig_http_tail_clients", "Status pages connected.", pages)
        yield CounterMetricFamily(
            "sig_http_tail_dropped_events",
            "Tail entries dropped because a page's queue was full.",
            self.dropped,
        )
        yield CounterMetricFamily(
            "sig_http_untracked_events",
            "Events of (sender, event) pairs beyond the rate table's bound.",
            self.untracked,
        )
