"""Gateway-side session state of one link, as a table (sans-I/O).

Rules:

1. A link starts in AWAIT_HELLO. Only HELLO, PING and PONG are accepted there;
   anything else is answered with ERROR(NO_SESSION) and INVITE.
2. HELLO opens the session (OPEN). A HELLO while OPEN replaces the session: its
   senders and listeners are removed first (a device that reset). The one
   exception: a repeat of the HELLO that opened a session which has registered
   nothing yet gets the same WELCOME and keeps it (an INVITE crossed a HELLO).
3. A link timeout (no valid frame for 3 x keepalive) ends the session. On a
   stream link (TCP) that also closes the connection (CLOSED); on a UART the
   link stays and waits for the next HELLO (AWAIT_HELLO).
4. The link closing ends everything (CLOSED); CLOSED is final.
5. A protocol breach that cannot be answered (framing error on TCP, too many
   errors) moves to ERROR, which closes the link: no limping on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from sig.core.principals import ANONYMOUS, Principal
from sig.core.routing import Key
from sig.protocol import messages as w


class State(Enum):
    AWAIT_HELLO = "await-hello"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


class Input(Enum):
    HELLO = "hello"
    TIMEOUT = "timeout"
    LINK_CLOSED = "link-closed"
    BREACH = "breach"


_TIMEOUT_TARGET = {True: State.AWAIT_HELLO, False: State.CLOSED}  # keyed by link.persistent

#: (state, input) -> next state. TIMEOUT depends on the link kind (rule 3).
TRANSITIONS: dict[State, dict[Input, State | None]] = {
    State.AWAIT_HELLO: {
        Input.HELLO: State.OPEN,
        Input.TIMEOUT: None,
        Input.LINK_CLOSED: State.CLOSED,
        Input.BREACH: State.ERROR,
    },
    State.OPEN: {
        Input.HELLO: State.OPEN,
        Input.TIMEOUT: None,
        Input.LINK_CLOSED: State.CLOSED,
        Input.BREACH: State.ERROR,
    },
    State.CLOSED: {},
    State.ERROR: {Input.LINK_CLOSED: State.ERROR},
}


class Link(Protocol):
    """What the gateway needs from a carrier link (TCP connection, serial port, memory).

    A subset of the carrier contract, :class:`carriers.link.Link` (the core
    does not import carriers: any object with these members will do).
    """

    name: str
    #: True for a UART: the link outlives sessions, and noise is counted, not fatal.
    persistent: bool
    #: Events the link refused to queue (slow consumer): the link's one drop counter.
    dropped: int
    #: The CN of the client certificate the peer showed over mutual TLS (its CA
    #: checked by the carrier), or None: what authentication may take as principal.
    peer_subject: str | None

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        """Frame and queue one message body; False if it was dropped (slow consumer).

        ``droppable`` marks an event, which a slow consumer may lose (counted
        by the link, in ``dropped``); nothing else is ever dropped.

        ``urgent`` asks for the frame to be written now rather than at the end
        of the loop turn (requests and responses, where latency counts).
        """
        ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass(eq=False)
class Session:
    """One peer on one link: its registrations and timers."""

    link: Link
    state: State = State.AWAIT_HELLO
    peer: str = ""
    peer_max_body: int = 65535
    keepalive_s: float = 0.0
    features: int = 0
    last_rx: float = 0.0
    last_tx: float = 0.0
    opened_at: float = 0.0
    attached_at: float = 0.0  #: when the link came up (the HELLO deadline counts from it)
    #: Why the gateway ended this link ("" until it does), for the close counters.
    close_reason: str = ""
    senders: dict[int, str] = field(default_factory=dict)  # sender_ref -> name
    events: dict[int, tuple[str, str]] = field(default_factory=dict)  # event_ref -> pair
    event_refs: dict[str, tuple[int, ...]] = field(default_factory=dict)  # sender -> its refs
    listeners: dict[int, Key] = field(default_factory=dict)  # listener_id -> key
    handling: dict[int, Any] = field(default_factory=dict)  # gw request id -> pending
    triggers: int = 0
    events_out: int = 0
    #: Events the core did not send because they exceed this peer's max_body (or
    #: the protocol's limit); what the link could not queue it counts itself.
    dropped_too_large: int = 0
    protocol_errors: int = 0
    #: ACKs received without the reliable mode (ignored; PROTOCOL.md section 5).
    bad_acks: int = 0
    #: Who this session acts as (set at HELLO by authentication; ACLs check it).
    principal: Principal = ANONYMOUS
    logged_codes: set[int] = field(default_factory=set)
    #: The type of the message being handled: the ``about`` of an ERROR answering it.
    about: int = 0
    #: The HELLO that opened the session and its WELCOME (a repeat is answered alike).
    hello: w.Hello | None = None
    welcome: w.Welcome | None = None

    @property
    def dropped_events(self) -> int:
        """Events this peer did not get, any reason: too large here, or refused by the link."""
        return self.dropped_too_large + self.link.dropped

    def step(self, event: Input) -> State:
        """Apply one input to the state table; returns the new state."""
        table = TRANSITIONS[self.state]
        if event not in table:
            raise RuntimeError(f"no transition from {self.state} on {event}")
        target = table[event]
        if target is None:
            target = _TIMEOUT_TARGET[self.link.persistent]
        self.state = target
        return target
