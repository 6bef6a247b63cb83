"""Who a session acts as: the principal that authentication gives it and ACLs check.

Every session has one. Without authentication it is :data:`ANONYMOUS`; a
login (HELLO credentials), a client certificate or a serial port's
configuration gives it a named one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: How a principal was established.
PrincipalKind = Literal["anonymous", "user", "certificate", "device"]


@dataclass(frozen=True)
class Principal:
    """A named identity; ``kind`` says how it was established."""

    name: str
    kind: PrincipalKind

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    def __str__(self) -> str:
        return self.name if not self.anonymous else "anonymous"


#: The principal of every session that did not authenticate.
ANONYMOUS = Principal("", "anonymous")
