"""Access control lists: what a principal may own, listen to, request, inspect (sans-I/O).

Rules (README, "Access control"):

1. No ACL configured (no ``[acl]`` table): everything is allowed, as before
   ACLs existed. :data:`OPEN` is that policy.
2. Once any ACL is configured, a principal without an entry gets nothing
   (deny by default). Users (password or certificate subject) are looked up
   in ``[acl.users.NAME]``, serial devices in ``[acl.devices.NAME]``,
   sessions that did not log in in ``[acl.anonymous]``. A device on a port
   without ``principal = "..."`` is ``device:<port>``; without an entry of its
   own it gets the anonymous ACL (it is as unknown as an anonymous client).
3. Patterns are shell-style, case-sensitive (:func:`fnmatch.fnmatchcase`):
   ``*`` any run of characters, ``?`` one, ``[abc]`` one of a set.
4. ``own``: sender names the principal may register. ``listen``: (sender,
   event) pairs it may receive, ``request``: (sender, method) pairs it may
   call; an item is ``"SENDER"`` (every event or method of the senders it
   matches) or ``["SENDER", "EVENT"]``.
5. A LISTEN with a wildcard part ((None, None), (S, None), (None, "#ch")) is
   allowed when some rule can match what it covers; the delivery then gives
   only the events the ACL allows (:meth:`Acl.may_see`). ``#connect`` and
   ``#disconnect`` of a sender are seen by those who may listen to any event
   of that sender.
6. ``admin = true`` opens ``$gateway`` (senders, links, release). Without
   it a principal with an entry may call ``$gateway stats`` only (counters,
   no peer's name or address).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sig.core.principals import Principal
from sig.core.routing import BUILTIN_EVENTS

#: Pairs of (sender, event) or (sender, method) patterns.
Rule = tuple[str, str]
#: Keys an ACL entry takes.
ENTRY_KEYS = frozenset({"own", "listen", "request", "admin"})
#: ``$gateway`` methods a principal with an entry may call without ``admin``.
PUBLIC_GATEWAY_METHODS = frozenset({"stats"})
#: Claims (owned sender names) one principal may hold, unless ``[acl] max_claims`` says.
DEFAULT_MAX_CLAIMS = 256


class AclConfigError(ValueError):
    """An ``[acl]`` table or one of its entries is not what this module takes."""


def _matcher(pattern: str) -> Callable[[str], Any]:
    """The compiled ``fnmatchcase`` of one pattern (a regex match, cached by ``re``)."""
    return re.compile(fnmatch.translate(pattern)).match


@dataclass(frozen=True)
class Acl:
    """One principal's rights; every method answers from its compiled patterns."""

    own: tuple[str, ...] = ()
    listen: tuple[Rule, ...] = ()
    request: tuple[Rule, ...] = ()
    admin: bool = False
    _own: tuple[Callable[[str], Any], ...] = field(init=False, repr=False, compare=False)
    _listen: tuple[tuple[Callable[[str], Any], Callable[[str], Any]], ...] = field(
        init=False, repr=False, compare=False
    )
    _request: tuple[tuple[Callable[[str], Any], Callable[[str], Any]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_own", tuple(_matcher(p) for p in self.own))
        for name in ("listen", "request"):
            rules = getattr(self, name)
            compiled = tuple((_matcher(s), _matcher(e)) for s, e in rules)
            object.__setattr__(self, f"_{name}", compiled)

    def may_own(self, name: str) -> bool:
        """Whether the principal may register a sender named ``name``."""
        return any(m(name) for m in self._own)

    def may_see(self, sender: str, event: str) -> bool:
        """Whether an event ``event`` of ``sender`` may be delivered to the principal."""
        if event in BUILTIN_EVENTS:  # rule 5: who may hear any of S hears S come and go
            return any(s(sender) for s, _ in self._listen)
        return any(s(sender) and e(event) for s, e in self._listen)

    def may_listen(self, sender: str | None, event: str | None) -> bool:
        """Whether a LISTEN under (sender, event) is allowed (rule 5)."""
        if sender is not None and event is not None:
            return self.may_see(sender, event)
        if sender is not None:
            return any(s(sender) for s, _ in self._listen)
        if event is not None:
            return any(e(event) for _, e in self._listen)
        return bool(self._listen)

    def may_request(self, sender: str, method: str) -> bool:
        """Whether the principal may call ``method`` of ``sender``."""
        return any(s(sender) and m(method) for s, m in self._request)


#: Everything allowed: every principal's ACL when none is configured.
ALLOW_ALL = Acl(own=("*",), listen=(("*", "*"),), request=(("*", "*"),), admin=True)
#: Nothing allowed: a principal without an entry once ACLs are configured.
NOTHING = Acl()


@dataclass(frozen=True)
class Policy:
    """The ACL table of a gateway: one entry per user, per device, and for anonymous."""

    configured: bool = False
    users: Mapping[str, Acl] = field(default_factory=dict)
    devices: Mapping[str, Acl] = field(default_factory=dict)
    anonymous: Acl | None = None
    max_claims: int = DEFAULT_MAX_CLAIMS

    def acl_for(self, principal: Principal) -> Acl:
        """The ACL that applies to ``principal`` (rules 1 and 2)."""
        if not self.configured:
            return ALLOW_ALL
        if principal.kind == "anonymous":
            return self.anonymous or NOTHING
        if principal.kind == "device":
            acl = self.devices.get(principal.name)
            if acl is None and is_default_device(principal):
                return self.anonymous or NOTHING
            return acl or NOTHING
        return self.users.get(principal.name) or NOTHING

    def has_entry(self, principal: Principal) -> bool:
        """Whether ``principal`` gets an ACL of its own or the anonymous one (not NOTHING)."""
        return not self.configured or self.acl_for(principal) is not NOTHING

    @classmethod
    def from_table(cls, table: Any) -> Policy:
        """A policy from the config's ``[acl]`` table; AclConfigError names what is wrong."""
        if not isinstance(table, Mapping):
            raise AclConfigError("[acl] must be a table")
        unknown = set(table) - {"users", "devices", "anonymous", "max_claims"}
        if unknown:
            raise AclConfigError(
                f"[acl]: unknown key(s) {', '.join(sorted(unknown))}"
                " (known: anonymous, devices, max_claims, users)"
            )
        max_claims = table.get("max_claims", DEFAULT_MAX_CLAIMS)
        if type(max_claims) is not int or max_claims < 0:
            raise AclConfigError("[acl] max_claims must be an integer >= 0")
        anonymous = table.get("anonymous")
        return cls(
            configured=True,
            users=_entries("users", table.get("users", {})),
            devices=_entries("devices", table.get("devices", {})),
            anonymous=None if anonymous is None else parse_entry("acl.anonymous", anonymous),
            max_claims=max_claims,
        )


#: The policy of a gateway without ``[acl]``: everything allowed.
OPEN = Policy()


def is_default_device(principal: Principal) -> bool:
    """A device on a port that names no principal (``device:<port>``)."""
    return principal.kind == "device" and principal.name.startswith(DEFAULT_DEVICE_PREFIX)


#: The principal name of a device on a port without ``principal = "..."``.
DEFAULT_DEVICE_PREFIX = "device:"


def _entries(kind: str, table: Any) -> dict[str, Acl]:
    if not isinstance(table, Mapping):
        raise AclConfigError(f"[acl.{kind}] must be a table of [acl.{kind}.NAME] tables")
    return {str(name): parse_entry(f"acl.{kind}.{name}", entry) for name, entry in table.items()}


def parse_entry(where: str, entry: Any) -> Acl:
    """One ``[acl.users.NAME]`` (or devices, anonymous) table as an Acl."""
    if not isinstance(entry, Mapping):
        raise AclConfigError(f"[{where}] must be a table")
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        raise AclConfigError(
            f"[{where}]: unknown key(s) {', '.join(sorted(unknown))}"
            f" (known: {', '.join(sorted(ENTRY_KEYS))})"
        )
    admin = entry.get("admin", False)
    if not isinstance(admin, bool):
        raise AclConfigError(f"[{where}] admin must be true or false")
    own = entry.get("own", [])
    if not isinstance(own, list) or not all(isinstance(p, str) and p for p in own):
        raise AclConfigError(f'[{where}] own must be a list of name patterns, e.g. ["sensor-*"]')
    return Acl(
        own=tuple(own),
        listen=_rules(where, "listen", entry.get("listen", [])),
        request=_rules(where, "request", entry.get("request", [])),
        admin=admin,
    )


def _rules(where: str, key: str, items: Any) -> tuple[Rule, ...]:
    """``["pump", ["sensor-*", "temp"]]``: a sender pattern alone means every event/method."""
    what = "event" if key == "listen" else "method"
    hint = f'[{where}] {key} must be a list of "SENDER" or ["SENDER", "{what.upper()}"] patterns'
    if not isinstance(items, list):
        raise AclConfigError(hint)
    rules: list[Rule] = []
    for item in items:
        if isinstance(item, str) and item:
            rules.append((item, "*"))
        elif (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(p, str) and p for p in item)
        ):
            rules.append((item[0], item[1]))
        else:
            raise AclConfigError(f"{hint}, not {item!r}")
    return tuple(rules)


def patterns(items: Any, where: str) -> tuple[str, ...]:
    """A list of name patterns (a serial port's ``names``), checked."""
    if not isinstance(items, list) or not all(isinstance(p, str) and p for p in items):
        raise AclConfigError(f'{where} must be a list of name patterns, e.g. ["pump", "sensor-*"]')
    return tuple(items)
