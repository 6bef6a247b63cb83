"""Test doubles for the sans-I/O core: a fake clock, an in-memory link, a scan-counting dict.

:class:`MemoryLink` is no double of a link: it is the gateway's end of a real
in-memory link pair (:func:`carriers.memory.memory_pair`), driven by a
:class:`ManualLoop` that the test turns (``take()`` does), so what the core
sends is framed, written, read and decoded as on any carrier.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from carriers.memory import memory_pair
from carriers.outbox import DEFAULT_HIGH_WATER
from carriers.stream import StreamLink
from sig.protocol import messages as w


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Handle:
    """What ``call_soon`` / ``call_later`` return: a callback that can be cancelled."""

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """The parts of an event loop a link uses (call_soon, call_later, time), turned by hand.

    :meth:`run` runs every ready callback, and those they schedule, until none
    is left; timers run only once :meth:`advance` moves the clock past them.
    """

    MAX_CALLBACKS = 1_000_000  #: per run: a link that loops forever fails the test

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._now = 0.0
        self._clock = clock
        self._ready: list[_Handle] = []
        self._timers: list[tuple[float, int, _Handle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._clock() if self._clock is not None else self._now

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> _Handle:
        handle = _Handle(self.time(), callback, args)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _Handle:
        handle = _Handle(self.time() + delay, callback, args)
        heapq.heappush(self._timers, (handle.when, next(self._seq), handle))
        return handle

    def advance(self, seconds: float) -> None:
        """Move the clock (when it is the loop's own) and run the timers now due."""
        self._now += seconds
        while self._timers and self._timers[0][0] <= self.time():
            self._ready.append(heapq.heappop(self._timers)[2])
        self.run()

    def run(self) -> None:
        for _ in range(self.MAX_CALLBACKS):
            if not self._ready:
                return
            handle = self._ready.pop(0)
            if not handle.cancelled:
                handle.callback(*handle.args)
        raise AssertionError("the loop never went idle")


class _Unattached:
    """The gateway side's handler: the test drives the core itself (``core.attach``)."""

    def link_up(self, link: StreamLink[None]) -> None:
        return None

    def frames(self, link: StreamLink[None], bodies: list[bytes]) -> None:
        raise AssertionError(f"{link.name}: the far end of a MemoryLink sends nothing")

    def link_down(self, link: StreamLink[None], exc: BaseException | None) -> None:
        return None


class _Recorder:
    """The far end's handler: keeps every message it receives, decoded."""

    def __init__(self) -> None:
        self.received: list[w.Message] = []

    def link_up(self, link: StreamLink[None]) -> None:
        return None

    def frames(self, link: StreamLink[None], bodies: list[bytes]) -> None:
        self.received.extend(w.decode(body) for body in bodies)

    def link_down(self, link: StreamLink[None], exc: BaseException | None) -> None:
        return None


class MemoryLink:
    """The gateway's end of an in-memory link; :meth:`take` says what the far end received.

    It is the :class:`sig.core.session.Link` given to ``core.attach``, and passes
    everything to the real link (:attr:`link`). ``refuse_events`` makes the link
    refuse every event (its high water below zero), as a full queue does.
    """

    def __init__(self, name: str, persistent: bool = False) -> None:
        self.loop = ManualLoop()
        self._far = _Recorder()
        self.link, self.peer = memory_pair(
            _Unattached(), self._far, name=name, loop=self.loop,
            options_a={"persistent": persistent},
        )  # fmt: skip
        self.link.name = name
        self.persistent = persistent

    @property
    def name(self) -> str:
        return self.link.name

    @property
    def dropped(self) -> int:
        return self.link.dropped

    @property
    def peer_subject(self) -> str | None:
        return self.link.peer_subject

    @peer_subject.setter
    def peer_subject(self, subject: str | None) -> None:
        self.link.peer_subject = subject  # what a TLS link sets after its handshake

    @property
    def closed(self) -> bool:
        """True once the core closed the link."""
        return self.link.closing

    @property
    def refuse_events(self) -> bool:
        return self.link.high_water < 0

    @refuse_events.setter
    def refuse_events(self, refuse: bool) -> None:
        self.link.high_water = -1 if refuse else DEFAULT_HIGH_WATER

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        return self.link.send(body, droppable=droppable, urgent=urgent)

    def send_latest(self, key: object, body: bytes) -> bool:
        return self.link.send_latest(key, body)

    def send_held(self, body: bytes) -> bool:
        return self.link.send_held(body)

    def over_high_water(self) -> bool:
        return self.link.over_high_water()

    def close(self) -> None:
        self.link.close()

    def stats(self) -> dict[str, Any]:
        return self.link.stats()

    def take(self) -> list[w.Message]:
        """Everything the far end received since the last take, in order."""
        self.loop.run()
        out, self._far.received = self._far.received, []
        return out


class CountingDict(dict[Any, Any]):
    """A dict that counts full scans (iteration, keys, items, values, clear)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.scans = 0

    def __iter__(self) -> Any:
        self.scans += 1
        return super().__iter__()

    def keys(self) -> Any:
        self.scans += 1
        return super().keys()

    def items(self) -> Any:
        self.scans += 1
        return super().items()

    def values(self) -> Any:
        self.scans += 1
        return super().values()
