"""Serial ports on the gateway: one supervisor task per port.

A supervisor opens its port, waits until the link closes, and opens it again
with exponential backoff (0.2 s doubling to 5 s, +/- 10 % jitter) for as long
as the gateway runs (the one reopen loop, :func:`sig.routers.retry.keep_open`).
What happens in between is the gateway core's business:

* on every (re)open the core sends INVITE (``GatewayCore.attach``), so a device
  that kept running registers again without being touched;
* when the port vanishes (USB unplugged, device file gone, the pty's other
  side died) the read fails, the link closes, and ``GatewayCore.detach`` ends
  the session: ``#disconnect`` for the device's senders, ``SENDER_GONE`` for
  requests it was handling. TCP clients and the other ports carry on.

Every port appears in ``$gateway links`` (``sig links``): an open port through
its session row (link counters plus ``port_state``, ``reopens``), a closed one
through the row its supervisor reports. Counters are those of the current (or,
when closed, the last) opening of the port; ``reopens`` counts them all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Iterable, Mapping
from typing import Any

from carriers.serial import SerialLink, SerialSettings, open_serial
from sig.core.acl import DEFAULT_DEVICE_PREFIX, AclConfigError, patterns
from sig.core.reliable import ReliablePort
from sig.core.signed import SignedLink, SignedPort
from sig.errors import ConnectError, SigError
from sig.protocol.signing import parse_key
from sig.routers.reliable import ReliableFrames
from sig.routers.retry import Backoff, keep_open

logger = logging.getLogger(__name__)

#: Reopen delays after a port is lost or cannot be opened.
SERIAL_BACKOFF = Backoff(initial=0.2, maximum=5.0, factor=2.0, jitter=0.1)
#: Keys of a ``[[serial]]`` table for the gateway rather than the port: who the
#: device acts as (``principal``) and the sender names it may carry (``names``).
SECURITY_KEYS = frozenset({"principal", "names"})


class SerialSpecError(SigError, ValueError):
    """A ``--serial`` argument or ``[[serial]]`` table is invalid."""


def parse_specs(specs: Iterable[str | Mapping[str, Any]]) -> list[SerialSettings]:
    """Validate every spec before anything is opened; one clear line per mistake."""
    out: list[SerialSettings] = []
    seen: set[str] = set()
    for spec in specs:
        try:
            settings = SerialSettings.from_spec(_port_keys(spec))
            port_security(spec)
        except ValueError as exc:
            raise SerialSpecError(str(exc)) from exc
        if settings.port in seen:
            raise SerialSpecError(f"serial port {settings.port} is configured twice")
        if settings.key_file:
            read_key_file(settings)  # a missing or bad key is reported before anything opens
        seen.add(settings.port)
        out.append(settings)
    return out


def read_key_file(settings: SerialSettings) -> bytes:
    """The port's key from its ``key_file`` (64 hex digits or 32 raw bytes).

    A file that others than its owner may read is used, with a warning: the
    key is what keeps a forged device off the gateway.
    """
    path = settings.key_file
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(256)
    except OSError as exc:
        raise SerialSpecError(f"serial {settings.port}: key_file {path}: {exc.strerror}") from exc
    try:
        key = parse_key(data)
    except ValueError as exc:
        raise SerialSpecError(f"serial {settings.port}: key_file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s: key_file %s is readable by others (chmod 600 it)", settings.port, path)
    return key


class SignedFrames:
    """The frame handler of a keyed port: every body is verified before the
    gateway sees it, and the core's session sends through a SignedLink."""

    def __init__(self, router: Any, port: SignedPort) -> None:
        self.router = router  # the gateway, or the ReliableFrames above it
        self.port = port
        self.link: SignedLink | None = None

    def link_up(self, link: SerialLink[Any]) -> Any:
        """The core attaches the SignedLink (or a ReliableLink on it), so all it sends is signed."""
        self.link = SignedLink(link, self.port)
        return self.router.link_up(self.link)

    def frames(self, link: SerialLink[Any], bodies: list[bytes]) -> int | None:
        """Verify one body at a time (a body held back on a pause is not verified twice)."""
        signed = self.link
        assert signed is not None
        for done, body in enumerate(bodies, 1):
            plain = signed.receive(body)
            if plain is not None:
                self.router.frames(link, [plain])
            if link.reading_paused:
                return done
        return None

    def link_down(self, link: SerialLink[Any], exc: BaseException | None) -> None:
        session = link.session
        self.router.link_down(session.link if session is not None else link, exc)


def _port_keys(spec: str | Mapping[str, Any]) -> str | Mapping[str, Any]:
    """The spec without the keys the gateway takes (what the port's settings read)."""
    if isinstance(spec, Mapping):
        return {k: v for k, v in spec.items() if k not in SECURITY_KEYS}
    return spec


def port_security(spec: str | Mapping[str, Any]) -> tuple[str | None, tuple[str, ...] | None]:
    """``(principal, names)`` of a ``[[serial]]`` table (None, None: not configured)."""
    if not isinstance(spec, Mapping):
        return None, None
    where = f"[[serial]] {spec.get('port', '?')}"
    principal = spec.get("principal")
    if principal is not None and (
        not isinstance(principal, str)
        or not principal
        or principal.startswith(DEFAULT_DEVICE_PREFIX)
    ):
        raise AclConfigError(
            f'{where}: principal must be a name such as "sensors"'
            f" (not empty, not starting with {DEFAULT_DEVICE_PREFIX!r})"
        )
    names = spec.get("names")
    bound = None if names is None else patterns(names, f"{where}: names")
    return principal, bound


def bind_ports(router: Any, specs: Iterable[str | Mapping[str, Any]]) -> None:
    """Tell the gateway core each configured port's principal and bound names."""
    for spec in specs:
        settings = SerialSettings.from_spec(_port_keys(spec))
        principal, names = port_security(spec)
        router.core.access.bind_port(settings.link_name, principal, names)


class SerialPort:
    """Supervises one port of a ServerRouter: open, wait for loss, reopen."""

    def __init__(self, router: Any, settings: SerialSettings, backoff: Backoff = SERIAL_BACKOFF):
        self.router = router
        self.settings = settings
        self.backoff = backoff
        #: "closed" (not opened yet / stopped), "open", or "reopening" (lost, retrying).
        self.state = "closed"
        self.link: SerialLink | None = None
        self.opens = 0
        self.reopens = 0
        self.failed_opens = 0
        self.last_error = ""
        self.closed_since: float | None = None
        self._opened = asyncio.Event()
        self._logged_error = ""
        #: The key, signer and drop counters of a port with a key_file (else None).
        self.signed: SignedPort | None = None
        self.handler: Any = router
        #: The reliable mode's settings and counters (None: the port has it off).
        self.reliable: ReliablePort | None = None
        if settings.reliable:
            self.reliable = ReliablePort(settings.link_name, rto=settings.retransmit_ms / 1000)
            self.handler = ReliableFrames(router, self.reliable)
        if settings.key_file:  # below the reliable layer: verify first, then sequence
            self.signed = SignedPort(read_key_file(settings), settings.link_name)
            self.handler = SignedFrames(self.handler, self.signed)

    @property
    def name(self) -> str:
        return self.settings.link_name

    async def open_once(self) -> bool:
        """One attempt to open the port; False (and logged once per reason) on failure."""
        try:
            options = getattr(self.router, "link_options", {})  # the gateway's queue limits
            link = await open_serial(self.handler, self.settings, **options)
        except ConnectError as exc:
            self.failed_opens += 1
            self.state = "reopening"
            self.last_error = str(exc)
            if self.last_error != self._logged_error:
                self._logged_error = self.last_error
                logger.warning("%s: cannot open (%s); retrying", self.name, exc)
            return False
        if self.opens:
            self.reopens += 1
        self.opens += 1
        link.reopens = self.reopens
        self.link = link
        self.state = "open"
        self.closed_since = None
        self._logged_error = ""
        self._opened.set()
        logger.info("%s: open at %d baud", self.name, self.settings.baud)
        return True

    async def run(self, opened: bool = False) -> None:
        """Keep the port open until cancelled (the gateway stops); ``opened``: it is already."""
        first = opened

        async def open_link() -> SerialLink | None:
            nonlocal first
            if first:
                first = False
                return self.link
            return self.link if await self.open_once() else None

        try:
            await keep_open(open_link, self._serve, self.backoff)
        finally:
            self.state = "closed"
            if self.link is not None:
                self.link.close()

    async def _serve(self, link: SerialLink) -> bool:
        """Wait until the open port is lost; always asks for a reopen."""
        await link.closed.wait()
        self._opened.clear()
        self.state = "reopening"
        self.closed_since = time.monotonic()
        self.last_error = str(link.error) if link.error else "closed"
        logger.warning("%s: port lost (%s); reopening", self.name, self.last_error)
        return True

    async def wait_open(self, timeout: float) -> None:
        """Wait until the port is open (for tests and start-up); raises TimeoutError."""
        await asyncio.wait_for(self._opened.wait(), timeout)

    def report(self) -> list[dict[str, Any]]:
        """``$gateway links`` row while the port has no live link (closed or reopening)."""
        link = self.link
        if self.state == "open" and link is not None and not link.closed.is_set():
            return []  # the session row already shows this port
        stats = link.stats() if link is not None else {}
        if self.signed is not None:
            stats.update(self.signed.stats())
        if self.reliable is not None:
            stats.update(self.reliable.stats())
        return [
            {
                "link": self.name,
                "state": self.state,
                "peer": "",
                "senders": [],
                **stats,
                "port": self.settings.port,
                "baud": self.settings.baud,
                "port_state": self.state,
                "reopens": self.reopens,
                "failed_opens": self.failed_opens,
                "last_error": self.last_error,
                "closed_for_s": (
                    round(time.monotonic() - self.closed_since, 1) if self.closed_since else None
                ),
            }
        ]


async def open_serial_links(
    router: Any, specs: Iterable[str | Mapping[str, Any]], *, backoff: Backoff = SERIAL_BACKOFF
) -> list[SerialPort]:
    """Start one supervisor per port on ``router`` (a ServerRouter).

    Every spec is checked first (SerialSpecError names the bad one). Each port
    is tried once before this returns, so a missing device is logged at start-up;
    the supervisor keeps retrying it in the background either way.
    """
    specs = list(specs)
    ports = [SerialPort(router, s, backoff) for s in parse_specs(specs)]
    bind_ports(router, specs)
    for port in ports:
        opened = await port.open_once()
        router.core.add_link_reporter(port.report)
        router.spawn(port.run(opened), f"sig-serial-{port.settings.port}")
    return ports
