"""A client's registrations with its gateway and their replay (sans-I/O).

:class:`ClientRegistry` is the part of :class:`sig.core.client.ClientSession`
that outlives a connection: the client's senders (with the refs and TRIGGER
prefixes the gateway knows them by) and its listeners (a routing table, one
listener id per listened key). After every WELCOME it replays all of them, in
order, and tells which senders were refused (their names were taken while
we were away); those it registers again with backoff, from ``poll``, until
the gateway says yes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from sig.core.endpoints import Listener, ListenerCallback, Sender, check_listener_args
from sig.core.endpoints import subscribe_listener as _subscribe
from sig.core.routing import Key, RoutingTable
from sig.errors import InvalidNameError, SigError
from sig.protocol import messages as w
from sig.protocol.constants import LISTEN_NO_LOCAL, POLICY_BLOCK, POLICY_DROP, POLICY_LATEST

logger = logging.getLogger(__name__)

#: A listened key with its LISTEN options: one gateway listener id each.
ListenKey = tuple["str | None", "str | None", int]
#: Every LISTEN options value (a policy, with or without no_local).
LISTEN_OPTION_VALUES = tuple(
    p | n for p in (POLICY_DROP, POLICY_LATEST, POLICY_BLOCK) for n in (0, LISTEN_NO_LOCAL)
)


class State(Enum):
    """Where the session is; only OPEN carries triggers, requests and keepalive."""

    CLOSED = "closed"  #: no link
    HELLO_SENT = "hello sent"  #: waiting for WELCOME
    REPLAYING = "replaying"  #: WELCOME came; registrations are being answered
    OPEN = "open"


@dataclass(eq=False)
class SenderEntry:
    """One of our senders and what the gateway knows it by."""

    sender: Sender
    ref: int
    event_refs: dict[str, int]
    prefixes: dict[str, bytes]  # event -> TRIGGER header + event_ref varint
    #: Registered (or being registered) on the current connection; False after
    #: the gateway refused it (name taken meanwhile): its triggers are dropped.
    live: bool = False
    #: When to register it again after a refusal (None: no retry is due).
    retry_at: float | None = None
    #: Registrations tried again since the refusal.
    attempts: int = 0
    #: REGISTER_SENDER sent under ``ref`` and not answered yet.
    in_flight: bool = False
    #: REGISTER_SENDER ``meta`` (retained events, describe): sig.core.meta.encode_meta.
    meta: bytes = b""


@dataclass
class Replay:
    """What the replay after WELCOME still waits for, and what it was refused."""

    waiting: set[int] = field(default_factory=set)
    refused: list[tuple[SenderEntry, SigError]] = field(default_factory=list)


class ClientRegistry:
    """Senders and listeners of one client, and what is in flight for them."""

    def __init__(
        self,
        send: Callable[[w.Message], None],
        stats: dict[str, int],
        retry_delay: Callable[[int], float],
        ids: itertools.count[int],
    ) -> None:
        self._send = send
        self.stats = stats
        self.retry_delay = retry_delay
        self._ids = ids
        #: The session's state (the session sets it): registrations are sent
        #: while REPLAYING or OPEN, and answers awaited by the caller only when OPEN.
        self.state = State.CLOSED
        #: Listeners (callbacks and iterators) by (sender, event).
        self.table: RoutingTable[Listener] = RoutingTable()
        self.senders: dict[str, SenderEntry] = {}
        #: (sender, event, LISTEN options) -> the listener id the gateway knows it by.
        self.listen_ids: dict[ListenKey, int] = {}
        self.replay = Replay()
        self._by_ref: dict[int, SenderEntry] = {}
        self._listen_keys: dict[int, ListenKey] = {}
        self._awaiting: set[int] = set()  # REGISTER_SENDER / LISTEN refs not answered yet
        #: The key of the last LISTEN answered: the RETAINED that follow are for its
        #: listeners, or for ``retained_only`` when it was a second LISTEN for one of them.
        self.retained_key: ListenKey | None = None
        self.retained_only: Listener | None = None
        #: Second LISTENs of a key already listened to, for one new listener's retained values.
        self._extra: dict[int, Listener] = {}

    def listening(self, lid: int) -> None:
        """LISTENING ``lid`` came: the RETAINED that follow it are for that key's listeners.

        A second LISTEN (:meth:`add_listener`) is for one listener; it is
        UNLISTENed at once (its RETAINED are on their way already, and the
        key's own LISTEN stays), so the gateway never counts it for long.
        """
        only = self.retained_only = self._extra.pop(lid, None)
        if only is None:
            self.retained_key = self._listen_keys.get(lid)
            return
        self.retained_key = (only.sender, only.event, only.options)
        if self.state is State.OPEN:
            self._send(w.Unlisten(lid))

    def awaits(self, ref: int) -> bool:
        """True when a REGISTER_SENDER or LISTEN sent under ``ref`` is not answered yet."""
        return ref in self._awaiting

    def connection_lost(self) -> None:
        """Nothing is registered, in flight or due on a link that is gone."""
        for entry in self.senders.values():
            entry.live = entry.in_flight = False
            entry.retry_at = None
        self._awaiting.clear()
        self._extra.clear()
        self.replay = Replay()

    # --- the replay -------------------------------------------------------------

    def start_replay(self) -> None:
        """WELCOME came: register every sender and listened key again, in order."""
        self.replay = Replay()
        for entry in list(self.senders.values()):
            self._register(entry, optimistic=True)
            self.replay.waiting.add(entry.ref)
        for key, lid in list(self.listen_ids.items()):
            self._listen(lid, key)
            self.replay.waiting.add(lid)

    def finish_replay(self, now: float) -> list[tuple[SenderEntry, SigError]]:
        """The replay is answered: count and log its refusals, plan their retries."""
        refused, self.replay = self.replay.refused, Replay()
        for entry, exc in refused:
            self.stats["senders_refused"] += 1
            retry = not isinstance(exc, InvalidNameError)  # a bad name stays bad
            logger.warning(
                "gateway refused sender %r at reconnect: %s; %s (its triggers are dropped"
                " and counted in stats['dropped_unregistered'])",
                entry.sender.name,
                exc,
                "registering it again with backoff" if retry else "not retrying",
            )
            if retry:
                entry.attempts = 0
                entry.retry_at = now + self.retry_delay(0)
        return refused

    def answered(self, ref: int, error: SigError | None, now: float) -> bool:
        """A REGISTER_SENDER or LISTEN was answered (``error`` None: accepted).

        Returns True when the caller waits for this answer (it was not part of
        the replay, which reports in :meth:`finish_replay`).
        """
        self._awaiting.discard(ref)
        self._extra.pop(ref, None)  # a second LISTEN refused
        entry = self._by_ref.get(ref)
        if entry is not None:
            entry.in_flight = False
            entry.live = error is None
            if entry.attempts:
                self._retried(entry, error, now)
        if ref not in self.replay.waiting:
            return True
        self.replay.waiting.discard(ref)
        if error is not None and entry is not None:
            self.replay.refused.append((entry, error))
        elif error is not None:
            logger.error("re-registering listener %r failed: %s", self._listen_keys.get(ref), error)
        return False

    def _retried(self, entry: SenderEntry, error: SigError | None, now: float) -> None:
        """The answer to a registration tried again after a refusal."""
        name = entry.sender.name
        if error is None:
            logger.info("sender %r registered again after %d attempt(s)", name, entry.attempts)
            entry.attempts = 0
        elif isinstance(error, InvalidNameError):
            logger.warning("sender %r refused for good: %s", name, error)
            entry.attempts = 0
        else:
            logger.debug("sender %r still refused (attempt %d): %s", name, entry.attempts, error)
            entry.retry_at = now + self.retry_delay(entry.attempts)

    def next_retry(self, due: float) -> float:
        """The earlier of ``due`` and the next retry of a refused sender."""
        for entry in self.senders.values():
            if entry.retry_at is not None and entry.retry_at < due:
                due = entry.retry_at
        return due

    def retry_refused(self, now: float) -> None:
        """Register again the refused senders whose retry is due."""
        for entry in list(self.senders.values()):
            if entry.retry_at is not None and entry.retry_at <= now:
                entry.retry_at = None
                entry.attempts += 1
                self._register(entry, optimistic=False)

    # --- sending ------------------------------------------------------------------

    def _register(self, entry: SenderEntry, optimistic: bool) -> None:
        """Send REGISTER_SENDER (once per sender in flight).

        ``optimistic``: the sender is live at once (TRIGGERs may follow
        REGISTER_SENDER, PROTOCOL.md 3.2); otherwise only once it is accepted.
        """
        if entry.in_flight:
            return
        s = entry.sender
        msg = w.RegisterSender(
            entry.ref,
            s.name,
            tuple((r, e) for e, r in entry.event_refs.items()),
            s.methods,
            s.default_handler,
            entry.meta,
        )
        entry.in_flight = True
        if optimistic:
            entry.live = True
        self._awaiting.add(entry.ref)
        self._send(msg)

    def _listen(self, lid: int, key: ListenKey) -> None:
        self._awaiting.add(lid)
        self._send(w.Listen(lid, *key))  # the options too: a replay keeps the policy

    def _sent(self, ref: int) -> int | None:
        """After a registration was sent: the ref its caller waits for, or None.

        While the replay runs, the replay waits for it (and tells a refusal in
        ``Opened``); the caller only waits once the session is open.
        """
        if self.state is State.REPLAYING:
            self.replay.waiting.add(ref)
            return None
        return ref

    # --- senders --------------------------------------------------------------------

    def add_sender(self, sender: Sender, meta: bytes = b"") -> int | None:
        """Keep a new sender; returns the ref to wait for when a REGISTER_SENDER was sent."""
        refs = {e: next(self._ids) for e in sender.events}
        entry = SenderEntry(
            sender,
            next(self._ids),
            refs,
            {e: w.trigger_prefix(r) for e, r in refs.items()},
            meta=meta,
        )
        self.senders[sender.name] = entry
        self._by_ref[entry.ref] = entry
        if self.state not in (State.REPLAYING, State.OPEN):
            return None
        self._register(entry, optimistic=True)
        return self._sent(entry.ref)

    def confirm(self, name: str) -> int | None:
        """Register a refused sender again now; it goes live only once accepted.

        Unlike a first registration, nothing is sent for it before the gateway
        said yes: while refused, its triggers stay counted as dropped_unregistered
        instead of reaching the gateway as TRIGGERs of an unknown ref. Returns
        the ref to wait for (None when the session is not open or it is live).
        """
        entry = self.senders.get(name)
        if entry is None or entry.live or self.state is not State.OPEN:
            return None
        entry.retry_at = None
        self._register(entry, optimistic=False)
        return entry.ref

    def remove_sender(self, name: str, *, tell: bool = True) -> bool:
        """Forget a sender (UNREGISTER_SENDER when open and ``tell``)."""
        entry = self.senders.pop(name, None)
        if entry is None:
            return False
        self._by_ref.pop(entry.ref, None)
        self._awaiting.discard(entry.ref)
        entry.live = False
        if tell and self.state is State.OPEN:
            self._send(w.UnregisterSender(entry.ref))
        return True

    # --- listeners ------------------------------------------------------------------

    def subscribe(
        self, callback: ListenerCallback, sender: str | None, event: str | None, options: int = 0
    ) -> tuple[Listener, int | None]:
        """Add a listener (the existing one for the same callback, key and options).

        Returns it and the listener id to wait for when a LISTEN was sent.
        """
        check_listener_args(callback, sender, event)
        for existing in self.table.subscribers(sender, event):
            if existing.callback == callback and existing.options == options:
                return existing, None
        return self.add_listener(_subscribe(self.table, callback, sender, event, options))

    def add_listener(self, listener: Listener) -> tuple[Listener, int | None]:
        """Listen to a listener's key on the gateway (once per key and options); it is
        in the table. Listeners of one key with other options get a LISTEN each:
        the gateway applies the strictest policy of a link's matching listeners."""
        key = (listener.sender, listener.event, listener.options)
        if key in self.listen_ids:
            return listener, self._listen_again(key, listener)
        lid = next(self._ids)
        self.listen_ids[key] = lid
        self._listen_keys[lid] = key
        if self.state not in (State.REPLAYING, State.OPEN):
            return listener, None
        self._listen(lid, key)
        return listener, self._sent(lid)

    def _listen_again(self, key: ListenKey, listener: Listener) -> int | None:
        """A new listener of a key listened to already: LISTEN again for its retained values.

        Not while the key's LISTEN waits for its answer (the values that follow
        it reach every listener of the key then) or the session is not open
        (the replay's LISTEN does the same). Returns the listener id to wait for.
        """
        if self.state is not State.OPEN or self.listen_ids[key] in self._awaiting:
            return None
        lid = next(self._ids)
        self._extra[lid] = listener
        self._awaiting.add(lid)
        self._send(w.Listen(lid, *key))
        return lid

    def unlisten(self, key: Key, *, tell: bool = True) -> None:
        """Stop listening to ``key`` on the gateway with the options no listener of it
        uses any more (each options value has its own LISTEN)."""
        used = {listener.options for listener in self.table.subscribers(*key)}
        for options in LISTEN_OPTION_VALUES:
            if options in used:
                continue
            lid = self.listen_ids.pop((*key, options), None)
            if lid is None:
                continue
            self._listen_keys.pop(lid, None)
            self._awaiting.discard(lid)
            if tell and self.state is State.OPEN:
                self._send(w.Unlisten(lid))
