"""What one link may make the gateway hold, and the largest body its peer takes (sans-I/O).

:class:`Limits` lives here, below the gateway core and its parts, so that
:mod:`sig.core.registrations` and :mod:`sig.core.requests` can name the type of
the limits they check without importing :mod:`sig.core.gateway` (which
re-exports it as ``sig.core.gateway.Limits``, and ``sig.Limits``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sig.core.session import Session
from sig.protocol.frame import MAX_BODY_LIMIT

#: Requests pending on one handler link at most (then BUSY). One requester may
#: hold a fair share of them: max_pending / (requesters with pending ones + 1).
MAX_PENDING_PER_LINK = 64
#: Registrations one link may hold (then ERROR(LIMIT_REACHED)).
MAX_SENDERS_PER_LINK = 256
MAX_LISTENERS_PER_LINK = 4096
MAX_EVENTS_PER_SENDER = 256


@dataclass(frozen=True)
class Limits:
    """What one link may make the gateway hold; a refusal is ERROR(LIMIT_REACHED)."""

    senders_per_link: int = MAX_SENDERS_PER_LINK
    listeners_per_link: int = MAX_LISTENERS_PER_LINK
    events_per_sender: int = MAX_EVENTS_PER_SENDER
    #: Requests pending on one handler link (BUSY above; a requester gets a fair share).
    pending_per_link: int = MAX_PENDING_PER_LINK
    #: Retained last values the gateway keeps at most, and their bytes (sig.core.retained).
    retained_values: int = 10_000
    retained_bytes: int = 4 * 1024 * 1024


def peer_limit(session: Session) -> int:
    """The largest body ``session``'s peer accepts (its max_body, at most 65535)."""
    return min(session.peer_max_body, MAX_BODY_LIMIT)


def link_limits(default: Limits, session: Session) -> Limits:
    """The limits of ``session``'s link: its own if it has some, else the core's ``default``.

    One link with many senders (the MQTT bridge: every sender of the other
    gateways) sets its own ``limits`` attribute; every other link has none.
    """
    own = getattr(session.link, "limits", None)
    return own if isinstance(own, Limits) else default
