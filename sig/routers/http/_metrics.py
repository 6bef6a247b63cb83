"""``/metrics``: the gateway's live state in the Prometheus text format.

Nothing here counts in the hot path. :class:`GatewayCollector` is a
prometheus_client custom collector that reads, on each scrape, what the gateway
already keeps: the rows of ``$gateway links`` (``core.links()``), the figures
of ``$gateway stats``, and the per-sender trigger counts of the status page's
router listener. Only two things are new: requests by outcome and their
latency (:class:`RequestMetrics`, fed by ``GatewayCore.request_observer``),
and the event-loop lag when the gateway does not measure it itself
(:class:`LoopLagMonitor`). RSS and the rest of the process figures come from
prometheus_client's own ``ProcessCollector`` (``process_resident_memory_bytes``).

Names follow the Prometheus conventions: the ``sig_`` prefix, base units in the
name (``_bytes``, ``_seconds``), ``_total`` on counters, one ``link`` label on
per-link series. The known keys are mapped by the tables :data:`LINK_KEYS` and
:data:`GATEWAY_KEYS`. Keys the gateway grows later are not lost:

* the rule for an unknown key: any other numeric value (int or float, not
  bool) of a link row is exported as the untyped metric ``sig_link_<key>``
  with the ``link`` label, and of ``$gateway stats`` as ``sig_gateway_<key>``,
  where ``<key>`` is the key with every character outside ``[a-zA-Z0-9_]``
  replaced by ``_`` (a value's unit is whatever the key's suffix says);
* ``closed_<reason>`` in the stats becomes ``sig_links_closed_total{reason}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

from sig.errors import ErrorCode

logger = logging.getLogger(__name__)

#: Upper bounds (seconds) of the request latency histogram's buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds between two samples of the HTTP side's own loop-lag monitor.
LAG_INTERVAL = 0.1


@dataclass(frozen=True)
class Spec:
    """How one known key is exported: metric name, type, help, and a scale factor."""

    name: str
    kind: str  # "counter" | "gauge"
    help: str
    scale: float = 1.0


def _c(name: str, help_text: str) -> Spec:
    return Spec(name, "counter", help_text)


def _g(name: str, help_text: str, scale: float = 1.0) -> Spec:
    return Spec(name, "gauge", help_text, scale)


#: Known keys of a ``$gateway links`` row (each series has the ``link`` label).
#: None: not exported as a series of its own (see :data:`LINK_DROP_REASONS`).
LINK_KEYS: dict[str, Spec | None] = {
    "frames_in": _c("sig_link_received_frames_total", "Frames decoded from the link."),
    "bytes_in": _c("sig_link_received_bytes_total", "Bytes read from the link."),
    "frames_out": _c("sig_link_sent_frames_total", "Frames written to the link."),
    "bytes_out": _c("sig_link_sent_bytes_total", "Bytes written to the link."),
    "crc_errors": _c("sig_link_crc_errors_total", "Frames dropped for a bad CRC."),
    "framing_errors": _c("sig_link_framing_errors_total", "Frames dropped for bad COBS framing."),
    "oversize": _c("sig_link_oversize_frames_total", "Frames dropped for exceeding max_body."),
    "protocol_errors": _c("sig_link_protocol_errors_total", "Protocol errors of the peer."),
    "triggers": _c("sig_link_triggers_total", "Events the link's peer triggered."),
    "events_out": _c("sig_link_sent_events_total", "Events delivered to the link."),
    "reopens": _c("sig_link_reopens_total", "Times a serial port was opened again."),
    "failed_opens": _c("sig_link_failed_opens_total", "Failed attempts to open a serial port."),
    "read_pauses": _c("sig_link_read_pauses_total", "Times the link stopped reading its peer."),
    "discarded_frames": _c(
        "sig_link_discarded_frames_total", "Frames still queued when the link was aborted."
    ),
    "discarded_bytes": _c(
        "sig_link_discarded_bytes_total", "Bytes still queued when the link was aborted."
    ),
    "stalled_closes": _c("sig_link_stalled_closes_total", "Times the link was closed as stuck."),
    "conflated": _c(
        "sig_link_conflated_events_total", "Pending latest-policy values replaced by newer ones."
    ),
    "flow_pauses": _c(
        "sig_link_flow_pauses_total", "Times the link was held while a block listener caught up."
    ),
    "listeners": _g("sig_link_listeners", "Listener registrations of the link."),
    "queued_bytes": _g("sig_link_queued_bytes", "Bytes queued for the peer, not yet sent."),
    "baud": _g("sig_link_baud", "Configured baud rate of a serial port."),
    "closed_for_s": _g("sig_link_closed_seconds", "Seconds a serial port has been closed."),
    # The reasons of sig_link_dropped_events_total, and their sum:
    "dropped": None,
    "dropped_too_large": None,
    "dropped_events": None,
}

#: ``sig_link_dropped_events_total{reason}``: reason -> how to read it from a row.
LINK_DROP_REASONS: dict[str, Callable[[Mapping[str, Any]], float | None]] = {
    # the link's send queue was over its high-water mark (a slow consumer)
    "queue_full": lambda row: _num(row.get("dropped")),
    # larger than the peer's max_body; older gateways count it only in the sum
    "too_large": lambda row: (
        _num(row.get("dropped_too_large"))
        if "dropped_too_large" in row
        else _difference(row.get("dropped_events"), row.get("dropped"))
    ),
}

#: Known keys of ``$gateway stats``.
GATEWAY_KEYS: dict[str, Spec | None] = {
    "triggers": _c("sig_triggers_total", "Events triggered by any sender."),
    "events_out": _c("sig_delivered_events_total", "Event deliveries to links."),
    "dropped_events": _c("sig_dropped_events_total", "Event deliveries dropped, any reason."),
    "dropped_too_large": _c(
        "sig_dropped_too_large_events_total", "Event deliveries dropped as too large."
    ),
    "requests": _c("sig_requests_started_total", "Requests routed by the gateway."),
    "listener_errors": _c("sig_listener_errors_total", "In-process listeners that raised."),
    "bad_data": _c("sig_bad_data_events_total", "Events whose data did not decode."),
    "busy": _c("sig_busy_requests_total", "Requests refused with BUSY."),
    "responses_too_large": _c("sig_too_large_responses_total", "Responses refused as too large."),
    "refused_registrations": _c(
        "sig_refused_registrations_total", "Sender registrations refused at a limit."
    ),
    "refused_connections": _c("sig_refused_connections_total", "TCP connections refused."),
    "accept_errors": _c("sig_accept_errors_total", "Errors accepting TCP connections."),
    "discarded_frames": _c(
        "sig_discarded_frames_total", "Frames still queued on links that were aborted."
    ),
    "discarded_bytes": _c(
        "sig_discarded_bytes_total", "Bytes still queued on links that were aborted."
    ),
    "links": _g("sig_links", "Links with a session (TCP and serial)."),
    "senders": _g("sig_senders", "Live senders."),
    "subscriptions": _g("sig_subscriptions", "Listener registrations."),
    "pending_requests": _g("sig_pending_requests", "Requests waiting for their handler."),
    "connections": _g("sig_connections", "TCP connections."),
    "max_connections": _g("sig_max_connections", "TCP connections the gateway accepts."),
    "loop_lag_ms": _g("sig_event_loop_lag_seconds", "Event-loop lag at the last tick.", 0.001),
    "max_loop_lag_ms": _g(
        "sig_event_loop_lag_max_seconds", "Worst event-loop lag since start.", 0.001
    ),
}

_CLOSED = re.compile(r"closed_([a-z0-9_]+)")
_BAD_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def _num(value: Any) -> float | None:
    """``value`` if it is a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _difference(total: Any, part: Any) -> float | None:
    a, b = _num(total), _num(part)
    if a is None:
        return None
    return max(0.0, a - (b or 0))


def generic_name(prefix: str, key: str) -> str:
    """The documented name of an unknown numeric key: ``prefix`` + sanitised key."""
    return prefix + _BAD_NAME_CHAR.sub("_", key)


def outcome_name(status: int) -> str:
    """The ``outcome`` label of a request status: ``ok``, ``timeout``, ... or ``code_N``."""
    try:
        return ErrorCode(status).name.lower()
    except ValueError:
        return f"code_{status}"


class RequestMetrics:
    """Requests by outcome and their latency, from ``GatewayCore.request_observer``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.total = Counter(
            "sig_requests",
            "Requests the gateway finished, by outcome (an ErrorCode name, or ok).",
            ["outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "sig_request_duration_seconds",
            "Seconds from routing a request to its response, any outcome.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._by_status: dict[int, Any] = {}
        self.total.labels("ok")  # the series exists from the start

    def observe(self, status: int, seconds: float) -> None:
        """The observer: one finished request (a few dict lookups, no allocation)."""
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.total.labels(outcome_name(status))
        child.inc()
        self.latency.observe(seconds)


class LoopLagMonitor:
    """How late a periodic tick runs: the event loop's lag, when the gateway has no figure."""

    def __init__(self, interval: float = LAG_INTERVAL) -> None:
        self.interval = interval
        self.lag = 0.0
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sig-http-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.lag = max(0.0, loop.time() - due)
            self.max_lag = max(self.max_lag, self.lag)


def gateway_stats(core: Any) -> dict[str, Any]:
    """The figures of ``$gateway stats`` (``core.stats()`` where the gateway has it)."""
    stats = getattr(core, "stats", None)
    if callable(stats):
        return dict(stats())
    return dict(core._gateway_request("stats"))


class GatewayCollector(Collector):
    """Reads the gateway's live state on every scrape (see the module docstring)."""

    def __init__(
        self,
        router: Any,
        sender_triggers: Callable[[], Mapping[str, int]],
        extra: Callable[[], Iterable[Metric]] = tuple,
        lag: LoopLagMonitor | None = None,
    ) -> None:
        self.router = router
        self.sender_triggers = sender_triggers
        self.extra = extra
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        core = self.router.core
        rows = _unique_links(core.links())
        stats = gateway_stats(core)
        for key, value in getattr(core, "gauges", {}).items():
            stats.setdefault(key, value)  # figures the asyncio layer keeps (loop lag)
        if self.lag is not None:
            stats.setdefault("loop_lag_ms", self.lag.lag * 1000)
            stats.setdefault("max_loop_lag_ms", self.lag.max_lag * 1000)
        if "connections" not in stats:
            stats["connections"] = sum(1 for r in rows if str(r.get("link", "")).startswith("tcp:"))
        yield from self._links(rows)
        yield from self._gateway(stats)
        triggers = CounterMetricFamily(
            "sig_sender_triggers", "Events each live sender triggered.", labels=["sender"]
        )
        for name, count in sorted(self.sender_triggers().items()):
            triggers.add_metric([name], count)
        yield triggers
        yield from self.extra()

    def _links(self, rows: list[Mapping[str, Any]]) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            "sig_link_up", "1 if the link is open (session and port), else 0.", labels=["link"]
        )
        drops = CounterMetricFamily(
            "sig_link_dropped_events",
            "Event deliveries to the link dropped, by reason (queue_full, too_large).",
            labels=["link", "reason"],
        )
        for row in rows:
            link = str(row.get("link", "?"))
            up.add_metric([link], 1.0 if _is_up(row) else 0.0)
            for reason, read in LINK_DROP_REASONS.items():
                value = read(row)
                if value is not None:
                    drops.add_metric([link, reason], value)
            for key, raw in row.items():
                value = _num(raw)
                if value is None:
                    continue
                if key in LINK_KEYS:
                    spec = LINK_KEYS[key]
                    if spec is None:
                        continue
                else:
                    spec = Spec(generic_name("sig_link_", key), "untyped", f"Link figure {key}.")
                _family(families, spec, ["link"]).add_metric([link], value * spec.scale)
        yield up
        yield drops
        yield from families.values()

    def _gateway(self, stats: Mapping[str, Any]) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        closed = CounterMetricFamily(
            "sig_links_closed", "Links that ended, by reason.", labels=["reason"]
        )
        for key, raw in stats.items():
            value = _num(raw)
            if value is None:
                continue
            spec = GATEWAY_KEYS.get(key)
            if spec is None:
                match = _CLOSED.fullmatch(key)
                if match is not None and key not in GATEWAY_KEYS:
                    closed.add_metric([match.group(1)], value)
                    continue
                spec = Spec(generic_name("sig_gateway_", key), "untyped", f"Gateway figure {key}.")
            _family(families, spec, []).add_metric([], value * spec.scale)
        yield closed
        yield from families.values()


def _family(families: dict[str, Metric], spec: Spec, labels: list[str]) -> Any:
    """The family of ``spec``, created on first use (one per metric name)."""
    family = families.get(spec.name)
    if family is None:
        kind = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}.get(
            spec.kind, UnknownMetricFamily
        )
        family = families[spec.name] = kind(spec.name, spec.help, labels=labels)
    return family


def _is_up(row: Mapping[str, Any]) -> bool:
    return row.get("state") == "open" and row.get("port_state", "open") == "open"


def _unique_links(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows with distinct link names (the first wins): a series appears once per scrape."""
    seen: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        seen.setdefault(str(row.get("link", "?")), row)
    return list(seen.values())
