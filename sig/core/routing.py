"""The routing core: who sends what, who listens to what (no I/O, no asyncio).

Rules (the seed's, kept exactly; the brief's "Semantics"):

1. A sender has a unique live name and declares its events up front; it can
   trigger only those. Every sender also has ``#connect`` / ``#disconnect``,
   which only the router fires: no sender may declare them (INVALID_NAME).
2. A subscription is a key ``(sender, event)``, either part may be None:
   ``(S, e)`` one event of one sender; ``(S, None)`` every event of S;
   ``(None, "#ch")`` channel ``#ch`` from any sender; ``(None, None)`` everything.
3. ``(None, e)`` for a name without ``#`` matches nothing: targeted events never
   leak to anonymous listeners.
4. ``#connect`` / ``#disconnect`` are channel events of the sender that came or
   went, fired by the router with ``{"events": [...], "requests": [...]}``.
5. Subscriptions are by name, so listening to a sender that is not there yet is
   allowed, and listeners of a sender that went away receive again when it is back.

Matching is a dict lookup of at most four keys per (sender, event); the merged
result is cached per (sender, event) (for live senders, and for up to
``MATCH_CACHE_LIMIT`` other pairs), so a trigger costs O(matching subscribers),
whatever the number of registrations that do not match.

Every operation costs in proportion to what it touches, never to the size of
the table: the cache is indexed by sender and by channel event, so a
subscription drops only the cached pairs it can change (``(S, e)`` one pair,
``(S, None)`` the pairs of S, ``(None, "#ch")`` the pairs of ``#ch``, and only
``(None, None)`` all of them), and removing a sender drops only its own pairs.
Tearing down a link with 40k senders is therefore linear (bench/teardown.py).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from sig.core.meta import NO_META, SenderMeta
from sig.errors import DuplicateSenderError, InvalidNameError, UnknownEventError
from sig.protocol.constants import MAX_NAME

logger = logging.getLogger(__name__)

CONNECT = "#connect"
DISCONNECT = "#disconnect"
#: Events every sender has without declaring them; the router fires them.
BUILTIN_EVENTS = (CONNECT, DISCONNECT)
#: Names beginning with this are reserved for the router itself.
RESERVED_PREFIX = "$"
#: Cached match results for (sender, event) pairs of senders that are not live.
MATCH_CACHE_LIMIT = 4096

Sub = TypeVar("Sub", bound=Hashable)
Key = tuple["str | None", "str | None"]
#: The router-broadcast key (None, None), allocated once.
_ANY: Key = (None, None)


def is_channel(event: str) -> bool:
    """A ``#name`` event is a channel: anonymous listeners may receive it."""
    return event.startswith("#")


#: Characters no name may contain: C0 controls, DEL and C1 controls. A name is
#: printed in logs, ``sig senders`` and ``sig links``; a control character there
#: could move a terminal's cursor, change its colours or forge a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: UTF-16 surrogates, which no UTF-8 string (so no name on the wire) can hold.
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid sender/event/method/peer name, else raise.

    Valid: a str of 1..255 UTF-8 bytes without control characters
    (U+0000-U+001F, U+007F, U+0080-U+009F). PROTOCOL.md section 2, ``name``.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"{kind} name must be a str, not {type(name).__name__}")
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_NAME:
        raise InvalidNameError(f"{kind} name must be 1..{MAX_NAME} UTF-8 bytes: {name!r}")
    if _CONTROL.search(name):
        raise InvalidNameError(
            f"{kind} name must not contain control characters"
            f" (U+0000-U+001F, U+007F-U+009F): {name!r}"
        )
    if _SURROGATE.search(name):
        raise InvalidNameError(f"{kind} name is not valid Unicode (a lone surrogate): {name!r}")
    return name


def check_declared_event(event: object) -> str:
    """Return ``event`` if a sender may declare it, else raise InvalidNameError.

    ``#connect`` and ``#disconnect`` are fired by the router alone (rule 4): a
    sender that declared them could trigger a forged announcement to every
    listener of the channel.
    """
    check_name("event", event)
    assert isinstance(event, str)
    if event.startswith(RESERVED_PREFIX):
        raise InvalidNameError(f"event names starting with {RESERVED_PREFIX!r} are reserved")
    if event in BUILTIN_EVENTS:
        raise InvalidNameError(
            f"event {event!r} is reserved: the router fires it, no sender may declare it"
        )
    return event


def check_method(method: object) -> str:
    """Return ``method`` if a sender may declare it: a name, not starting with ``$``."""
    check_name("method", method)
    assert isinstance(method, str)
    if method.startswith(RESERVED_PREFIX):
        raise InvalidNameError(f"method names starting with {RESERVED_PREFIX!r} are reserved")
    return method


class Incarnations:
    """Numbers for sender sessions, unique across restarts without stored state.

    A random 32-bit epoch per table (per gateway start) times 2**21, plus a
    count: below 2**53, so exact in every JSON reader. The epoch is random,
    not the time: a gateway host without a real-time clock (a Raspberry Pi)
    may start with the same wrong time twice. A new epoch is drawn when the
    count runs out.
    """

    COUNT_BITS = 21

    def __init__(self) -> None:
        self._epoch = secrets.randbits(32)
        self._count = 0

    def next(self) -> int:
        self._count += 1
        if self._count >> self.COUNT_BITS:
            self._epoch, self._count = secrets.randbits(32), 1
        return (self._epoch << self.COUNT_BITS) | self._count


@dataclass(frozen=True)
class SenderInfo:
    """A live sender as the router knows it."""

    name: str
    events: tuple[str, ...]
    methods: tuple[str, ...] = ()
    default_handler: bool = False
    owner: Any = field(default=None, compare=False, repr=False)
    #: This sender session's number, unique across gateway restarts (PROTOCOL.md section 4).
    incarnation: int = field(default=0, compare=False)
    #: What the sender said about itself (retained events, describe): sig.core.meta.
    meta: SenderMeta = field(default=NO_META, compare=False, repr=False)

    def announcement(self) -> dict[str, Any]:
        """What this sender offers: its events, its methods, ``default`` if it has a
        default handler (``$gateway senders``, ``sig senders``)."""
        data: dict[str, Any] = {"events": list(self.events), "requests": list(self.methods)}
        if self.default_handler:
            data["default"] = True
        return data

    def presence(self) -> dict[str, Any]:
        """Data of this sender's ``#connect`` / ``#disconnect``: the announcement and
        the incarnation, which tells a new session of the sender from a repeat."""
        return {**self.announcement(), "incarnation": self.incarnation}

    def declares(self, event: str) -> bool:
        return event in self.events or event in BUILTIN_EVENTS

    def handles(self, method: str) -> bool:
        return self.default_handler or method in self.methods


Announce = Callable[[SenderInfo, str], None]


class RoutingTable(Generic[Sub]):
    """Senders and subscriptions; answers "who gets (sender, event)?".

    ``announce(sender, "#connect" | "#disconnect")`` is called after a sender is
    added or removed, when someone listens to that event (nobody listening, no
    call: a link's teardown then costs no announcement); the owner of the table
    turns it into a delivery.
    Subscribers are any hashable objects; one subscriber subscribed under several
    matching keys is returned once per match.
    """

    def __init__(self, announce: Announce | None = None) -> None:
        self._senders: dict[str, SenderInfo] = {}
        self._subs: dict[Key, dict[Sub, int]] = {}
        self._cache: dict[tuple[str, str], tuple[Sub, ...]] = {}
        #: Index of the cache: sender -> its cached events; channel -> its cached senders.
        self._cached_by_sender: dict[str, set[str]] = {}
        self._cached_by_channel: dict[str, set[str]] = {}
        self._sub_count = 0
        self._announce = announce
        self._incarnations = Incarnations()

    # --- senders ----------------------------------------------------------

    @property
    def senders(self) -> Mapping[str, SenderInfo]:
        return MappingProxyType(self._senders)

    def add_sender(
        self,
        name: str,
        events: Iterable[str],
        methods: Iterable[str] = (),
        *,
        default_handler: bool = False,
        owner: Any = None,
        meta: SenderMeta = NO_META,
    ) -> SenderInfo:
        """Register a live sender and fire its ``#connect``."""
        check_name("sender", name)
        if name.startswith(RESERVED_PREFIX):
            raise InvalidNameError(f"sender names starting with {RESERVED_PREFIX!r} are reserved")
        if isinstance(events, str):
            raise InvalidNameError("events must be a list of names, not one str")
        event_list = tuple(dict.fromkeys(check_declared_event(e) for e in events))
        method_list = tuple(dict.fromkeys(check_method(m) for m in methods))
        if name in self._senders:
            raise DuplicateSenderError(f"a sender named {name!r} is already connected")
        incarnation = self._incarnations.next()
        info = SenderInfo(
            name, event_list, method_list, default_handler, owner, incarnation, meta
        )
        self._senders[name] = info
        logger.debug("sender %s connected with events %s", name, event_list)
        if self._announce is not None and self.matches_any(name, CONNECT):
            self._announce(info, CONNECT)
        return info

    def remove_sender(self, name: str) -> SenderInfo | None:
        """Remove a sender and fire its ``#disconnect``; None if it was not there."""
        info = self._senders.pop(name, None)
        if info is None:
            return None
        if self._announce is not None and self.matches_any(name, DISCONNECT):
            self._announce(info, DISCONNECT)
        # After the announcement, which may have cached (name, "#disconnect").
        if name in self._cached_by_sender:
            self._forget_sender(name)
        return info

    def remove_senders(self, names: Iterable[str]) -> int:
        """Remove many senders (a link that went away), each with its ``#disconnect``.

        The same as :meth:`remove_sender` per name, in one loop: O(len(names)).
        Returns how many were there.
        """
        pop, cached, announce = self._senders.pop, self._cached_by_sender, self._announce
        subs = self._subs
        removed = 0
        for name in names:
            info = pop(name, None)
            if info is None:
                continue
            removed += 1
            if announce is not None and (
                _ANY in subs
                or (None, DISCONNECT) in subs
                or (name, DISCONNECT) in subs
                or (name, None) in subs
            ):
                announce(info, DISCONNECT)
            if name in cached:
                self._forget_sender(name)
        return removed

    def sender(self, name: str) -> SenderInfo | None:
        return self._senders.get(name)

    def check_trigger(self, sender: str, event: str) -> SenderInfo:
        """The live sender ``sender`` if it may trigger ``event``, else raise."""
        info = self._senders.get(sender)
        if info is None:
            raise UnknownEventError(f"sender {sender!r} is not connected")
        if event not in info.events:
            raise UnknownEventError(f"sender {sender!r} did not declare event {event!r}")
        return info

    # --- subscriptions ----------------------------------------------------

    def subscribe(self, sub: Sub, sender: str | None, event: str | None) -> None:
        if sender is not None:
            check_name("sender", sender)
        if event is not None:
            check_name("event", event)
        bucket = self._subs.setdefault((sender, event), {})
        bucket[sub] = bucket.get(sub, 0) + 1
        self._sub_count += 1
        self._invalidate(sender, event)

    def unsubscribe(self, sub: Sub, sender: str | None, event: str | None) -> bool:
        """Drop one subscription of ``sub`` under the key; False if there was none."""
        key = (sender, event)
        bucket = self._subs.get(key)
        if bucket is None or sub not in bucket:
            return False
        if bucket[sub] > 1:
            bucket[sub] -= 1
        else:
            del bucket[sub]
            if not bucket:
                del self._subs[key]
        self._sub_count -= 1
        self._invalidate(sender, event)
        return True

    def unsubscribe_many(self, sub: Sub, keys: Iterable[Key]) -> None:
        """Drop one subscription of ``sub`` per key (a link that went away): O(len(keys))."""
        subs, forget = self._subs, self._forget
        for key in keys:
            bucket = subs.get(key)
            if bucket is None:
                continue
            count = bucket.pop(sub, 0)
            if not count:
                continue
            if count > 1:
                bucket[sub] = count - 1
            elif not bucket:
                del subs[key]
            self._sub_count -= 1
            sender, event = key
            if sender is not None and event is not None:
                forget(sender, event)  # the common case, without _invalidate's dispatch
            else:
                self._invalidate(sender, event)

    def subscribers(self, sender: str | None, event: str | None) -> tuple[Sub, ...]:
        """Subscribers registered under exactly this key."""
        return tuple(self._subs.get((sender, event), ()))

    def subscribed_keys(self) -> Collection[Key]:
        """Every (sender, event) key someone subscribes to (the MQTT bridge follows them)."""
        return self._subs.keys()

    def subscription_count(self) -> int:
        """All subscriptions (a subscriber under the same key twice counts twice); O(1)."""
        return self._sub_count

    def cache_size(self) -> int:
        """Cached (sender, event) match results (for tests and stats)."""
        return len(self._cache)

    def matches_any(self, sender: str, event: str) -> bool:
        """Whether anyone gets ``event`` of ``sender``; O(1), caches nothing.

        Buckets are deleted when they empty, so a key present has a subscriber.
        """
        subs = self._subs
        return (
            _ANY in subs
            or (sender, event) in subs
            or (sender, None) in subs
            or (event.startswith("#") and (None, event) in subs)
        )

    def match(self, sender: str, event: str) -> Collection[Sub]:
        """Subscribers that get ``event`` of ``sender``, each once."""
        try:
            return self._cache[(sender, event)]
        except KeyError:
            pass
        subs = self._subs
        found: dict[Sub, None] = {}
        for key in (
            (sender, event),
            (sender, None),
            (None, event) if is_channel(event) else None,
            (None, None),
        ):
            if key is not None:
                bucket = subs.get(key)
                if bucket:
                    found.update(dict.fromkeys(bucket))
        result = tuple(found)
        # Live senders are bounded by their declared events; any other pair (the
        # client's table knows no senders, it only listens) up to a fixed bound.
        if sender in self._senders or len(self._cache) < MATCH_CACHE_LIMIT:
            self._remember(sender, event, result)
        return result

    # --- the match cache and its index -------------------------------------

    def _remember(self, sender: str, event: str, result: tuple[Sub, ...]) -> None:
        self._cache[(sender, event)] = result
        self._cached_by_sender.setdefault(sender, set()).add(event)
        if is_channel(event):
            self._cached_by_channel.setdefault(event, set()).add(sender)

    def _forget(self, sender: str, event: str) -> None:
        """Drop one cached pair and its index entries (no-op if it is not cached)."""
        if self._cache.pop((sender, event), None) is None:
            return
        events = self._cached_by_sender.get(sender)
        if events is not None:
            events.discard(event)
            if not events:
                del self._cached_by_sender[sender]
        if is_channel(event):
            senders = self._cached_by_channel.get(event)
            if senders is not None:
                senders.discard(sender)
                if not senders:
                    del self._cached_by_channel[event]

    def _forget_sender(self, sender: str) -> None:
        """Drop every cached pair of ``sender``: O(its cached pairs)."""
        events = self._cached_by_sender.pop(sender, None)
        if not events:
            return
        cache, by_channel = self._cache, self._cached_by_channel
        for event in events:
            del cache[(sender, event)]
            if is_channel(event):
                senders = by_channel[event]
                senders.discard(sender)
                if not senders:
                    del by_channel[event]

    def _invalidate(self, sender: str | None, event: str | None) -> None:
        """Drop the cached pairs a subscription under ``(sender, event)`` can change."""
        if sender is not None and event is not None:
            self._forget(sender, event)
        elif sender is not None:
            self._forget_sender(sender)
        elif event is not None:
            if is_channel(event):  # (None, "tick") matches nothing (rule 3)
                for name in list(self._cached_by_channel.get(event, ())):
                    self._forget(name, event)
        else:  # (None, None) matches every pair
            self._cache.clear()
            self._cached_by_sender.clear()
            self._cached_by_channel.clear()

    def check_cache(self) -> None:
        """Raise AssertionError unless the cache and its index agree (for tests)."""
        by_sender: dict[str, set[str]] = {}
        by_channel: dict[str, set[str]] = {}
        for s, e in self._cache:
            by_sender.setdefault(s, set()).add(e)
            if is_channel(e):
                by_channel.setdefault(e, set()).add(s)
        assert by_sender == self._cached_by_sender, (by_sender, self._cached_by_sender)
        assert by_channel == self._cached_by_channel, (by_channel, self._cached_by_channel)
        for (s, e), result in self._cache.items():
            assert set(result) == set(self._uncached_match(s, e)), (s, e)
        assert self._sub_count == sum(sum(b.values()) for b in self._subs.values())

    def _uncached_match(self, sender: str, event: str) -> tuple[Sub, ...]:
        found: dict[Sub, None] = {}
        for key in ((sender, event), (sender, None), (None, event), (None, None)):
            if key[0] is None and key[1] is not None and not is_channel(event):
                continue
            found.update(dict.fromkeys(self._subs.get(key, {})))
        return tuple(found)
