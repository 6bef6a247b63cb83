"""Owned sender names: which principal a name belongs to, for good (sans-I/O).

The first authenticated principal (a user, a certificate subject, a serial
port's configured principal) to register a sender name claims it. From then
on only that principal may register it, whether its session is live, killed
or the gateway restarted: the claims survive restarts through ``save``, a
callback the asyncio layer gives (sig.routers.claims_file writes a JSON file
atomically). A claim is released only by its owner's UNREGISTER_SENDER or
by an admin (``$gateway release``). Anonymous sessions and devices on ports
without a principal claim nothing (their names are the serial reservations'
business, sig.core.reservations). One principal holds ``max_per_principal``
claims at most: the state file stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sig.core.principals import Principal

logger = logging.getLogger(__name__)

#: Persists the claims (name -> owner key) after each change; None: memory only.
Save = Callable[[Mapping[str, str]], None]


def owner_key(principal: Principal) -> str:
    """How a principal is written in the claims: ``user:NAME`` or ``device:NAME``.

    A certificate's subject stands for the user of that name (same rights).
    """
    kind = "device" if principal.kind == "device" else "user"
    return f"{kind}:{principal.name}"


class Claims:
    """Sender name -> owner key; counted per owner; bounded per owner."""

    def __init__(
        self,
        held: Mapping[str, str] | None = None,
        *,
        save: Save | None = None,
        max_per_principal: int = 256,
    ) -> None:
        self.held: dict[str, str] = dict(held or {})
        self.save = save
        self.max_per_principal = max_per_principal
        self._count: dict[str, int] = {}
        for owner in self.held.values():
            self._count[owner] = self._count.get(owner, 0) + 1

    def __len__(self) -> int:
        return len(self.held)

    def owner(self, name: str) -> str | None:
        """The owner key of ``name``, or None if nobody claimed it."""
        return self.held.get(name)

    def count(self, owner: str) -> int:
        """Claims ``owner`` holds."""
        return self._count.get(owner, 0)

    def refusal(self, name: str, principal: Principal, claimable: bool) -> str | None:
        """Why ``principal`` may not register ``name`` (claimed by another, or its
        claims are full), or None. ``claimable``: a registration would claim it."""
        held = self.held.get(name)
        if held is not None:
            if claimable and held == owner_key(principal):
                return None
            return f"sender name {name!r} is owned by another principal"
        if claimable and self.count(owner_key(principal)) >= self.max_per_principal:
            return (
                f"{principal} already owns {self.max_per_principal} sender names"
                " (the most one principal may claim; unregister one first)"
            )
        return None

    def claim(self, name: str, principal: Principal) -> bool:
        """Record ``name`` as owned by ``principal`` (no-op if it already is); True if new."""
        if name in self.held:
            return False
        key = owner_key(principal)
        self.held[name] = key
        self._count[key] = self._count.get(key, 0) + 1
        self._save()
        return True

    def release(self, name: str, principal: Principal | None = None) -> bool:
        """Forget the claim of ``name``: by its owner (``principal``) or, with None, an admin."""
        held = self.held.get(name)
        if held is None or (principal is not None and held != owner_key(principal)):
            return False
        del self.held[name]
        left = self._count[held] - 1
        if left:
            self._count[held] = left
        else:
            del self._count[held]
        self._save()
        return True

    def _save(self) -> None:
        if self.save is None:
            return
        try:
            self.save(self.held)
        except OSError as exc:  # a full disk must not break a registration
            logger.warning("cannot save the sender name claims (%s); kept in memory", exc)
