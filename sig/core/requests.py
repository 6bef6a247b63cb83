"""Requests through the gateway: routing, correlation, deadlines, fair shares (sans-I/O).

:meth:`Requests.start` routes a request: to the ``$gateway`` service, to an
in-process sender's handler (answered at once), or to the link of a remote
sender. A REQUEST for a sender on another link is forwarded under a gateway id of its
own (requesters' ids may collide); the RESPONSE is matched back by that id,
and ``done(status, message, data)`` is called exactly once: with the
response, a timeout (:meth:`Requests.expire`), or SENDER_GONE when the
handler goes away. One handler link holds ``pending_per_link`` requests at
most, and each requester a fair share of them (:meth:`Requests.admit`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sig.core.endpoints import Sender, call_handler, handler_error
from sig.core.limits import link_limits, peer_limit
from sig.core.session import Session, State
from sig.errors import DecodeError, ErrorCode
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack
from sig.protocol.frame import MAX_BODY_LIMIT

if TYPE_CHECKING:
    from sig.core.access import Access
    from sig.core.endpoints import Listener
    from sig.core.limits import Limits
    from sig.core.routing import RoutingTable
    from sig.core.service import GatewayService

logger = logging.getLogger(__name__)

Done = Callable[[int, str, bytes], None]  # (status, message, data)
#: Told of every finished request: ``observer(status, seconds)`` (the HTTP side's metrics).
RequestObserver = Callable[[int, float], None]
#: RESPONSE bytes before its data at most: type, request_id (5), status, empty message.
RESPONSE_OVERHEAD = 8


@dataclass(eq=False)
class Pending:
    """A request on its way to a handler."""

    id: int
    deadline: float
    target: Session | None  # None: an in-process handler (answered inline)
    done: Done
    requester: Session | None = None
    sender: str = ""
    method: str = ""
    finished: bool = False


class RequestsCore(Protocol):
    """What :class:`Requests` uses of its gateway core (:class:`~sig.core.gateway.GatewayCore`).

    A type only: the core hands itself over, and this module never imports it.
    """

    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def request_timeout(self) -> float: ...
    @property
    def request_observer(self) -> RequestObserver | None: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def table(self) -> RoutingTable[Session | Listener]: ...
    @property
    def service(self) -> GatewayService: ...
    @property
    def access(self) -> Access: ...
    def _send_body(self, session: Session, body: bytes, *, urgent: bool = ...) -> None: ...


class Requests:
    """Requests pending on handler links, with their deadlines and per-requester load."""

    def __init__(self, core: RequestsCore) -> None:
        self.core = core
        self.pending: dict[int, Pending] = {}
        self.deadlines: list[tuple[float, int]] = []
        #: handler session -> requester -> its requests pending there (fair shares).
        self.load: dict[Session, dict[Session | None, int]] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self.pending)

    # --- routing a request ------------------------------------------------

    def on_request(self, session: Session, msg: w.Request) -> None:
        """A REQUEST from ``session``: start it, and answer under the requester's id."""
        rid = msg.request_id

        def done(status: int, message: str, data: bytes) -> None:
            if session.state is State.OPEN:
                self.respond(session, rid, status, message, data)

        self.start(msg.sender, msg.method, msg.data, done, requester=session)

    def respond(self, session: Session, rid: int, status: int, message: str, data: bytes) -> None:
        """Send a RESPONSE, or TOO_LARGE in its place when it exceeds what the peer takes.

        The body is re-encoded here (the requester's request_id replaces the
        gateway's, up to 4 bytes more), so this is the point that must check.
        """
        core = self.core
        body = w.encode(w.Response(rid, status, message, data if not status else b""))
        limit = peer_limit(session)
        if len(body) > limit:
            core.counters["responses_too_large"] += 1
            text = (
                f"response of {len(body)} bytes exceeds the {limit} that {session.peer!r} accepts"
            )
            logger.debug("%s: %s", session.link.name, text)
            short = fit_text(text, limit - RESPONSE_OVERHEAD - 2)
            body = w.encode(w.Response(rid, ErrorCode.TOO_LARGE, short))
        core._send_body(session, body, urgent=True)

    def start(
        self,
        sender: str,
        method: str,
        params: bytes,
        done: Done,
        *,
        requester: Session | None = None,
        timeout: float | None = None,
    ) -> None:
        """Route a request; ``done(status, message, result)`` is called exactly once."""
        core = self.core
        core.counters["requests"] += 1
        if core.request_observer is not None:
            done = observed(done, core.request_observer, core.clock)
        if sender == core.service.name:
            refusal = core.access.gateway_refusal(requester, method)
            if refusal is not None:
                done(ErrorCode.NOT_AUTHORISED, refusal, b"")
                return
            limit = peer_limit(requester) if requester is not None else MAX_BODY_LIMIT
            core.service.answer(method, params, limit - RESPONSE_OVERHEAD, done)
            return
        refusal = core.access.request_refusal(requester, sender, method)  # before any lookup
        if refusal is not None:
            done(ErrorCode.NOT_AUTHORISED, refusal, b"")
            return
        info = core.table.sender(sender)
        if info is None:
            done(ErrorCode.NO_SUCH_SENDER, f"no sender named {sender!r} is connected", b"")
        elif not info.handles(method):
            done(ErrorCode.NO_SUCH_METHOD, f"sender {sender!r} has no method {method!r}", b"")
        elif isinstance(info.owner, Session):
            wait = core.request_timeout if timeout is None else timeout
            self._forward(info.owner, sender, method, params, done, requester, wait)
        else:
            answer_inline(info.owner, sender, method, params, done)

    # --- requests pending on handler links ----------------------------------

    def admit(self, owner: Session, requester: Session | None) -> str | None:
        """Why ``requester`` may not start one more request on ``owner`` now, or None.

        The handler link holds ``pending_per_link`` requests at most; each
        requester a fair share of them: ``pending_per_link // (n + 1)``, with n
        the requesters that have requests pending there. A flooder so always
        leaves room for a newcomer, which is then admitted (and shrinks the
        flooder's share as the flooder's requests complete). Shares shrink only
        as requests finish, so several flooders that came one after the other
        can still fill the link for a while: a newcomer with nothing pending
        there is then admitted beyond the cap (up to twice it) as long as some
        requester holds more than its share now.
        """
        cap = link_limits(self.core.limits, owner).pending_per_link
        load = self.load.get(owner)
        mine = load.get(requester, 0) if load else 0
        if not mine:
            return self._admit_newcomer(owner, load, cap)
        assert load is not None
        if len(owner.handling) >= cap:
            return f"{cap} requests already pending on {owner.link.name}"
        share = max(1, cap // (len(load) + 1))
        if mine >= share:
            return (
                f"{mine} of this requester's requests already pending on"
                f" {owner.link.name} (its fair share of {cap} is {share})"
            )
        return None

    @staticmethod
    def _admit_newcomer(
        owner: Session, load: dict[Session | None, int] | None, cap: int
    ) -> str | None:
        """:meth:`admit` for a requester with nothing pending on ``owner``."""
        total = len(owner.handling)
        if total < cap:
            return None
        share = max(1, cap // (len(load) + 1)) if load else cap
        if total < 2 * cap and load and any(n > share for n in load.values()):
            return None
        return f"{cap} requests already pending on {owner.link.name}"

    def _forward(
        self,
        owner: Session,
        sender: str,
        method: str,
        params: bytes,
        done: Done,
        requester: Session | None,
        timeout: float,
    ) -> None:
        """Send the request to ``owner`` under a fresh gateway id, unless BUSY or TOO_LARGE."""
        busy = self.admit(owner, requester)
        if busy is not None:
            self.core.counters["busy"] += 1
            done(ErrorCode.BUSY, busy, b"")
            return
        gid = next(self._ids) & 0xFFFFFFFF or next(self._ids)
        body = w.encode(w.Request(gid, sender, method, params))
        limit = peer_limit(owner)
        if len(body) > limit:
            done(
                ErrorCode.TOO_LARGE,
                f"request of {len(body)} bytes exceeds the {limit} that {owner.peer!r} accepts",
                b"",
            )
            return
        deadline = self.core.clock() + timeout
        pending = Pending(gid, deadline, owner, done, requester, sender, method)
        self.pending[gid] = pending
        owner.handling[gid] = pending
        load = self.load.setdefault(owner, {})
        load[requester] = load.get(requester, 0) + 1
        self._push_deadline(deadline, gid)
        self.core._send_body(owner, body, urgent=True)

    def _push_deadline(self, deadline: float, gid: int) -> None:
        """Queue a request timeout; drop the entries of finished requests when they pile up."""
        deadlines = self.deadlines
        heapq.heappush(deadlines, (deadline, gid))
        if len(deadlines) > 2 * len(self.pending) + 1024:  # amortised O(1) per request
            pending = self.pending
            deadlines[:] = [entry for entry in deadlines if entry[1] in pending]
            heapq.heapify(deadlines)

    def response(self, session: Session, msg: w.Response) -> None:
        """A RESPONSE from ``session``: finish the request it answers (late ones are dropped)."""
        pending = session.handling.pop(msg.request_id, None)
        if pending is None:
            self.core.counters["unsolicited_responses"] += 1
            logger.debug("%s: late or unknown response %s", session.link.name, msg.request_id)
            return
        self.finish(pending, msg.status, msg.message, msg.data)

    def undecodable(self, session: Session, answer: w.Error | w.Response | None) -> bool:
        """A REQUEST or RESPONSE the codec refused whose request_id parsed; True if answered.

        A REQUEST of an open session is answered RESPONSE(request_id, code),
        so that its requester matches the answer at once instead of waiting
        out its timeout (before HELLO the caller sends an ERROR). A RESPONSE
        from a handler ends its request with that code for the requester.
        """
        if isinstance(answer, w.Response):
            if session.state is not State.OPEN:
                return False
            self.respond(session, answer.request_id, answer.status, answer.message, b"")
            return True
        if isinstance(answer, w.Error) and answer.about == w.MessageType.RESPONSE:
            pending = session.handling.pop(answer.ref, None)
            if pending is not None:
                self.finish(pending, answer.code, f"malformed response: {answer.message}", b"")
        return False

    def finish(self, pending: Pending, status: int, message: str, data: bytes) -> None:
        """Call the request's ``done`` once, and forget it."""
        if pending.finished:
            return
        pending.finished = True
        self.pending.pop(pending.id, None)
        target = pending.target
        if target is not None:
            target.handling.pop(pending.id, None)
            self._unload(target, pending.requester)
        pending.done(status, message, data)

    def _unload(self, target: Session, requester: Session | None) -> None:
        load = self.load.get(target)
        if load is None:
            return
        left = load.get(requester, 0) - 1
        if left > 0:
            load[requester] = left
            return
        load.pop(requester, None)
        if not load:
            del self.load[target]

    def fail(self, session: Session, message: str, sender: str | None = None) -> None:
        """SENDER_GONE for what ``session`` is handling (only ``sender``'s, if given)."""
        gone = [p for p in session.handling.values() if sender is None or p.sender == sender]
        for pending in gone:
            self.finish(pending, ErrorCode.SENDER_GONE, message, b"")

    def expire(self, now: float) -> None:
        """TIMEOUT for every request whose deadline is ``now`` or earlier."""
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= now:
            _, gid = heapq.heappop(deadlines)
            pending = self.pending.get(gid)
            if pending is not None:
                self.finish(
                    pending,
                    ErrorCode.TIMEOUT,
                    f"no response to {pending.method!r} within the request timeout",
                    b"",
                )


def observed(done: Done, observer: RequestObserver, clock: Callable[[], float]) -> Done:
    """``done`` that also tells ``observer`` the outcome and how long the request took."""
    started = clock()

    def finished(status: int, message: str, data: bytes) -> None:
        try:
            observer(status, clock() - started)
        except Exception:  # metrics must never lose a response
            logger.exception("request observer failed")
        done(status, message, data)

    return finished


def answer_inline(owner: Sender, sender: str, method: str, params: bytes, done: Done) -> None:
    """Answer a request for an in-process sender at once, by calling its handler."""
    try:
        value = unpack(params)
    except DecodeError as exc:
        done(ErrorCode.MALFORMED, str(exc), b"")
        return
    try:
        result = pack(call_handler(owner.handlers, sender, method, value))
    except Exception as exc:  # the handler's, or its result's encoding
        error = handler_error(exc, sender, method)
        done(error.code, str(error), b"")
    else:
        done(ErrorCode.OK, "", result)


def fit_text(text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` UTF-8 bytes (at least a short prefix)."""
    budget = max(budget, 24)
    raw = text.encode("utf-8")
    if len(raw) <= budget:
        return text
    return raw[:budget].decode("utf-8", "ignore")
