"""Users and logins: password hashes, HELLO credentials, the gateway's login checks (sans-I/O).

Three parts, all without I/O:

* password hashes, the users file's format: ``name:$scrypt$n=16384,r=8,p=1$SALT$HASH``
  (salt and hash in unpadded base64; scrypt from ``hashlib``, its parameters
  stored per entry) -- :func:`hash_password`, :func:`verify_password`,
  :func:`parse_users`, :func:`format_users`;
* HELLO ``credentials``: a CBOR map (``"user"``, ``"password"`` text; other
  keys such as a device's ``"key"`` are not this module's) --
  :func:`encode_credentials`, :func:`decode_credentials`;
* the gateway's side of a login, :class:`Authenticator`: who a HELLO makes the
  session (:class:`~sig.core.principals.Principal`), refusals
  (``ERROR(NOT_AUTHORISED)`` and no session), and the slowdown of an address
  that fails (:class:`Slowdown`).

Checking a password costs tens of milliseconds of CPU, which the event loop
must not spend: the authenticator does not run scrypt itself. It hands a
:class:`Verification` to ``verify`` (the asyncio layer runs it on a thread)
and takes the answer back as an input, :meth:`Authenticator.verified`, the way
the core takes the time through ``poll``. Without a ``verify`` (in-process
tests) it runs the verification inline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sig.core.principals import ANONYMOUS, Principal
from sig.core.routing import check_name
from sig.core.session import Link, Session, State
from sig.errors import DecodeError, ErrorCode, InvalidNameError, UsersFileError
from sig.logs import RepeatLimiter
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack

logger = logging.getLogger(__name__)

# --- password hashes ----------------------------------------------------------

SCHEME = "scrypt"
#: The cost of new hashes: N = 2**14, r = 8, p = 1 (16 MiB, ~50 ms on a Pi 4).
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**14, 8, 1
#: What a users file may ask for: weaker is refused, and so is a cost that would
#: let a typo make every login take seconds or gigabytes.
N_RANGE, R_RANGE, P_RANGE = (2**14, 2**20), (8, 32), (1, 16)
MAX_SCRYPT_MEMORY = 1 << 30  #: bytes 128 * r * N may take at most
SALT_BYTES = 16
HASH_BYTES = 32
#: A user name: a sig name (1..255 UTF-8 bytes, no control characters) without ':'.
USER_SEPARATOR = ":"


@dataclass(frozen=True)
class ScryptHash:
    """One parsed hash entry: the scrypt parameters, the salt and the derived key."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        return f"${SCHEME}$n={self.n},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.digest)}"

    def derive(self, password: str) -> bytes:
        """scrypt of ``password`` with this entry's salt and parameters (the slow part)."""
        return hashlib.scrypt(
            password.encode("utf-8", "surrogatepass"),
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=129 * self.r * self.n * self.p + (1 << 20),
            dklen=len(self.digest),
        )

    def matches(self, password: str) -> bool:
        """True if ``password`` derives this entry's key (compared in constant time)."""
        return hmac.compare_digest(self.derive(password), self.digest)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(
    password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """A new hash entry for ``password``: ``$scrypt$n=..,r=..,p=..$SALT$HASH``, fresh salt."""
    entry = ScryptHash(n, r, p, secrets.token_bytes(SALT_BYTES), b"\0" * HASH_BYTES)
    _check_cost(entry)
    return str(ScryptHash(n, r, p, entry.salt, entry.derive(password)))


def parse_hash(text: str) -> ScryptHash:
    """The parsed form of one hash entry; UsersFileError if it is not one we accept."""
    parts = text.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != SCHEME:
        raise UsersFileError(f"not a ${SCHEME}$ hash (plain-text passwords are refused)")
    try:
        params = dict(item.split("=", 1) for item in parts[2].split(","))
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
        salt, digest = _unb64(parts[3]), _unb64(parts[4])
    except (ValueError, KeyError) as exc:
        raise UsersFileError(f"bad ${SCHEME}$ hash ({exc})") from None
    if len(salt) < SALT_BYTES or len(digest) < 16:
        raise UsersFileError(f"salt or hash too short (salt >= {SALT_BYTES} bytes)")
    entry = ScryptHash(n, r, p, salt, digest)
    _check_cost(entry)
    return entry


def _check_cost(entry: ScryptHash) -> None:
    """Refuse parameters that are too weak, or so strong that a login is a DoS."""
    for name, value, (low, high) in (
        ("n", entry.n, N_RANGE),
        ("r", entry.r, R_RANGE),
        ("p", entry.p, P_RANGE),
    ):
        if not low <= value <= high:
            raise UsersFileError(f"scrypt {name}={value} is outside {low}..{high}")
    if entry.n & (entry.n - 1):
        raise UsersFileError(f"scrypt n={entry.n} is not a power of two")
    if 128 * entry.r * entry.n * entry.p > MAX_SCRYPT_MEMORY:
        raise UsersFileError("scrypt parameters need more than 1 GiB")


def verify_password(entry: str | ScryptHash, password: str) -> bool:
    """True if ``password`` matches the hash ``entry`` (CPU-bound: tens of ms)."""
    parsed = parse_hash(entry) if isinstance(entry, str) else entry
    return parsed.matches(password)


def check_user_name(name: object) -> str:
    """``name`` if it may name a user (a sig name without ':'), else InvalidNameError."""
    check_name("user", name)
    assert isinstance(name, str)
    if USER_SEPARATOR in name:
        raise InvalidNameError(f"user name must not contain {USER_SEPARATOR!r}: {name!r}")
    return name


def parse_users(text: str) -> dict[str, ScryptHash]:
    """A users file's text -> user name -> hash. Blank lines and ``#`` comments are skipped.

    Any bad line makes the whole file bad (UsersFileError naming the line):
    a reload keeps the users it had rather than half a file.
    """
    users: dict[str, ScryptHash] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, entry = line.partition(USER_SEPARATOR)
        try:
            if not sep:
                raise UsersFileError("expected NAME:$scrypt$...")
            check_user_name(name)
            if name in users:
                raise UsersFileError(f"user {name!r} appears twice")
            users[name] = parse_hash(entry)
        except (UsersFileError, InvalidNameError) as exc:
            raise UsersFileError(f"line {number}: {exc}") from None
    return users


def format_users(users: dict[str, str]) -> str:
    """The text of a users file: one ``name:hash`` line per user, sorted."""
    return "".join(f"{name}{USER_SEPARATOR}{users[name]}\n" for name in sorted(users))


# --- HELLO credentials --------------------------------------------------------

#: Keys of the credentials map this module reads (PROTOCOL.md section 3, "Open").
USER_KEY, PASSWORD_KEY = "user", "password"
MAX_PASSWORD_BYTES = 1024  #: longer passwords are refused (scrypt time grows with them)


def encode_credentials(user: str | None, password: str | None) -> bytes:
    """HELLO ``credentials`` for a login: a CBOR map, or empty bytes without a user."""
    if user is None:
        return b""
    return pack({USER_KEY: user, PASSWORD_KEY: password or ""})


@dataclass(frozen=True)
class Credentials:
    """What a HELLO's ``credentials`` carried: a user and password, or none."""

    user: str | None = None
    password: str = ""


def decode_credentials(raw: bytes) -> Credentials:
    """HELLO ``credentials`` -> Credentials; DecodeError if they are not a valid map.

    Empty bytes are no credentials. Keys other than ``user`` and ``password``
    are ignored here (a device's ``key`` belongs to frame signing).
    """
    if not raw:
        return Credentials()
    doc = unpack(raw)
    if not isinstance(doc, dict):
        raise DecodeError("credentials must be a CBOR map")
    user, password = doc.get(USER_KEY), doc.get(PASSWORD_KEY, "")
    if user is None:
        return Credentials()
    if not isinstance(user, str) or not isinstance(password, str):
        raise DecodeError("credentials: user and password must be text")
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise DecodeError(f"credentials: password longer than {MAX_PASSWORD_BYTES} bytes")
    return Credentials(user, password)


# --- the slowdown of failing addresses -------------------------------------------

#: The first failure from an address delays its next answer this long; each
#: further one doubles it, up to SLOWDOWN_CAP. An address is forgiven only by
#: SLOWDOWN_FORGET seconds without a failure after its delay, never by a login
#: that succeeds (or one valid account would reset the count of its guesses).
SLOWDOWN_BASE, SLOWDOWN_CAP = 0.5, 30.0
SLOWDOWN_FORGET = 2 * SLOWDOWN_CAP
#: Addresses remembered at most (least recently failed forgotten first).
SLOWDOWN_ADDRESSES = 4096


class Slowdown:
    """Per source address: failures, and until when its next login answer waits.

    Bounded (an LRU of :data:`SLOWDOWN_ADDRESSES`): a flood from many
    addresses forgets the oldest, never grows without limit.
    """

    def __init__(
        self,
        base: float = SLOWDOWN_BASE,
        cap: float = SLOWDOWN_CAP,
        max_addresses: int = SLOWDOWN_ADDRESSES,
        forget: float = SLOWDOWN_FORGET,
    ) -> None:
        self.base, self.cap, self.max_addresses = base, cap, max(1, max_addresses)
        self.forget = forget
        self._table: OrderedDict[str, tuple[int, float]] = OrderedDict()  # -> failures, until

    def __len__(self) -> int:
        return len(self._table)

    def until(self, address: str) -> float:
        """When the next login answer to ``address`` may go (0: at once)."""
        entry = self._table.get(address)
        return 0.0 if entry is None else float(entry[1])

    def failed(self, address: str, now: float) -> float:
        """Count a failure of ``address``; returns the delay its next answer gets."""
        failures, until = self._table.pop(address, (0, 0.0))
        failures = 1 if now - until > self.forget else failures + 1
        delay = float(min(self.cap, self.base * 2.0 ** min(failures - 1, 32)))
        self._table[address] = (failures, now + delay)
        if len(self._table) > self.max_addresses:
            self._table.popitem(last=False)
        return delay

    def slowed(self, address: str, now: float) -> bool:
        """True while ``address`` is held or not yet forgiven (its checks go one at a time)."""
        entry = self._table.get(address)
        return entry is not None and now - entry[1] <= self.forget


def source_address(session: Session) -> str:
    """The address a session comes from: the host of ``tcp:HOST:PORT``, else the link's name."""
    link = session.link
    address = getattr(link, "peer_address", None)
    if isinstance(address, str):
        return address
    name = link.name
    if link.persistent or ":" not in name:
        return name
    rest = name.split(":", 1)[1]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


# --- the gateway's login checks ------------------------------------------------

#: Verifications in flight (on threads) at most; a HELLO beyond gets ERROR(BUSY).
MAX_VERIFICATIONS = 8
#: HELLOs waiting for their address's slowdown at most (the rest get ERROR(BUSY)).
MAX_PARKED = 1024
#: How a certificate may name the principal: not at all, or by its subject's CN.
TLS_PRINCIPALS = ("none", "subject")

Proceed = Callable[[Session, w.Hello, Principal], None]


@dataclass(eq=False)
class Verification:
    """One password check to run off the event loop: :meth:`run`, then hand back the result."""

    session: Session
    hello: w.Hello
    user: str
    entry: ScryptHash
    password: str
    address: str
    known: bool  #: False: an unknown user, checked against a stand-in hash
    id: int = 0

    def run(self) -> bool:
        """The scrypt check (CPU-bound, no shared state: safe on any thread)."""
        return self.entry.matches(self.password) and self.known


@dataclass(eq=False)
class _Parked:
    """A HELLO that waits for its address's slowdown to pass."""

    hello: w.Hello
    address: str


@dataclass
class AuthSettings:
    """How the gateway admits sessions (``[auth]`` of the config)."""

    #: user -> hash; None: no users configured (everyone is anonymous).
    users: dict[str, ScryptHash] | None = None
    #: With users: may a HELLO without credentials open an anonymous session?
    allow_anonymous: bool = False
    #: "subject": a client certificate's subject CN is the principal (mutual TLS).
    tls_principal: str = "none"
    #: Where the users came from (reloads read it again), for logs.
    source: str = ""


class Authenticator:
    """Turns a HELLO into a principal, or a refusal; slows addresses that fail.

    ``proceed(session, hello, principal)`` opens an admitted session (the
    rest of HELLO); ``send(session, message)`` answers a peer (the core's
    send); ``counters`` gets ``auth_failures`` (and ``auth_busy``).
    """

    def __init__(
        self,
        proceed: Proceed,
        send: Callable[[Session, w.Message], None],
        counters: dict[str, int],
        clock: Callable[[], float],
        settings: AuthSettings | None = None,
    ) -> None:
        self._proceed = proceed
        self._send = send
        self.counters = counters
        self.clock = clock
        self.settings = settings or AuthSettings()
        self.slowdown = Slowdown()
        #: The principal a link gives a session without a login (a serial port's
        #: configured device name), or None: anonymous. The ACL layer sets it.
        self.link_principal: Callable[[Link], Principal | None] = lambda link: None
        #: Runs a verification off the loop and calls :meth:`verified` later; None: inline.
        self.verify: Callable[[Verification], None] | None = None
        #: Verifications handed to ``verify`` whose result has not come back (bounded).
        self.in_flight: dict[int, Verification] = {}
        #: The verification whose result decides each session (newer HELLOs replace).
        self._current: dict[Session, int] = {}
        #: Source address -> its verifications in flight (for :meth:`_held`).
        self._checking: dict[str, int] = {}
        self.parked: dict[Session, _Parked] = {}
        self._ids = itertools.count(1)
        self._log_limit = RepeatLimiter(burst=1, window=60.0, max_keys=1, clock=clock)
        self._stand_in = ScryptHash(
            DEFAULT_N, DEFAULT_R, DEFAULT_P, secrets.token_bytes(SALT_BYTES), bytes(HASH_BYTES)
        )
        counters.setdefault("auth_failures", 0)
        counters.setdefault("auth_busy", 0)
        self.configure(self.settings)

    def configure(self, settings: AuthSettings) -> None:
        """New users and rules (a reload); sessions already open keep their principal."""
        self.settings = settings
        users = settings.users or {}
        # An unknown user is checked against a hash as costly as the users' own.
        costly = max(users.values(), key=lambda h: h.n * h.r * h.p, default=None)
        if costly is not None:
            self._stand_in = ScryptHash(
                costly.n, costly.r, costly.p, secrets.token_bytes(SALT_BYTES), bytes(HASH_BYTES)
            )

    @property
    def enabled(self) -> bool:
        """True when users are configured (a HELLO then needs credentials, or a rule)."""
        return self.settings.users is not None

    # --- HELLO ------------------------------------------------------------------

    def hello(self, session: Session, msg: w.Hello) -> None:
        """Decide who ``msg`` makes ``session``: ``proceed(session, msg, principal)``, now or later.

        Later means after the password check (a :class:`Verification`) or
        after this address's slowdown; a refusal is ERROR(NOT_AUTHORISED).
        """
        self._forget(session)  # a new HELLO replaces one still being checked
        address = source_address(session)
        if self._held(address, self.clock()):
            self._park(session, msg, address)
            return
        self._decide(session, msg, address)

    def _held(self, address: str, now: float) -> bool:
        """True if a HELLO from ``address`` must wait: its slowdown runs, or (once it
        failed) one of its logins is being checked. So answers to an address that
        fails follow the slowdown however many connections it opens in parallel."""
        if self.slowdown.until(address) > now:
            return True
        return self._checking.get(address, 0) > 0 and self.slowdown.slowed(address, now)

    def _decide(self, session: Session, msg: w.Hello, address: str) -> None:
        """Admit, refuse, or start the password check of one HELLO."""
        settings = self.settings
        if settings.users is None:
            self._admit(session, msg, self._without_login(session))  # credentials not asked for
            return
        try:
            creds = decode_credentials(msg.credentials)
        except DecodeError as exc:
            self._refuse(session, address, None, f"bad credentials ({exc})")
            return
        if creds.user is None:
            self._without_password(session, msg, address)
            return
        self._check(session, msg, address, creds)

    def _without_password(self, session: Session, msg: w.Hello, address: str) -> None:
        """A HELLO without a user: a certificate's subject, anonymous, or refused."""
        subject = getattr(session.link, "peer_subject", None)
        if self.settings.tls_principal == "subject" and isinstance(subject, str) and subject:
            self._admit(session, msg, Principal(subject, "certificate"))
        elif self.settings.allow_anonymous or session.link.persistent:
            self._admit(session, msg, self._without_login(session))  # a port: by its config
        else:
            self._refuse(session, address, None, "credentials required")

    def _without_login(self, session: Session) -> Principal:
        """Who a session that did not log in acts as: what its link says, else anonymous.

        Asked at every HELLO (never taken from the session: after a device's
        reset its last session's login must not stay).
        """
        return self.link_principal(session.link) or ANONYMOUS

    def _check(self, session: Session, msg: w.Hello, address: str, creds: Credentials) -> None:
        """Start the scrypt check (an unknown user is checked against a stand-in: same cost)."""
        users = self.settings.users or {}
        user = creds.user or ""
        entry = users.get(user)
        if len(self.in_flight) >= MAX_VERIFICATIONS:
            self._busy(session, "too many logins being checked")
            return
        ticket = Verification(
            session,
            msg,
            user,
            entry or self._stand_in,
            creds.password,
            address,
            entry is not None,
            next(self._ids),
        )
        self.in_flight[ticket.id] = ticket
        self._current[session] = ticket.id
        self._checking[address] = self._checking.get(address, 0) + 1
        if self.verify is None:
            self.verified(ticket, ticket.run())
        else:
            self.verify(ticket)

    def verified(self, ticket: Verification, ok: bool) -> None:
        """The result of a :class:`Verification`: admit or refuse its session (if still there)."""
        if self.in_flight.pop(ticket.id, None) is None:
            return  # answered already
        self._checked(ticket.address)
        session = ticket.session
        if self._current.get(session) != ticket.id:
            return  # replaced by a newer HELLO, or the link went away
        del self._current[session]
        if session.state in (State.CLOSED, State.ERROR):
            return
        if ok and ticket.known:
            self._admit(session, ticket.hello, Principal(ticket.user, "user"))
        else:
            self._refuse(session, ticket.address, ticket.user, "wrong user or password")

    def abandon(self, ticket: Verification) -> None:
        """A verification that will not come back (the gateway stops): forget it."""
        if self.in_flight.pop(ticket.id, None) is not None:
            self._checked(ticket.address)

    def _checked(self, address: str) -> None:
        left = self._checking.pop(address, 0) - 1
        if left > 0:
            self._checking[address] = left

    # --- answers ------------------------------------------------------------------

    def _admit(self, session: Session, msg: w.Hello, principal: Principal) -> None:
        self._proceed(session, msg, principal)

    def _refuse(self, session: Session, address: str, user: str | None, why: str) -> None:
        """ERROR(NOT_AUTHORISED), no session; counted, logged (a flood: a line a minute), slowed."""
        self.counters["auth_failures"] += 1
        delay = self.slowdown.failed(address, self.clock())
        passes, held, _ = self._log_limit.allow("auth")
        if passes:
            more = f" ({held} more failures since the last line)" if held else ""
            logger.warning(
                "%s: login refused from %s as %r: %s; its next answers wait %.1f s%s",
                session.link.name,
                address,
                user if user is not None else "(no user)",
                why,
                delay,
                more,
            )
        self._send(
            session, w.Error(ErrorCode.NOT_AUTHORISED, 0, "login refused", w.MessageType.HELLO)
        )

    def _busy(self, session: Session, why: str) -> None:
        self.counters["auth_busy"] += 1
        self._send(session, w.Error(ErrorCode.BUSY, 0, why, w.MessageType.HELLO))

    # --- the slowdown's timer ---------------------------------------------------------

    def _park(self, session: Session, msg: w.Hello, address: str) -> None:
        """Hold a HELLO from a slowed address until it may be answered (bounded: else BUSY)."""
        if len(self.parked) >= MAX_PARKED:
            self._busy(session, "too many logins waiting")
            return
        self.parked[session] = _Parked(msg, address)

    def poll(self, now: float) -> None:
        """Answer the parked HELLOs whose slowdown has passed; forget those of closed links."""
        if not self.parked:
            return
        for session, parked in list(self.parked.items()):
            if session.state in (State.CLOSED, State.ERROR):
                del self.parked[session]
            elif not self._held(parked.address, now):  # one per address, then it is held
                del self.parked[session]
                self._decide(session, parked.hello, parked.address)

    def _forget(self, session: Session) -> None:
        """Drop what a session had waiting (its check's result will be ignored)."""
        self.parked.pop(session, None)
        self._current.pop(session, None)  # its thread runs on; in_flight counts it until then

    def forget(self, session: Session) -> None:
        """The session's link is gone: nothing of it waits here any more."""
        self._forget(session)
