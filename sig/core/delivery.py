"""Delivery policies per listener: drop, latest, block, and no_local (sans-I/O).

A LISTEN's ``options`` (PROTOCOL.md section 4, "Delivery") choose what the
gateway does with an EVENT for that listener while its link is behind (more
than ``high_water`` bytes wait for the peer):

* ``drop`` (0): the EVENT is dropped and counted (the link's ``dropped``);
* ``latest`` (1): the link keeps the newest pending value per (sender,
  event), counting the values replaced (``conflated``);
* ``block`` (2): the EVENT is queued anyway and the TCP link of its sender
  stops being read until the listener's link drains (the router's flow
  control does the pausing; this module only asks for it). Senders that
  cannot be paused (a serial port, an in-process sender, an announcement)
  have their EVENT dropped and counted (``dropped_unpausable``).
* ``no_local`` (bit 2): EVENTs triggered on the listener's own link are not
  for that listener.

The gateway sends one EVENT per link, however many of its listeners match,
so a link's rule for an EVENT is the strictest policy (block > latest > drop)
of its matching listeners that take it (no_local ones leave out their own
link's EVENTs); if none takes it, the link gets nothing. Only links with a
listener whose options are not 0 are known here: every other link keeps the
plain drop path, at no cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from sig.core.routing import Key, RoutingTable, is_channel
from sig.core.session import Session
from sig.protocol.constants import (
    LISTEN_NO_LOCAL,
    POLICY_BLOCK,
    POLICY_DROP,
    POLICY_LATEST,
    POLICY_MASK,
)

#: A delivery policy's name, as the client APIs and ``sig listen --policy`` take it.
Policy = Literal["drop", "latest", "block"]
#: Policy names -> LISTEN ``options`` bits.
POLICIES: dict[str, int] = {"drop": POLICY_DROP, "latest": POLICY_LATEST, "block": POLICY_BLOCK}
#: Rules cached per link, (sender, event) pairs (the cache starts again when full).
RULE_CACHE = 4096
#: No listener of the link takes the EVENT.
NOBODY = -1

#: Called with (the sender's session, the blocked listener's session): pause the sender.
Blocker = Callable[[Session, Session], None]


def listen_options(policy: str = "drop", no_local: bool = False) -> int:
    """LISTEN ``options`` for a policy name and the no_local flag; ValueError if unknown."""
    try:
        bits = POLICIES[policy]
    except KeyError:
        raise ValueError(
            f"unknown delivery policy {policy!r} (one of: {', '.join(POLICIES)})"
        ) from None
    return bits | (LISTEN_NO_LOCAL if no_local else 0)


def key_matches(key: Key, sender: str, event: str) -> bool:
    """Whether a listener under ``key`` gets ``event`` of ``sender`` (the routing rules)."""
    s, e = key
    if s is None and e is not None and not is_channel(e):
        return False  # (None, "tick") matches nothing (routing rule 3)
    return (s is None or s == sender) and (e is None or e == event)


class PolicyLink(Protocol):
    """What the policies need of a link (carriers.outbox.Outbox offers it)."""

    persistent: bool

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool: ...

    def send_latest(self, key: object, body: bytes) -> bool: ...

    def send_held(self, body: bytes) -> bool: ...

    def over_high_water(self) -> bool: ...


@dataclass
class LinkRules:
    """The listener options of one link, and its rule per (sender, event), cached."""

    options: dict[int, int] = field(default_factory=dict)  #: listener id -> options (not 0)
    #: (sender, event) -> (policy for others' EVENTs, policy for the link's own), or NOBODY.
    cache: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def rule(self, listeners: dict[int, Key], sender: str, event: str) -> tuple[int, int]:
        """The strictest policy of the matching listeners, for others' and for own EVENTs.

        Called only for a link the routing table matched, so some listener of
        it matches: the listeners with options are looked at first, and the
        plain ones only when those leave the link's own EVENTs to nobody.
        """
        pair = (sender, event)
        found = self.cache.get(pair)
        if found is not None:
            return found
        others = own = NOBODY
        for lid, opts in self.options.items():
            key = listeners.get(lid)
            if key is not None and key_matches(key, sender, event):
                policy = opts & POLICY_MASK
                others = max(others, policy)
                if not opts & LISTEN_NO_LOCAL:
                    own = max(own, policy)
        if others == NOBODY:
            others = own = POLICY_DROP  # only plain listeners match
        elif own == NOBODY and self._plain_matches(listeners, sender, event):
            own = POLICY_DROP
        if len(self.cache) >= RULE_CACHE:
            self.cache.clear()
        found = self.cache[pair] = (others, own)
        return found

    def _plain_matches(self, listeners: dict[int, Key], sender: str, event: str) -> bool:
        """Whether a listener without options matches (O(listeners), then cached)."""
        options = self.options
        return any(
            lid not in options and key_matches(key, sender, event) for lid, key in listeners.items()
        )


class Delivery:
    """The links with a policy or no_local listener, and how an EVENT goes to each."""

    def __init__(self, table: RoutingTable[Any], counters: dict[str, int]) -> None:
        self.table = table
        self.counters = counters
        for key in ("dropped_unpausable", "sender_pauses"):
            counters.setdefault(key, 0)
        #: Session -> its rules; only sessions with a listener whose options are not 0.
        self.links: dict[Session, LinkRules] = {}
        #: The router's flow control (sig.routers.flow); None: block acts as drop.
        self.blocker: Blocker | None = None

    # --- what the registrations tell -----------------------------------------

    def listen(self, session: Session, lid: int, options: int) -> None:
        """A listener came (after it is in ``session.listeners``)."""
        rules = self.links.get(session)
        if options:
            if rules is None:
                rules = self.links[session] = LinkRules()
            rules.options[lid] = options
        if rules is not None:
            rules.cache.clear()  # even a plain listener can change the link's rule

    def unlisten(self, session: Session, lid: int) -> None:
        """A listener went (after it left ``session.listeners``)."""
        rules = self.links.get(session)
        if rules is None:
            return
        rules.options.pop(lid, None)
        if rules.options:
            rules.cache.clear()
        else:
            del self.links[session]

    def forget(self, session: Session) -> None:
        """The session ended: its listeners are gone."""
        self.links.pop(session, None)

    # --- routing ---------------------------------------------------------------

    def send(self, sub: Session, sender: str, event: str, body: bytes) -> bool | None:
        """Send one EVENT to a link with rules: True sent (or held), False dropped,
        None not for this link (no_local)."""
        others, own = self.links[sub].rule(sub.listeners, sender, event)
        origin: Session | None = None
        if others != own:
            origin = self._origin(sender)
            policy = own if origin is sub else others
        else:
            policy = others
        link = cast(PolicyLink, sub.link)
        if policy == POLICY_DROP:
            return link.send(body, droppable=True)
        if policy == POLICY_LATEST:
            return link.send_latest((sender, event), body)
        if policy == NOBODY:
            return None
        if not link.over_high_water():
            return link.send(body, droppable=True)
        return self._blocked(sub, link, origin or self._origin(sender), body)

    def _blocked(self, sub: Session, link: PolicyLink, origin: Session | None, body: bytes) -> bool:
        """A block listener's link is behind: pause the sender's TCP link, or drop."""
        if origin is None or self.blocker is None or cast(PolicyLink, origin.link).persistent:
            self.counters["dropped_unpausable"] += 1
            return link.send(body, droppable=True)  # over high water: dropped, counted
        self.blocker(origin, sub)
        return link.send_held(body)

    def _origin(self, sender: str) -> Session | None:
        """The session whose link triggered ``sender``'s events (None: in-process)."""
        info = self.table.sender(sender)
        owner = info.owner if info is not None else None
        return owner if type(owner) is Session else None
