"""Retained last values: the newest data of each retained (sender, event) (sans-I/O).

A sender marks events as retained when it registers (``meta`` ``"retained"``,
:mod:`sig.core.meta`; in-process ``add_sender(..., retained=...)``). The
gateway then keeps the last data of each such (sender, event), and a new
listener whose key matches it gets it at once, right after LISTENING, as
RETAINED (PROTOCOL.md section 4, "Retained values").

Lifetime of a value:

* set and replaced by the sender's TRIGGERs (:meth:`RetainedStore.update`,
  one dict lookup per trigger on the hot path for senders that retain nothing);
* marked stale when the sender's session ends (:meth:`disconnected`): the
  link closed, timed out, the device reset; a new listener still gets it,
  with the stale flag;
* fresh again when the same sender (same owner) registers again with the
  event still retained; cleared when it registers without it;
* cleared when the sender unregisters on purpose (UNREGISTER_SENDER,
  ``remove_sender``), and when another owner takes the name over.

Bounds (``[limits]`` retained_values / retained_bytes): at most ``max_values`` values
and ``max_bytes`` bytes (data plus both names). A new value that does not fit
evicts the oldest stale value first (``retained_evicted``); if no stale value
is left, the new one is refused and counted (``retained_refused``) and the
sender's older value of that pair, if any, is dropped too: the gateway never
hands out a value it knows is not the last one.

One owner (a peer, a login, a serial link; not the gateway's own in-process
senders) holds at most a quarter of either bound (``max_per_owner``,
``max_bytes_per_owner``), so one peer cannot fill the store and starve the
others: past its share its new pairs are refused and counted the same way.

``journal(key, value)`` (None: removed) is told every change; the sqlite3
persistence (:mod:`sig.routers.retained_db`) batches them to disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sig.core.limits import Limits, peer_limit
from sig.core.session import Session
from sig.errors import DecodeError
from sig.protocol import messages as w
from sig.protocol.constants import LISTEN_NO_LOCAL
from sig.protocol.data import unpack

if TYPE_CHECKING:
    from sig.core.access import Access

logger = logging.getLogger(__name__)

#: Values kept at most, by default ([limits] retained_values).
DEFAULT_MAX_VALUES = Limits.retained_values
#: Bytes kept at most, by default ([limits] retained_bytes): data plus both names.
DEFAULT_MAX_BYTES = Limits.retained_bytes
#: What an in-process sender's values are owned by.
LOCAL_OWNER = "local"
#: Counters the store keeps in the gateway's stats.
COUNTERS = (
    "retained_values",
    "retained_bytes",
    "retained_sent",
    "retained_refused",
    "retained_evicted",
)

Pair = tuple[str, str]


@dataclass(slots=True)
class Value:
    """One retained value: the data as it came (raw CBOR), who set it, stale or not."""

    data: bytes
    owner: str
    stale: bool = False
    #: The RETAINED body, made by the first listener that gets it; None after a change.
    body: bytes | None = None

    def size(self, key: Pair) -> int:
        """What the value counts against ``max_bytes``."""
        return len(self.data) + len(key[0]) + len(key[1])

    def retained_body(self, key: Pair) -> bytes:
        """The RETAINED body of this value (encoded once per change, whoever listens)."""
        body = self.body
        if body is None:
            body = self.body = w.encode(w.Retained(key[0], key[1], self.data, self.stale))
        return body


#: Told every change: (sender, event) and the new value, or None when it went.
Journal = Callable[[Pair, "Value | None"], None]


class RetainedStore:
    """The retained values of one gateway (or one LocalRouter), bounded."""

    def __init__(
        self,
        max_values: int = DEFAULT_MAX_VALUES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        counters: dict[str, int] | None = None,
    ) -> None:
        self.max_values = max_values
        self.max_bytes = max_bytes
        #: What one owner may hold (in-process senders are not bound by it).
        self.max_per_owner = max(1, max_values // 4)
        self.max_bytes_per_owner = max(1, max_bytes // 4)
        #: owner -> [values, bytes] it holds.
        self._held: dict[str, list[int]] = {}
        self.counters = counters if counters is not None else {}
        self.counters.update(dict.fromkeys(COUNTERS, 0))
        #: Live sender -> its retained events: what ``route`` asks per trigger.
        self.kept: dict[str, frozenset[str]] = {}
        self.values: dict[Pair, Value] = {}
        self.journal: Journal | None = None
        #: Live retaining sender -> its owner, for the values its triggers create.
        self._owners: dict[str, str] = {}
        self._bytes = 0
        self._by_sender: dict[str, set[str]] = {}
        self._by_channel: dict[str, set[str]] = {}
        #: Stale values in the order they went stale: the first to evict.
        self._stale: dict[Pair, None] = {}

    def __len__(self) -> int:
        return len(self.values)

    @property
    def size(self) -> int:
        """Bytes held (data plus both names of every value)."""
        return self._bytes

    # --- what senders do --------------------------------------------------

    def registered(self, sender: str, retained: Iterable[str], owner: str) -> None:
        """``sender`` (owned by ``owner``) registered, retaining ``retained``.

        Its values from another owner go (the name was taken over); values of
        events it no longer retains go; the rest are fresh again.
        """
        kept = frozenset(retained)
        for event in list(self._by_sender.get(sender, ())):
            key = (sender, event)
            value = self.values[key]
            if value.owner != owner or event not in kept:
                self._remove(key)
            elif value.stale:
                value.stale, value.body = False, None
                self._stale.pop(key, None)
                self._told(key, value)
        if kept:
            self.kept[sender] = kept
            self._owners[sender] = owner
        else:
            self.kept.pop(sender, None)
            self._owners.pop(sender, None)

    def update(self, sender: str, event: str, data: bytes) -> None:
        """A retained event was triggered: its data is the value now (bounded).

        The common case (a value kept already, no larger than the room left)
        is a dict lookup and an attribute set.
        """
        key = (sender, event)
        old = self.values.get(key)
        if old is not None:
            grow = len(data) - len(old.data)
            if grow <= 0 or (
                self._bytes + grow <= self.max_bytes and self._share_left(old.owner, grow, 0)
            ):
                old.data, old.body = data, None
                if grow:
                    self._bytes += grow
                    self._hold(old.owner, 0, grow)
                    self.counters["retained_bytes"] = self._bytes
                if self.journal is not None:
                    self.journal(key, old)
                return
        self._update_slow(key, old, data)

    def _update_slow(self, key: Pair, old: Value | None, data: bytes) -> None:
        """A new pair, or a value that must make room first (evicting stale ones)."""
        sender, event = key
        grow = (
            len(data) - len(old.data) if old is not None else len(data) + len(sender) + len(event)
        )
        owner = old.owner if old is not None else self._owners.get(sender, LOCAL_OWNER)
        mine = self._share_left(owner, grow, 1 if old is None else 0)
        if not mine or not self._room(grow, new=old is None):
            if old is not None:
                self._remove(key)
            self.counters["retained_refused"] += 1
            logger.debug("retained value of %s:%s refused: the store is full", sender, event)
            return
        if old is not None:
            old.data, old.body = data, None
            self._bytes += grow
            self._hold(owner, 0, grow)
            self.counters["retained_bytes"] = self._bytes
            self._told(key, old)
            return
        self._insert(key, Value(data, owner))

    def disconnected(self, senders: Iterable[str]) -> None:
        """These senders' sessions ended: their values stay, marked stale."""
        for sender in senders:
            if self.kept.pop(sender, None) is None:
                continue
            self._owners.pop(sender, None)
            for event in self._by_sender.get(sender, ()):
                key = (sender, event)
                value = self.values[key]
                if not value.stale:
                    value.stale, value.body = True, None
                    self._stale[key] = None
                    self._told(key, value)

    def unregistered(self, sender: str) -> None:
        """``sender`` unregistered on purpose: its values go."""
        self.kept.pop(sender, None)
        self._owners.pop(sender, None)
        for event in list(self._by_sender.get(sender, ())):
            self._remove((sender, event))

    def load(self, sender: str, event: str, data: bytes, owner: str) -> bool:
        """A value read back from disk at start: stale, within the bounds; False if refused."""
        key = (sender, event)
        grow = len(data) + len(sender) + len(event)
        full = len(self.values) >= self.max_values or self._bytes + grow > self.max_bytes
        # what is loaded first stays: the file loads the newest first
        if key in self.values or full or not self._share_left(owner, grow, 1):
            return False
        self._insert(key, Value(data, owner, stale=True), tell=False)
        self._stale[key] = None
        return True

    # --- what listeners get -----------------------------------------------

    def matching(self, sender: str | None, event: str | None) -> list[tuple[Pair, Value]]:
        """The values a listener of (sender, event) matches, by the routing rules.

        ``(S, e)`` one value; ``(S, None)`` every value of S; ``(None, "#ch")``
        channel ``#ch`` of every sender; ``(None, e)`` without ``#`` nothing;
        ``(None, None)`` every value.
        """
        values = self.values
        if sender is not None and event is not None:
            value = values.get((sender, event))
            return [] if value is None else [((sender, event), value)]
        if sender is not None:
            return [((sender, e), values[sender, e]) for e in self._by_sender.get(sender, ())]
        if event is not None:
            if not event.startswith("#"):
                return []
            return [((s, event), values[s, event]) for s in self._by_channel.get(event, ())]
        return list(values.items())

    # --- bounds and indexes -------------------------------------------------

    def _room(self, grow: int, *, new: bool) -> bool:
        """Whether ``grow`` more bytes (and one more value if ``new``) fit, evicting stale ones."""
        while self._bytes + grow > self.max_bytes or (new and len(self.values) >= self.max_values):
            if not self._stale:
                return False
            victim = next(iter(self._stale))
            self._remove(victim)
            self.counters["retained_evicted"] += 1
        return True

    def _share_left(self, owner: str, grow: int, values: int) -> bool:
        """Whether ``owner`` may hold ``values`` more values and ``grow`` more bytes."""
        if owner == LOCAL_OWNER:
            return True  # the gateway's own senders: trusted, bound by the totals only
        held = self._held.get(owner, (0, 0))
        return held[0] + values <= self.max_per_owner and held[1] + grow <= self.max_bytes_per_owner

    def _hold(self, owner: str, values: int, size: int) -> None:
        """Count ``values`` more values and ``size`` more bytes for ``owner`` (or fewer)."""
        held = self._held.setdefault(owner, [0, 0])
        held[0] += values
        held[1] += size
        if not held[0]:
            del self._held[owner]

    def _insert(self, key: Pair, value: Value, *, tell: bool = True) -> None:
        sender, event = key
        self.values[key] = value
        self._by_sender.setdefault(sender, set()).add(event)
        if event.startswith("#"):
            self._by_channel.setdefault(event, set()).add(sender)
        self._bytes += value.size(key)
        self._hold(value.owner, 1, value.size(key))
        self._count()
        if tell:
            self._told(key, value)

    def _remove(self, key: Pair) -> None:
        value = self.values.pop(key, None)
        if value is None:
            return
        sender, event = key
        self._stale.pop(key, None)
        events = self._by_sender[sender]
        events.discard(event)
        if not events:
            del self._by_sender[sender]
        if event.startswith("#"):
            senders = self._by_channel[event]
            senders.discard(sender)
            if not senders:
                del self._by_channel[event]
        self._bytes -= value.size(key)
        self._hold(value.owner, -1, -value.size(key))
        self._count()
        self._told(key, None)

    def _count(self) -> None:
        self.counters["retained_values"] = len(self.values)
        self.counters["retained_bytes"] = self._bytes

    def _told(self, key: Pair, value: Value | None) -> None:
        if self.journal is not None:
            self.journal(key, value)


# --- the gateway's side: who owns a value, who gets it -----------------------


def session_owner(session: Session) -> str:
    """Who a remote sender's values belong to, across its reconnects.

    An authenticated principal (a login, a certificate) is the owner; else a
    serial link (the device on that port); else the peer name of its HELLO (a
    TCP client: the same program reconnecting). Another owner registering the
    name takes it over, and the old values go (:meth:`RetainedStore.registered`).
    """
    principal = session.principal
    if principal.kind in ("user", "certificate"):
        return f"{principal.kind}:{principal.name}"
    if session.link.persistent:
        return f"link:{session.link.name}"
    return f"peer:{session.peer}"


def send_retained(
    store: RetainedStore,
    access: Access,
    session: Session,
    sender: str | None,
    event: str | None,
    options: int = 0,
) -> int:
    """After LISTENING: RETAINED for every value the key matches and the peer may see.

    Each goes like an EVENT: only where the ACL lets that principal see the
    pair, not to a ``no_local`` listener when its own link holds the sender,
    dropped and counted when it exceeds the peer's max_body
    (``dropped_too_large``) or the link is above its high-water mark (the
    link's ``dropped``). Returns how many were queued.
    """
    if not store.values:
        return 0
    acl = access.acl(session.principal) if access.policy.configured else None
    no_local = bool(options & LISTEN_NO_LOCAL)
    limit = peer_limit(session)
    sent = 0
    for key, value in store.matching(sender, event):
        s, e = key
        if acl is not None and not acl.may_see(s, e):
            continue
        if no_local and _owned_by(access, s, session):
            continue
        body = value.retained_body(key)
        if len(body) > limit:
            session.dropped_too_large += 1
            store.counters["dropped_too_large"] = store.counters.get("dropped_too_large", 0) + 1
        elif session.link.send(body, droppable=True):
            sent += 1
    store.counters["retained_sent"] += sent
    return sent


def _owned_by(access: Access, sender: str, session: Session) -> bool:
    info = access.table.sender(sender)
    return info is not None and info.owner is session


def retained_info(sender: str, event: str, stale: bool) -> dict[str, Any]:
    """A listener callback's ``info`` for a retained value."""
    return {"sender": sender, "event": event, "retained": True, "stale": stale}


class Listening(Protocol):
    """An in-process listener (:class:`sig.core.endpoints.Listener`), as this module uses it."""

    sender: str | None
    event: str | None

    def callback(self, info: dict[str, Any], data: Any) -> Any: ...


def deliver_retained(store: RetainedStore, listener: Listening) -> int:
    """Call an in-process listener that was just added with every value it matches.

    Returns the callbacks that raised (logged, like :func:`sig.core.endpoints.deliver`).
    """
    failures = 0
    for (s, e), value in store.matching(listener.sender, listener.event):
        try:
            data = unpack(value.data)
        except DecodeError as exc:
            logger.warning("retained %s:%s does not decode: %s", s, e, exc)
            continue
        try:
            listener.callback(retained_info(s, e, value.stale), data)
        except Exception:
            failures += 1
            logger.exception("listener %r raised on retained %s:%s", listener, s, e)
    return failures
