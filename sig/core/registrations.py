"""What remote peers register on the gateway: sessions, senders, listeners (sans-I/O).

The gateway core hands HELLO, REGISTER_SENDER, UNREGISTER_SENDER, LISTEN and UNLISTEN
of an open session to :class:`Registrations`, which checks them against the
per-link limits, the names and the reservations, enters them in the routing
table and answers. When a session ends, :meth:`Registrations.end` removes all
it registered (a serial device's sender names are kept for its port first).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sig.core.limits import link_limits
from sig.core.meta import MetaError, SenderMeta, parse_meta
from sig.core.principals import Principal
from sig.core.retained import send_retained, session_owner
from sig.core.routing import DISCONNECT, RESERVED_PREFIX, RoutingTable, check_name
from sig.core.session import Input, Session, State
from sig.errors import DuplicateSenderError, ErrorCode, InvalidNameError
from sig.protocol import messages as w
from sig.protocol.data import pack
from sig.protocol.frame import MAX_BODY_LIMIT

if TYPE_CHECKING:
    from sig.core.access import Access
    from sig.core.auth import Authenticator
    from sig.core.delivery import Delivery
    from sig.core.endpoints import Listener
    from sig.core.limits import Limits
    from sig.core.requests import Requests
    from sig.core.reservations import Reservations
    from sig.core.retained import RetainedStore

logger = logging.getLogger(__name__)

#: A session ends after this many keepalive intervals without a valid frame.
LINK_TIMEOUT_KEEPALIVES = 3
#: Sender names of a serial link stay reserved for it this many link timeouts
#: after its session ends, unless ``serial_name_grace`` says otherwise.
SERIAL_NAME_GRACE_TIMEOUTS = 2
#: Keepalive the gateway asks of UART devices that announce none.
DEFAULT_SERIAL_KEEPALIVE_MS = 2000
KEEPALIVE_MIN_MS, KEEPALIVE_MAX_MS = 500, 60000

Refusal = tuple[ErrorCode, str]


class RegistrationsCore(Protocol):
    """What :class:`Registrations` uses of its core (:class:`~sig.core.gateway.GatewayCore`).

    A type only: the core hands itself over, and this module never imports it.
    """

    @property
    def name(self) -> str: ...
    @property
    def max_body(self) -> int: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def tcp_keepalive_ms(self) -> int: ...
    @property
    def serial_name_grace(self) -> float | None: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def table(self) -> RoutingTable[Session | Listener]: ...
    @property
    def name_reservations(self) -> Reservations: ...
    @property
    def access(self) -> Access: ...
    @property
    def requests(self) -> Requests: ...
    @property
    def auth(self) -> Authenticator: ...
    @property
    def retained(self) -> RetainedStore: ...
    @property
    def delivery(self) -> Delivery: ...
    def end_session(self, session: Session, reason: str) -> None: ...
    def _send(self, session: Session, msg: w.Message) -> None: ...
    def _protocol_error(self, session: Session, code: int, ref: int, message: str) -> None: ...


class Registrations:
    """Senders and listeners of remote sessions: checked, tabled, answered, removed."""

    def __init__(self, core: RegistrationsCore) -> None:
        self.core = core

    # --- the session --------------------------------------------------------

    def on_hello(self, session: Session, msg: w.Hello) -> None:
        """HELLO: open the session (a HELLO while open replaces it: a device that reset)."""
        core = self.core
        try:
            check_name("peer", msg.name)  # shown in logs and `sig links`
        except InvalidNameError as exc:
            core._protocol_error(session, ErrorCode.INVALID_NAME, 0, str(exc))
            return
        if self._repeated(session, msg):
            assert session.welcome is not None
            logger.info("%s: repeated HELLO from %r, same WELCOME", session.link.name, msg.name)
            core._send(session, session.welcome)
            return
        core.auth.hello(session, msg)  # calls open_session, now or once the login is checked

    @staticmethod
    def _repeated(session: Session, msg: w.Hello) -> bool:
        """True for a repeat of the HELLO that opened ``session``, which registered nothing.

        An INVITE that crossed the device's HELLO makes it send a second one;
        answering it with the same WELCOME loses nothing (there is nothing to
        lose yet) and keeps the device from registering twice. A signed HELLO
        (feature AUTH) always opens a new session: it carries a new nonce.
        """
        return (
            session.state is State.OPEN
            and msg == session.hello
            and not msg.features & w.Feature.AUTH
            and not session.senders
            and not session.listeners
        )

    def open_session(self, session: Session, msg: w.Hello, principal: Principal) -> None:
        """Open the session of an admitted HELLO (as ``principal``): WELCOME."""
        core = self.core
        if session.state is State.OPEN:
            logger.info(
                "%s: new HELLO from %r replaces the session of %r",
                session.link.name,
                msg.name,
                session.peer,
            )
            core.end_session(session, "replaced by a new HELLO")
        session.step(Input.HELLO)
        session.peer = msg.name
        session.peer_max_body = msg.max_body  # at least MIN_MAX_BODY: the codec checks
        keepalive = self._keepalive_ms(session, msg.keepalive_ms)
        session.keepalive_s = keepalive / 1000
        session.features = 0
        session.opened_at = core.clock()
        session.principal = principal
        session.hello = msg
        session.welcome = w.Welcome(core.name, core.max_body, keepalive)
        core._send(session, session.welcome)
        logger.info("%s: session opened by %r as %s", session.link.name, msg.name, principal)

    def _keepalive_ms(self, session: Session, asked: int) -> int:
        """The keepalive a session gets: what it asked for, clamped; a default for 0."""
        if asked == 0:
            persistent = session.link.persistent
            asked = DEFAULT_SERIAL_KEEPALIVE_MS if persistent else self.core.tcp_keepalive_ms
        if asked:
            asked = min(max(asked, KEEPALIVE_MIN_MS), KEEPALIVE_MAX_MS)
        return asked

    # --- senders ------------------------------------------------------------

    def on_register(self, session: Session, msg: w.RegisterSender) -> None:
        """REGISTER_SENDER: a new live sender of ``session``, or an ERROR that says why not."""
        core = self.core
        ref = msg.sender_ref
        refs = [r for r, _ in msg.events]
        refusal = self._check_refs(session, msg, refs) or self._check_limits(session, msg)
        if refusal is not None:
            if refusal[0] is ErrorCode.LIMIT_REACHED or refusal[0] is ErrorCode.TOO_LARGE:
                core.counters["refused_registrations"] += 1
            core._protocol_error(session, refusal[0], ref, refusal[1])
            return
        try:
            meta = parse_meta(msg.meta, [e for _, e in msg.events])
        except MetaError as exc:
            core._protocol_error(session, ErrorCode.MALFORMED, ref, str(exc))
            return
        refusal = self._enter(session, msg, meta)
        if refusal is not None:
            core._protocol_error(session, refusal[0], ref, refusal[1])
            return
        core.name_reservations.release(msg.name)  # its own port took it back (or it was free)
        core.access.registered(msg.name, session)
        core.retained.registered(msg.name, meta.retained, session_owner(session))
        session.senders[ref] = msg.name
        for event_ref, event in msg.events:
            session.events[event_ref] = (msg.name, event)
        session.event_refs[msg.name] = tuple(refs)
        core._send(session, w.SenderRegistered(ref))

    @staticmethod
    def _check_refs(session: Session, msg: w.RegisterSender, refs: list[int]) -> Refusal | None:
        """DUPLICATE_REF if the sender_ref or an event_ref is in use on this link (or
        twice in ``msg``); INVALID_NAME if ``msg`` declares an event or method twice."""
        if msg.sender_ref in session.senders:
            return ErrorCode.DUPLICATE_REF, "sender_ref in use"
        if len(set(refs)) != len(refs) or any(r in session.events for r in refs):
            return ErrorCode.DUPLICATE_REF, "event_ref in use"
        for kind, names in (("event", [e for _, e in msg.events]), ("method", msg.methods)):
            if len(set(names)) != len(names):
                twice = next(n for n in names if names.count(n) > 1)
                return ErrorCode.INVALID_NAME, f"{kind} {twice!r} declared twice"
        return None

    def _check_limits(self, session: Session, msg: w.RegisterSender) -> Refusal | None:
        """Why this link may not register ``msg`` now (code, text), or None.

        The per-link limits bound what one peer makes the gateway hold. The
        ``#disconnect`` EVENT (the longer of the two announcements) must fit in
        one frame, or listeners could never learn that the sender came or went.
        """
        limits = link_limits(self.core.limits, session)
        if len(session.senders) >= limits.senders_per_link:
            return (
                ErrorCode.LIMIT_REACHED,
                f"{session.link.name} already holds {limits.senders_per_link} senders",
            )
        if len(msg.events) > limits.events_per_sender:
            return (
                ErrorCode.LIMIT_REACHED,
                f"sender {msg.name!r} declares {len(msg.events)} events,"
                f" more than {limits.events_per_sender}",
            )
        events = list(dict.fromkeys(e for _, e in msg.events))
        methods = list(dict.fromkeys(msg.methods))
        size = len(w.encode(w.Event(msg.name, DISCONNECT))) + len(
            pack(
                {"events": events, "requests": methods, "default": True, "incarnation": 1 << 52}
            )
        )
        if size > MAX_BODY_LIMIT:
            return (
                ErrorCode.TOO_LARGE,
                f"the #connect/#disconnect announcement of {msg.name!r} would take"
                f" {size} bytes, more than the {MAX_BODY_LIMIT} a frame holds",
            )
        return None

    def _enter(self, session: Session, msg: w.RegisterSender, meta: SenderMeta) -> Refusal | None:
        """Put the sender in the routing table; the refusal if its name is not free."""
        try:
            self.check_sender_name(msg.name, session)
            refusal = self.core.access.own_refusal(msg.name, session)  # ACL, port, claims
            if refusal is not None:
                return refusal
            self.core.table.add_sender(
                msg.name,
                [e for _, e in msg.events],
                msg.methods,
                default_handler=msg.default_handler,
                owner=session,
                meta=meta,
            )
        except DuplicateSenderError as exc:
            return ErrorCode.DUPLICATE_SENDER, str(exc)
        except InvalidNameError as exc:
            return ErrorCode.INVALID_NAME, str(exc)
        return None

    def check_sender_name(self, name: str, session: Session | None = None) -> None:
        """Raise unless ``session`` (None: in-process) may register ``name`` now."""
        check_name("sender", name)
        if name.startswith(RESERVED_PREFIX):
            raise InvalidNameError(f"sender names starting with {RESERVED_PREFIX!r} are reserved")
        link = session.link.name if session is not None else None
        self.core.name_reservations.check(name, link)

    def on_unregister(self, session: Session, msg: w.UnregisterSender) -> None:
        """UNREGISTER_SENDER: the sender goes, with its ``#disconnect``."""
        name = session.senders.pop(msg.sender_ref, None)
        if name is None:
            self.core._protocol_error(
                session, ErrorCode.UNKNOWN_REF, msg.sender_ref, "unknown sender_ref"
            )
            return
        self.core.access.unregistered(name, session)  # its owner lets the name go
        self.core.retained.unregistered(name)  # on purpose: its retained values go
        self.drop_sender(session, name)

    def drop_sender(self, session: Session, name: str) -> None:
        """Remove one sender of ``session``: O(its events + requests pending on the link)."""
        for ref in session.event_refs.pop(name, ()):
            session.events.pop(ref, None)
        self.core.table.remove_sender(name)
        self.core.requests.fail(session, f"sender {name!r} went away", name)

    # --- listeners ----------------------------------------------------------

    def on_listen(self, session: Session, msg: w.Listen) -> None:
        """LISTEN: subscribe ``session`` to (sender, event), within the per-link limit."""
        core = self.core
        lid = msg.listener_id
        if lid in session.listeners:
            core._protocol_error(session, ErrorCode.DUPLICATE_REF, lid, "listener_id in use")
            return
        cap = link_limits(core.limits, session).listeners_per_link
        if len(session.listeners) >= cap:
            core.counters["refused_registrations"] += 1
            core._protocol_error(
                session,
                ErrorCode.LIMIT_REACHED,
                lid,
                f"{session.link.name} already holds {cap} listeners",
            )
            return
        key = (msg.sender, msg.event)
        refusal = core.access.listen_refusal(session, *key)
        if refusal is not None:
            core._protocol_error(session, ErrorCode.NOT_AUTHORISED, lid, refusal)
            return
        try:
            core.table.subscribe(session, *key)
        except InvalidNameError as exc:  # e.g. a control character (PROTOCOL.md 2)
            core._protocol_error(session, ErrorCode.INVALID_NAME, lid, str(exc))
            return
        session.listeners[lid] = key
        core.delivery.listen(session, lid, msg.options)
        core._send(session, w.Listening(lid))
        send_retained(core.retained, core.access, session, *key, msg.options)  # after LISTENING

    def on_unlisten(self, session: Session, msg: w.Unlisten) -> None:
        """UNLISTEN: drop one subscription of ``session``."""
        key = session.listeners.pop(msg.listener_id, None)
        if key is None:
            self.core._protocol_error(
                session, ErrorCode.UNKNOWN_REF, msg.listener_id, "unknown listener_id"
            )
            return
        self.core.table.unsubscribe(session, *key)
        self.core.delivery.unlisten(session, msg.listener_id)

    # --- the end of a session ---------------------------------------------

    def end(self, session: Session, reason: str) -> None:
        """Remove everything the session registered; fail what waits on it."""
        if session.state not in (State.OPEN, State.AWAIT_HELLO):
            return
        core = self.core
        who = session.peer or session.link.name
        core.requests.fail(session, f"{who} went away ({reason})")
        core.table.unsubscribe_many(session, session.listeners.values())
        session.listeners.clear()
        core.delivery.forget(session)
        names = list(session.senders.values())
        if session.link.persistent and names:
            self._reserve_names(session, names)  # before #disconnect: its listeners may re-add
        core.retained.disconnected(names)  # their values stay, stale
        core.table.remove_senders(names)
        session.senders.clear()
        session.events.clear()
        session.event_refs.clear()
        if session.peer:
            logger.info("%s: session of %r ended (%s)", session.link.name, session.peer, reason)

    def _reserve_names(self, session: Session, names: list[str]) -> None:
        """Keep a quiet serial device's sender names for its port for the grace period."""
        grace = self.core.serial_name_grace
        if grace is None:
            keepalive = session.keepalive_s or DEFAULT_SERIAL_KEEPALIVE_MS / 1000
            grace = SERIAL_NAME_GRACE_TIMEOUTS * LINK_TIMEOUT_KEEPALIVES * keepalive
        if grace <= 0:
            return
        self.core.name_reservations.reserve(session.link.name, names, grace)
        logger.info(
            "%s: sender name(s) %s reserved for this link for %.1f s",
            session.link.name,
            ", ".join(repr(n) for n in names),
            grace,
        )
