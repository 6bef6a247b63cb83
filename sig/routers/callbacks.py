"""Running a client's callbacks on its event loop: bounded, errors counted and logged.

Listener callbacks may be plain functions or coroutines. A coroutine callback
runs as a task, and at most ``max_queued`` of them may be pending at once:
beyond that, new listener calls are dropped and counted (the application is
slower than its events). Hooks (``on_connected`` and friends) are never
dropped. The synchronous client replaces both with its dispatcher thread.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sig.core.client import ClientSession, RequestReceived, RetainedReceived
from sig.core.endpoints import Listener
from sig.core.retained import retained_info
from sig.core.routing import RoutingTable
from sig.errors import DecodeError, SigError
from sig.protocol.data import unpack

logger = logging.getLogger(__name__)

#: How a request handler is run: ``run(handler, params)`` -> its result or an awaitable.
Runner = Callable[[Callable[[Any], Any], Any], Any]
#: How a callback is run: ``dispatch(func, args)`` (a hook, or a listener call).
Dispatch = Callable[[Callable[..., Any], tuple[Any, ...]], None]
#: ``on_sender_refused(name, error)``: the gateway refused a sender at a replay.
SenderRefused = Callable[[str, SigError], Any]


class Callbacks:
    """The tasks a client runs for its callbacks and handlers."""

    def __init__(self, stats: dict[str, int], max_queued: int) -> None:
        self.stats = stats
        #: Coroutine listener calls that may be pending before new ones are dropped.
        self.max_queued = max_queued
        self.tasks: set[asyncio.Future[Any]] = set()
        self._listener_tasks: set[asyncio.Future[Any]] = set()
        self._slow_logged = False

    def spawn(self, coro: Any) -> asyncio.Future[Any]:
        """Run an awaitable as a task, cancelled by :meth:`cancel_all`."""
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    def call_listener(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Call a listener; a coroutine callback runs as a task, at most ``max_queued``."""
        try:
            result = func(*args)
        except Exception:
            self.stats["listener_errors"] += 1
            logger.exception("callback %r raised", func)
            return
        if result is None or not inspect.isawaitable(result):
            return
        pending = self._listener_tasks
        if len(pending) >= self.max_queued:
            if inspect.iscoroutine(result):
                result.close()  # never started: no "was never awaited" warning
            self.drop_slow_listener_call()
            return
        task = self.spawn(self._run(func, result))
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def _run(self, func: Any, pending: Awaitable[Any]) -> None:
        try:
            await pending
        except Exception:
            self.stats["listener_errors"] += 1
            logger.exception("callback %r raised", func)

    def drop_slow_listener_call(self) -> None:
        """Count one listener call dropped for a full delivery queue (logged once)."""
        self.stats["dropped_slow_listener"] += 1
        if not self._slow_logged:
            self._slow_logged = True
            logger.warning(
                "listener callbacks are slower than events arrive: %d calls are waiting,"
                " dropping new ones (counted in stats['dropped_slow_listener'])",
                self.max_queued,
            )

    def answer(self, session: ClientSession, ev: RequestReceived, run: Runner) -> None:
        """Run a request's handler with ``run`` and answer it (later, if it is async)."""
        try:
            result = run(ev.handler, ev.params)
        except Exception as exc:
            session.respond_error(ev.request_id, ev.sender, ev.method, exc)
            return
        if inspect.isawaitable(result):
            task = self.spawn(result)
            task.add_done_callback(functools.partial(_answer_with, session, ev))
        else:
            session.respond(ev.request_id, ev.sender, ev.method, result)

    def call_hook(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Call a hook (never dropped); a coroutine one runs as a task."""
        try:
            result = func(*args)
            if result is not None and inspect.isawaitable(result):
                self.spawn(result)
        except Exception:
            self.stats["listener_errors"] += 1
            logger.exception("callback %r raised", func)


def deliver_retained(
    table: RoutingTable[Listener],
    dispatch: Dispatch,
    stats: dict[str, int],
    ev: RetainedReceived,
) -> None:
    """Deliver a RETAINED to the listeners of the LISTEN it answers (``ev.key``).

    Callbacks get ``info`` with ``"retained": True`` and ``"stale"``; iterators
    a :class:`ReceivedEvent` with ``retained`` and ``stale`` set. Listeners of
    other keys got (or get) the value after their own LISTEN, so none gets it twice.
    """
    stats["retained_in"] += 1
    listeners: tuple[Listener, ...] = ()
    if ev.key is not None:
        sender, event, options = ev.key
        listeners = tuple(x for x in table.subscribers(sender, event) if x.options == options)
    if ev.only is not None:  # the answer to a second LISTEN, for one new listener
        listeners = (ev.only,) if ev.only in listeners else ()
    if not listeners:
        return
    try:
        value = unpack(ev.data)
    except DecodeError as exc:
        stats["bad_data"] += 1
        logger.warning("dropping retained %s:%s: %s", ev.sender, ev.event, exc)
        return
    for listener in listeners:
        if type(listener) is Listener:
            dispatch(listener.callback, (retained_info(ev.sender, ev.event, ev.stale), value))
        else:  # an events() iterator
            listener.put(ev.sender, ev.event, value, ev.stale)  # type: ignore[attr-defined]


def _answer_with(session: ClientSession, ev: RequestReceived, outcome: asyncio.Future[Any]) -> None:
    """Send the RESPONSE for a handler that finished (a value or an exception)."""
    if outcome.cancelled():
        return  # the client is closing
    exc = outcome.exception()
    if exc is None:
        session.respond(ev.request_id, ev.sender, ev.method, outcome.result())
    else:
        session.respond_error(ev.request_id, ev.sender, ev.method, exc)


def run_inline(handler: Callable[[Any], Any], params: Any) -> Any:
    """Run a request handler on the loop: its result, or an awaitable of it."""
    return handler(params)
