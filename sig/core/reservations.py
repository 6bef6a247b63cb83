"""Sender names kept for a serial link while its device is quiet (sans-I/O).

A device that is unplugged, resets or times out comes back on the same port
(link name) and must find its names free; nobody else, TCP client or
in-process sender, may take them meanwhile and answer its requests. The
gateway core reserves the names when such a session ends and asks
:meth:`Reservations.check` before any registration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sig.errors import DuplicateSenderError

logger = logging.getLogger(__name__)


@dataclass
class Reservation:
    """A sender name kept for the serial link that held it, until ``until``."""

    link: str  #: the link's name (``serial:<port>``): the same port after a reopen
    until: float


class Reservations:
    """Reserved sender names, indexed by name and by link; expiry on the injected clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        #: sender name -> the serial link it is kept for.
        self.held: dict[str, Reservation] = {}
        #: link name -> its reserved names (a links row costs what that link has).
        self._by_link: dict[str, set[str]] = {}
        self._next_expiry = float("inf")

    def __bool__(self) -> bool:
        return bool(self.held)

    def __iter__(self) -> Iterator[str]:
        return iter(self.held)

    def reserve(self, link: str, names: Iterable[str], grace: float) -> None:
        """Keep ``names`` for the link named ``link`` for ``grace`` seconds."""
        until = self.clock() + grace
        names = list(names)
        for name in names:
            self.release(name)
            self.held[name] = Reservation(link, until)
        self._by_link.setdefault(link, set()).update(names)
        self._next_expiry = min(self._next_expiry, until)

    def release(self, name: str) -> None:
        """Forget the reservation of ``name`` (it expired, or its own link took it back)."""
        held = self.held.pop(name, None)
        if held is None:
            return
        names = self._by_link.get(held.link)
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_link[held.link]

    def check(self, name: str, link: str | None) -> None:
        """Raise DuplicateSenderError if ``name`` is kept for a link other than ``link``.

        ``link`` is the registering link's name (None: an in-process sender).
        """
        held = self.held.get(name)
        if held is None:
            return
        left = held.until - self.clock()
        if left <= 0:
            self.release(name)  # expired; expire() would have cleaned it soon
        elif link != held.link:
            raise DuplicateSenderError(
                f"sender name {name!r} is reserved for {held.link} for {left:.1f} s more"
                " (its device went quiet; the same link gets it back at once)"
            )

    def expire(self, now: float) -> None:
        """Drop the reservations that ran out by ``now`` (cheap when none is due)."""
        if now < self._next_expiry:
            return
        for name, held in [(n, h) for n, h in self.held.items() if h.until <= now]:
            self.release(name)
            logger.info("%s: reservation of sender name %r expired", held.link, name)
        self._next_expiry = min((h.until for h in self.held.values()), default=float("inf"))

    def for_link(self, link: str) -> dict[str, float]:
        """Sender names reserved for the link named ``link``: seconds left for each."""
        names = self._by_link.get(link)
        if not names:
            return {}
        now = self.clock()
        return {n: round(max(0.0, self.held[n].until - now), 1) for n in sorted(names)}
