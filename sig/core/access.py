"""Where the gateway core asks the ACLs and the claims (sans-I/O).

:class:`Access` is the one part of the core that knows the policy
(sig.core.acl), the owned names (sig.core.claims) and the serial ports'
principals and bound names. The other parts call it at one point each:
registering a sender (:meth:`Access.own_refusal`), listening
(:meth:`listen_refusal`), requesting (:meth:`request_refusal`), ``$gateway``
(:meth:`gateway_refusal`), and the event fan-out (:attr:`match`).

In-process code (``ServerRouter.add_sender``, ``ServerRouter.request``,
in-process listeners) is trusted: it is the gateway's own code and
configuration, so none of these checks applies to it.

The fan-out costs nothing extra without ACLs: :attr:`match` is then the
routing table's own ``match``. With ACLs it filters the table's cached
answer once per (sender, event) and keeps the filtered tuple, valid as long
as the table hands out the same tuple (any subscription change makes a new
one); the decision per (principal, sender, event) is cached too. Both caches
are bounded and dropped when the policy is reloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sig.core.acl import (
    DEFAULT_DEVICE_PREFIX,
    OPEN,
    PUBLIC_GATEWAY_METHODS,
    Acl,
    Policy,
    is_default_device,
)
from sig.core.claims import Claims
from sig.core.principals import Principal
from sig.core.routing import RoutingTable
from sig.core.session import Link, Session
from sig.errors import ErrorCode

logger = logging.getLogger(__name__)

#: Filtered fan-out answers kept (per (sender, event)); cleared when full.
FILTER_CACHE = 4096
#: ACL decisions kept (per (principal, sender, event)); cleared when full.
DECISION_CACHE = 65536
#: Counters in ``$gateway stats``: every refusal, and per kind.
COUNTERS = (
    "acl_refusals",
    "acl_refusals_own",
    "acl_refusals_listen",
    "acl_refusals_request",
    "acl_refusals_admin",
    "claimed_names",
)
Refusal = tuple[ErrorCode, str]


@dataclass(frozen=True)
class PortBinding:
    """A serial port's configuration: the principal its device acts as, its names."""

    principal: Principal
    #: Sender name patterns the device on this port may register (None: any).
    names: tuple[str, ...] | None = None

    def allows(self, name: str) -> bool:
        return self.names is None or Acl(own=self.names).may_own(name)


class Access:
    """The ACL checks of the gateway core, the owned names and the ports' principals."""

    def __init__(self, table: RoutingTable[Any], counters: dict[str, int]) -> None:
        self.table = table
        self.counters = counters
        counters.update(dict.fromkeys(COUNTERS, 0))
        self.policy: Policy = OPEN
        self.claims = Claims()
        #: link name (``serial:<port>``) -> what its configuration says.
        self.ports: dict[str, PortBinding] = {}
        #: What the fan-out calls: the table's match, or the filtered one.
        self.match: Callable[[str, str], Collection[Any]] = table.match
        self._acls: dict[Principal, Acl] = {}
        self._seen: dict[tuple[Principal, str, str], bool] = {}
        self._filtered: dict[tuple[str, str], tuple[Collection[Any], tuple[Any, ...]]] = {}

    # --- configuration ----------------------------------------------------

    def install(self, policy: Policy) -> None:
        """Apply ``policy`` from now on (start-up, SIGHUP): the caches start again.

        Registrations already made stay; deliveries, listens and requests
        are checked against the new policy from the next one on.
        """
        self.policy = policy
        self.claims.max_per_principal = policy.max_claims
        self._acls.clear()
        self._seen.clear()
        self._filtered.clear()
        self.match = self._match if policy.configured else self.table.match

    def use_claims(self, claims: Claims) -> None:
        """Keep owned names in ``claims`` (loaded from the state file, saved to it)."""
        claims.max_per_principal = self.policy.max_claims
        self.claims = claims
        self.counters["claimed_names"] = len(claims)

    def bind_port(self, link: str, principal: str | None, names: Iterable[str] | None) -> None:
        """The device on the link named ``link`` acts as ``principal``, owns only ``names``."""
        port = link.removeprefix("serial:")
        who = Principal(principal or f"{DEFAULT_DEVICE_PREFIX}{port}", "device")
        self.ports[link] = PortBinding(who, None if names is None else tuple(names))

    def link_principal(self, link: Link) -> Principal | None:
        """The principal of a serial link's device (None for a TCP link)."""
        if not link.persistent:
            return None
        binding = self.ports.get(link.name)
        if binding is not None:
            return binding.principal
        return Principal(f"{DEFAULT_DEVICE_PREFIX}{link.name.removeprefix('serial:')}", "device")

    def acl(self, principal: Principal) -> Acl:
        """The ACL of ``principal`` under the current policy (cached)."""
        acl = self._acls.get(principal)
        if acl is None:
            acl = self._acls[principal] = self.policy.acl_for(principal)
        return acl

    # --- the checks -------------------------------------------------------

    def own_refusal(self, name: str, session: Session | None) -> Refusal | None:
        """Why ``session`` may not register sender ``name``: port, ACL, claim; or None."""
        if session is None:
            return None  # in-process: trusted
        who = session.principal
        binding = self.ports.get(session.link.name) if session.link.persistent else None
        if binding is not None and not binding.allows(name):
            allowed = ", ".join(binding.names or ())
            return self._refused(
                "own",
                f"sender name {name!r} is not one {session.link.name} may carry ({allowed})",
            )
        if not self.acl(who).may_own(name):
            return self._refused(
                "own", f"{_who(who)} may not own sender name {name!r} (no 'own' pattern matches)"
            )
        text = self.claims.refusal(name, who, claimable(who))
        if text is None:
            return None
        if name in self.claims.held:
            return self._refused("own", text)
        return ErrorCode.LIMIT_REACHED, text

    def registered(self, name: str, session: Session) -> None:
        """``session`` registered ``name``: its principal claims it if it may claim."""
        if claimable(session.principal) and self.claims.claim(name, session.principal):
            self.counters["claimed_names"] = len(self.claims)
            logger.info(
                "%s: sender name %r now owned by %s",
                session.link.name,
                name,
                _who(session.principal),
            )

    def unregistered(self, name: str, session: Session) -> None:
        """Its owner unregistered ``name``: the claim goes."""
        if self.claims.release(name, session.principal):
            self.counters["claimed_names"] = len(self.claims)
            logger.info("%s: sender name %r released by its owner", session.link.name, name)

    def release(self, name: str) -> bool:
        """An admin releases the claim of ``name`` (``$gateway release``)."""
        released = self.claims.release(name)
        self.counters["claimed_names"] = len(self.claims)
        return released

    def listen_refusal(self, session: Session, sender: str | None, event: str | None) -> str | None:
        """Why ``session`` may not LISTEN under (sender, event), or None."""
        if not self.policy.configured or self.acl(session.principal).may_listen(sender, event):
            return None
        return self._refused(
            "listen",
            f"{_who(session.principal)} may not listen to"
            f" ({_name(sender)}, {_name(event)}) (no 'listen' rule matches)",
        )[1]

    def request_refusal(self, requester: Session | None, sender: str, method: str) -> str | None:
        """Why ``requester`` (None: in-process, trusted) may not call ``sender.method``."""
        if requester is None or not self.policy.configured:
            return None  # in-process, or no [acl]: one attribute test per request
        if self.acl(requester.principal).may_request(sender, method):
            return None
        return self._refused(
            "request",
            f"{_who(requester.principal)} may not request {sender!r} {method!r}"
            " (no 'request' rule matches)",
        )[1]

    def gateway_refusal(self, requester: Session | None, method: str) -> str | None:
        """Why ``requester`` may not call ``$gateway method`` (rule 6 of sig.core.acl)."""
        if requester is None or (not self.policy.configured and method != "release"):
            return None
        who = requester.principal
        acl = self.acl(who)
        if method == "release" and not (self.policy.configured and acl.admin):
            text = "$gateway release needs an ACL with admin = true"
        elif acl.admin or (method in PUBLIC_GATEWAY_METHODS and self.policy.has_entry(who)):
            return None
        else:
            text = f"{_who(who)} may not call $gateway {method} (needs admin = true)"
        return self._refused("admin", text)[1]

    def _refused(self, kind: str, text: str) -> Refusal:
        self.counters["acl_refusals"] += 1
        self.counters[f"acl_refusals_{kind}"] += 1
        return ErrorCode.NOT_AUTHORISED, text

    # --- the fan-out --------------------------------------------------------

    def _match(self, sender: str, event: str) -> Collection[Any]:
        """The table's subscribers of (sender, event) that may see it (in-process: all)."""
        subs = self.table.match(sender, event)
        key = (sender, event)
        hit = self._filtered.get(key)
        if hit is not None and hit[0] is subs:
            return hit[1]
        kept = tuple(
            s for s in subs if type(s) is not Session or self._sees(s.principal, sender, event)
        )
        if len(self._filtered) >= FILTER_CACHE:
            self._filtered.clear()
        self._filtered[key] = (subs, kept)
        return kept

    def _sees(self, principal: Principal, sender: str, event: str) -> bool:
        key = (principal, sender, event)
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= DECISION_CACHE:
                self._seen.clear()
            seen = self._seen[key] = self.acl(principal).may_see(sender, event)
        return seen


def claimable(principal: Principal) -> bool:
    """Whether the names ``principal`` registers become its own (authenticated ones)."""
    return not principal.anonymous and not is_default_device(principal)


def _who(principal: Principal) -> str:
    return "anonymous" if principal.anonymous else f"{principal.kind} {principal.name!r}"


def _name(part: str | None) -> str:
    return "*" if part is None else repr(part)
