"""Senders across gateways: presence, claims and the tie-break (sans-I/O, BRIDGE.md).

Each gateway publishes one retained presence message per sender it has
(``<prefix>/@presence/<gateway>/<sender>``: its events, requests, claim time
and the gateway's incarnation), and clears it when the sender goes. Every
claim of a name stays on the broker side by side, so each gateway decides
the same way: among the claims of online gateways (and its own), the earliest
claim time wins, ties by the smaller gateway id. The winner, if remote, is
registered on the bridge's session (so the core fires its ``#connect``); a
local sender that loses is refused with DUPLICATE_SENDER.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable

from sig.core.routing import RESERVED_PREFIX
from sig.core.session import Session, State
from sig.errors import ErrorCode
from sig.mqtt.state import BRIDGE_LIMITS, Claim, Host, Remote, parse_claim
from sig.protocol import messages as w

logger = logging.getLogger(__name__)


class Senders:
    """This gateway's senders as claims, and the other gateways' claims."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.claims: dict[str, dict[str, Claim]] = {}  # name -> gateway -> claim
        self.local: dict[str, Claim] = {}  # this gateway's own senders, with claim times
        self.refs = itertools.count(1)
        #: Called with (name, claim) when a local sender comes or changes, (name, None)
        #: when it goes (Home Assistant discovery).
        self.hooks: list[Callable[[str, Claim | None], None]] = []

    # --- from the broker ---------------------------------------------------------

    def presence(self, gateway: str, sender: str, payload: bytes) -> None:
        """A retained presence message (empty: the claim went)."""
        host = self.host
        if not payload:
            claims = self.claims.get(sender)
            if claims is not None and claims.pop(gateway, None) is not None:
                if not claims:
                    del self.claims[sender]
                self.reconcile(sender)
            return
        claim = parse_claim(gateway, sender, payload)
        if claim is None:
            host.counters["dropped_malformed"] += 1
            return
        if gateway == host.me:
            mine = self.local.get(sender)
            if mine != claim:  # a stale claim of ours (a past life, or a loser): cleared
                host.publish(host.topics.presence(host.me, sender), b"", qos=1, retain=True)
                if mine is not None:
                    self.publish(mine)
            return
        if sum(map(len, self.claims.values())) >= BRIDGE_LIMITS.senders_per_link * 2:
            host.counters["ignored_unmapped"] += 1
            return
        self.claims.setdefault(sender, {})[gateway] = claim
        self.reconcile(sender)

    def gateway_changed(self, gateway: str) -> None:
        """A gateway came or went: the claims of its senders count, or no longer."""
        for name, claims in list(self.claims.items()):
            if gateway in claims:
                self.reconcile(name)

    def forget_remote(self) -> None:
        """The broker is away: every remote sender goes (its #disconnect), claims too."""
        for name in list(self.host.remote):
            self.unregister(name)
        self.claims.clear()

    # --- the tie-break -----------------------------------------------------------

    def _valid(self, claim: Claim) -> bool:
        state = self.host.gateways.get(claim.gateway)
        return state is not None and state.online and state.incarnation == claim.incarnation

    def reconcile(self, name: str) -> None:
        """Make the session hold the winning remote claim of ``name``, if one wins."""
        valid = [c for c in self.claims.get(name, {}).values() if self._valid(c)]
        best = min(valid, key=lambda c: c.rank, default=None)
        local = self.local.get(name)
        if best is not None and local is not None and local.rank < best.rank:
            best = None  # ours is earlier: the other gateway refuses its own
        current = self.host.remote.get(name)
        if current is not None and current.claim == best:
            return
        if current is not None:
            self.unregister(name)
        if best is None:
            return
        if local is not None:
            self.host.counters["conflicts"] += 1
            if not self._refuse_local(name, best):
                return
        self.register(best)

    def _refuse_local(self, name: str, winner: Claim) -> bool:
        """The local sender ``name`` lost to ``winner``: DUPLICATE_SENDER to its peer."""
        core = self.host.core
        info = core.table.sender(name)
        owner = info.owner if info is not None else None
        if not isinstance(owner, Session):
            logger.warning(
                "sender %r is also on gateway %r (claimed earlier); the in-process one stays",
                name, winner.gateway,
            )  # fmt: skip
            return False
        logger.warning(
            "sender %r of %s: gateway %r claimed it earlier; refused (DUPLICATE_SENDER)",
            name, owner.link.name, winner.gateway,
        )  # fmt: skip
        text = f"sender {name!r} is already connected on gateway {winner.gateway!r}"
        for ref in [r for r, n in owner.senders.items() if n == name]:
            del owner.senders[ref]
            core._send(owner, w.Error(ErrorCode.DUPLICATE_SENDER, ref, text))
        core.access.unregistered(name, owner)
        core.registrations.drop_sender(owner, name)
        self.local_gone(name)
        return True

    # --- the bridge's session ----------------------------------------------------

    def register(self, claim: Claim) -> Remote | None:
        """Register ``claim``'s sender on the session; None if the core refused it."""
        host = self.host
        ref = next(self.refs)
        refs = [(next(self.refs), e) for e in claim.events]
        host.feed(
            w.RegisterSender(ref, claim.sender, tuple(refs), claim.methods, claim.default_handler)
        )
        if host.session.senders.get(ref) != claim.sender:
            logger.info("bridge: remote sender %r not registered here", claim.sender)
            return None
        remote = Remote(claim, ref, {e: w.trigger_prefix(r) for r, e in refs})
        host.remote[claim.sender] = remote
        logger.debug("bridge: sender %r of gateway %r registered", claim.sender, claim.gateway)
        return remote

    def unregister(self, name: str) -> None:
        host = self.host
        remote = host.remote.pop(name, None)
        if remote is not None and host.session.state is State.OPEN:
            logger.debug("bridge: sender %r of %r unregistered", name, remote.claim.gateway)
            host.feed(w.UnregisterSender(remote.sender_ref))

    def register_import(self, name: str, events: Iterable[str]) -> Remote | None:
        """A sender of an ``[[mqtt.import]]`` rule, on the session (never published)."""
        return self.register(Claim("", name, tuple(events), (), False, self.host.wall(), ""))

    # --- this gateway's own senders ----------------------------------------------

    def scan(self, names: Iterable[str] | None = None) -> None:
        """Follow the core's senders (not the bridge's own): presence, the tie-break.

        ``names``: only these (their ``#connect`` / ``#disconnect`` came); None: all.
        """
        host = self.host
        session = host.session
        table = host.core.table
        for name in set(table.senders) | set(self.local) if names is None else set(names):
            info = table.sender(name)
            if info is None or info.owner is session or name.startswith(RESERVED_PREFIX):
                self.local_gone(name)
                continue
            claim = self.local.get(name)
            if claim is not None and claim.events == info.events and claim.methods == info.methods:
                continue
            since = claim.since if claim is not None else host.wall()
            claim = Claim(
                host.me, name, info.events, info.methods, info.default_handler, since,
                host.incarnation,
            )  # fmt: skip
            self.local[name] = claim
            self.publish(claim)
            for hook in self.hooks:
                hook(name, claim)
            if name in self.claims:
                self.reconcile(name)

    def local_gone(self, name: str) -> None:
        """A local sender went: its presence is cleared; a remote claim may win now."""
        host = self.host
        if self.local.pop(name, None) is None:
            return
        host.publish(host.topics.presence(host.me, name), b"", qos=1, retain=True)
        for hook in self.hooks:
            hook(name, None)
        if name in self.claims:
            self.reconcile(name)

    def publish(self, claim: Claim) -> None:
        host = self.host
        topic = host.topics.presence(host.me, claim.sender)
        host.publish(topic, claim.payload(), qos=1, retain=True)

    def publish_all(self) -> None:
        for claim in self.local.values():
            self.publish(claim)
