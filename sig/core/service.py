"""The ``$gateway`` service: the gateway's own methods, paged to fit the requester.

``$gateway senders``, ``links`` and ``stats`` answer what the gateway holds.
Without params the whole result comes as in the first protocol version (a
map of senders, a list of links, a map of counters), or TOO_LARGE if it does
not fit the requester. With ``{"offset": n, "limit": k}`` it comes a page at
a time: ``{"items": [...], "next": offset of the next page or null, "total": N}``.
Pages are built item by item, so an answer costs what its page holds.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, Protocol

from sig.core.routing import RoutingTable, SenderInfo
from sig.core.session import Session
from sig.errors import DecodeError, ErrorCode, NoSuchMethod, RequestError, RequestTooLarge
from sig.protocol.data import pack, unpack

if TYPE_CHECKING:
    from sig.core.access import Access
    from sig.core.endpoints import Listener
    from sig.core.reservations import Reservations

#: Bytes of a ``$gateway`` page around its items at most (map, keys, next, total).
PAGE_OVERHEAD = 40
#: Items per ``$gateway`` page when the request names no limit.
DEFAULT_PAGE_LIMIT = 100
METHODS = ("senders", "links", "stats", "release")

Done = Callable[[int, str, bytes], None]  # (status, message, data)
#: Extra rows for ``$gateway links``: a link that exists without a session.
LinkReporter = Callable[[], list[dict[str, Any]]]


class BadParams(RequestError):
    """The params of a ``$gateway`` request are not what the method takes."""

    code = ErrorCode.MALFORMED


class ServiceCore(Protocol):
    """What :class:`GatewayService` shows of its core (:class:`~sig.core.gateway.GatewayCore`).

    A type only: the core hands itself over, and this module never imports it.
    """

    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def gauges(self) -> dict[str, float]: ...
    @property
    def sessions(self) -> set[Session]: ...
    @property
    def table(self) -> RoutingTable[Session | Listener]: ...
    @property
    def name_reservations(self) -> Reservations: ...
    @property
    def requests(self) -> Sized: ...
    @property
    def access(self) -> Access: ...


class GatewayService:
    """Answers ``$gateway`` requests and builds the rows and figures they show."""

    def __init__(self, core: ServiceCore, name: str) -> None:
        self.core = core
        self.name = name  #: the service's sender name (``$gateway``)
        #: Extra rows for ``$gateway links``: links that exist without a session,
        #: such as a serial port that is currently unplugged and being reopened.
        self.link_reporters: list[LinkReporter] = []

    def answer(self, method: str, params: bytes, budget: int, done: Done) -> None:
        """Answer ``method`` in at most ``budget`` bytes of data; ``done`` is called once."""
        try:
            data = self._answer(method, params, budget)
        except RequestError as exc:
            done(exc.code, str(exc), b"")
        else:
            done(ErrorCode.OK, "", data)

    def _answer(self, method: str, params: bytes, budget: int) -> bytes:
        if method not in METHODS:
            raise NoSuchMethod(
                f"{self.name} has no method {method!r} (senders, links, stats, release)"
            )
        try:
            args = unpack(params)
        except DecodeError as exc:
            raise BadParams(str(exc)) from None
        if method == "release":  # an admin frees an owned name (the ACL checked admin)
            return pack(self.core.access.release(release_name(args)))
        if args is None:
            return self._whole(method, budget)
        offset, limit = page_args(args)
        total, items = self._items(method, offset)
        return page(items, offset, limit, total, budget)

    def _items(self, method: str, offset: int) -> tuple[int, Iterator[Any]]:
        """How many items ``method`` has, and the items from ``offset`` on (built lazily)."""
        if method == "senders":
            senders = self.core.table.senders
            infos = itertools.islice(senders.values(), offset, None)
            return len(senders), (self.sender_item(info) for info in infos)
        if method == "links":
            rows = self._link_order()
            return len(rows), (row() for row in itertools.islice(rows, offset, None))
        stats = list(self.stats().items())
        return len(stats), (list(kv) for kv in itertools.islice(stats, offset, None))

    def _whole(self, method: str, budget: int) -> bytes:
        """The unpaged answer of the first protocol version, if it fits ``budget``.

        Built part by part, and given up as soon as the parts pass the budget:
        a small request never makes the gateway build a large answer in vain.
        """
        data: bytes | None
        if method == "stats":
            data = pack(self.stats())
        elif method == "senders":
            senders = within(
                (
                    (name, {**info.announcement(), "link": owner_name(info.owner)})
                    for name, info in self.core.table.senders.items()
                ),
                budget,
            )
            data = None if senders is None else pack(dict(senders))
        else:
            rows = itertools.chain(
                (self.link_info(s) for s in self.core.sessions), self.reported_rows()
            )
            links = within(rows, budget)
            data = None if links is None else pack(links)
        if data is None or len(data) > budget:
            raise RequestTooLarge(
                f"{self.name} {method} takes more than the {budget} bytes this link accepts:"
                ' ask for pages, params {"offset": 0, "limit": 100}'
            )
        return data

    @staticmethod
    def sender_item(info: SenderInfo) -> dict[str, Any]:
        return {"name": info.name, **info.announcement(), "link": owner_name(info.owner)}

    def _link_order(self) -> list[Callable[[], dict[str, Any]]]:
        """Rows of ``$gateway links`` by link name, built only for the page asked for."""
        rows: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            (s.link.name, functools.partial(self.link_info, s)) for s in self.core.sessions
        ]
        rows.extend((r["link"], functools.partial(dict, r)) for r in self.reported_rows())
        rows.sort(key=lambda r: r[0])
        return [build for _, build in rows]

    # --- what the answers show ----------------------------------------------

    def stats(self) -> dict[str, float]:
        """The gateway's counters and sizes (``$gateway stats``)."""
        core = self.core
        return {
            **core.counters,
            "links": len(core.sessions),
            "senders": len(core.table.senders),
            "subscriptions": core.table.subscription_count(),
            "pending_requests": len(core.requests),
            **core.gauges,
        }

    def links(self) -> list[dict[str, Any]]:
        """One row per link: every session, then what the link reporters add."""
        rows = [self.link_info(s) for s in self.core.sessions]
        rows.extend(self.reported_rows())
        return rows

    def reported_rows(self) -> list[dict[str, Any]]:
        """The link reporters' rows (closed serial ports), with their reservations."""
        rows = [row for report in self.link_reporters for row in report()]
        if self.core.name_reservations:
            for row in rows:
                self._add_reserved(row)
        return rows

    def _add_reserved(self, row: dict[str, Any]) -> dict[str, Any]:
        """Add ``reserved: {name: seconds left}`` to a links row that has any."""
        held = self.core.name_reservations
        kept = held.for_link(row["link"]) if held else None
        if kept:
            row["reserved"] = kept
        return row

    def link_info(self, s: Session) -> dict[str, Any]:
        """The ``$gateway links`` row of one session."""
        row = {
            "link": s.link.name,
            "state": s.state.value,
            "peer": s.peer,
            "senders": sorted(s.senders.values()),
            "listeners": len(s.listeners),
            "triggers": s.triggers,
            "events_out": s.events_out,
            "dropped_events": s.dropped_events,
            "dropped_too_large": s.dropped_too_large,
            "protocol_errors": s.protocol_errors,
            "bad_acks": s.bad_acks,  # a reliable port's own count replaces it
            **s.link.stats(),
        }
        return self._add_reserved(row)


def owner_name(owner: Any) -> str:
    """The link a sender lives on (``local`` for an in-process one)."""
    return owner.link.name if isinstance(owner, Session) else "local"


def release_name(args: Any) -> str:
    """The name of ``$gateway release {"name": NAME}``."""
    if not isinstance(args, dict) or set(args) != {"name"} or not isinstance(args["name"], str):
        raise BadParams('params must be {"name": "SENDER"}')
    return args["name"]


def page_args(args: Any) -> tuple[int, int]:
    """``(offset, limit)`` from ``{"offset": n, "limit": k}`` (both optional)."""
    if not isinstance(args, dict) or not set(args) <= {"offset", "limit"}:
        raise BadParams('params must be null or {"offset": int, "limit": int}')
    offset = args.get("offset", 0)
    limit = args.get("limit", DEFAULT_PAGE_LIMIT)
    for name, value in (("offset", offset), ("limit", limit)):
        if type(value) is not int or value < 0:
            raise BadParams(f"{name} must be an int >= 0, not {value!r}")
    return offset, min(max(limit, 1), 0xFFFF)


def _pack_items(items: Iterator[Any], offset: int, limit: int, budget: int) -> list[bytes]:
    """Packed items while they fit ``budget`` (an oversized first item comes truncated)."""
    chunks: list[bytes] = []
    used = PAGE_OVERHEAD
    for item in items:
        if len(chunks) >= limit:
            break
        raw = pack(item)
        if used + len(raw) > budget:
            if chunks:
                break
            raw = pack(_truncated(item))
            if used + len(raw) > budget:
                raise RequestTooLarge(
                    f"item {offset} does not fit in the {budget} bytes this link accepts"
                )
        chunks.append(raw)
        used += len(raw)
    return chunks


def page(items: Iterator[Any], offset: int, limit: int, total: int, budget: int) -> bytes:
    """CBOR of ``{"items": [...], "next": n | null, "total": N}`` in at most ``budget`` bytes.

    Items are packed one by one and the page ends before the first that does
    not fit, so the cost is O(items on the page) after the offset. An item too
    large for a page of its own comes with its lists emptied and
    ``"truncated": true``; if even that does not fit, the request is TOO_LARGE.
    """
    chunks = _pack_items(items, offset, limit, budget)
    end = offset + len(chunks)
    nxt = end if end < total else None
    # Map keys in CBOR's canonical order (shorter first), like sig.protocol.data.pack.
    return b"".join(
        (
            b"\xa3",
            pack("next"),
            pack(nxt) or b"\xf6",
            pack("items"),
            _cbor_array_head(len(chunks)),
            *chunks,
            pack("total"),
            pack(total),
        )
    )


def within(parts: Iterable[Any], budget: int) -> list[Any] | None:
    """All of ``parts``, or None as soon as their packed sizes add up past ``budget``."""
    kept: list[Any] = []
    size = 0
    for part in parts:
        size += len(pack(part))
        if size > budget:
            return None
        kept.append(part)
    return kept


def _truncated(item: Any) -> Any:
    """``item`` with its list values emptied and ``"truncated": true`` added."""
    if not isinstance(item, dict):
        return item
    return {**{k: [] if isinstance(v, list) else v for k, v in item.items()}, "truncated": True}


def _cbor_array_head(n: int) -> bytes:
    """The head of a CBOR array of ``n`` items (major type 4)."""
    if n < 24:
        return bytes([0x80 | n])
    if n < 0x100:
        return bytes([0x98, n])
    if n < 0x10000:
        return b"\x99" + n.to_bytes(2, "big")
    return b"\x9a" + n.to_bytes(4, "big")
