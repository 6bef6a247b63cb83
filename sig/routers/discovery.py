"""Find gateways on the LAN: mDNS / DNS-SD (RFC 6762 / RFC 6763) as ``_sig._tcp``.

The gateway side (:class:`Advertiser`) publishes one service instance named
after the gateway, on exactly the addresses its TCP server listens on, and
never on loopback: a gateway bound to 127.0.0.1 is not reachable from the LAN,
so advertising it there would only mislead. Nothing here may stop a gateway:
no multicast, no interface or a bad name costs one log line and discovery,
never the gateway.

The client side (:func:`discover_async`, :func:`discover`) browses for
``_sig._tcp``, resolves each instance (SRV, TXT, A/AAAA) and returns what it
found. Every answer comes from an untrusted LAN, so the number of instances
resolved is bounded and a malformed TXT record drops that instance only.

The TXT record format is specified in PROTOCOL.md ("Discovery").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import InterfaceChoice, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from sig.errors import ConnectError, SigError
from sig.protocol.messages import PROTOCOL_VERSION

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_sig._tcp.local."
TXT_VERSION = "1"  #: ``txtvers``: the version of the TXT record format itself (RFC 6763 §6.7)
MAX_INSTANCE = 63  #: bytes of a DNS-SD instance label (RFC 6763 §4.1.1)
MAX_TXT_STRING = 255  #: bytes of one TXT string, ``key=value`` (RFC 6763 §6.1)
#: Instances one discovery resolves at most: any LAN host can advertise any number.
MAX_GATEWAYS = 32
DEFAULT_TIMEOUT = 3.0  #: seconds :func:`discover` browses
STOP_TIMEOUT = 3.0  #: seconds the goodbye packets may take at shutdown


@dataclass(frozen=True)
class DiscoveredGateway:
    """One gateway found on the LAN."""

    #: The gateway's name (its TXT ``name``; the instance label if it sent none).
    name: str
    #: Its addresses, IPv4 first; a link-local IPv6 one carries ``%scope``.
    addresses: tuple[str, ...]
    port: int
    #: Whether it expects TLS on ``port`` (TXT ``tls=1``).
    tls: bool
    #: The sig protocol version it speaks (TXT ``proto``).
    version: int
    #: The DNS-SD instance label (``name`` unless renamed after a clash on the LAN).
    instance: str

    @property
    def host(self) -> str:
        """The address a client connects to: the first one."""
        return self.addresses[0]


# --- the records (pure functions) --------------------------------------------


def _truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    return text.encode()[:limit].decode(errors="ignore")


def instance_label(name: str) -> str:
    """The DNS-SD instance label for a gateway name: the name, cut to 63 bytes."""
    return _truncate_utf8(name, MAX_INSTANCE) or "sig-gateway"


def txt_properties(name: str, *, tls: bool, version: int = PROTOCOL_VERSION) -> dict[str, str]:
    """The TXT record of a gateway (PROTOCOL.md "Discovery"), ``txtvers`` first."""
    return {
        "txtvers": TXT_VERSION,
        "proto": str(version),
        "tls": "1" if tls else "0",
        "name": _truncate_utf8(name, MAX_TXT_STRING - len("name=")),
    }


def parse_txt(properties: dict[str, str | None]) -> tuple[str | None, bool, int]:
    """``(name, tls, version)`` from a decoded TXT record; ValueError if it is not ours."""
    if properties.get("txtvers") != TXT_VERSION:
        raise ValueError(f"txtvers {properties.get('txtvers')!r} is not {TXT_VERSION}")
    proto = properties.get("proto") or ""
    if not proto.isdigit() or len(proto) > 5:
        raise ValueError(f"proto {proto!r} is not a version number")
    tls = properties.get("tls")
    if tls not in ("0", "1"):
        raise ValueError(f"tls {tls!r} is neither 0 nor 1")
    return properties.get("name") or None, tls == "1", int(proto)


def advertised_addresses(bound: Iterable[str], interface_ips: Iterable[str]) -> list[str]:
    """The addresses to publish for listening sockets bound to ``bound``.

    A wildcard (``0.0.0.0``, ``::``) stands for every interface address of its
    family; loopback, unspecified and IPv6 link-local addresses are never
    published (a LAN peer cannot use them), so a loopback-only gateway gets
    none. asyncio binds ``::`` with IPV6_V6ONLY, so ``::`` means IPv6 only.
    """
    local = [ipaddress.ip_address(ip) for ip in interface_ips]
    chosen: list[str] = []
    for text in bound:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
        candidates = [ip for ip in local if ip.version == addr.version]
        for ip in candidates if addr.is_unspecified else [addr]:
            if ip.is_loopback or ip.is_unspecified or (ip.version == 6 and ip.is_link_local):
                continue
            if str(ip) not in chosen:
                chosen.append(str(ip))
    return chosen


def interface_addresses() -> list[str]:
    """Every address of this host's interfaces (IPv6 without its scope)."""
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            out.append(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return out


def server_name() -> str:
    """The SRV target host name: ``sig-<hostname>.local.``.

    Not the bare host name, which Avahi or mDNSResponder on the same host
    already own with all the host's addresses: publishing it with a subset
    would look like a name conflict to them.
    """
    label = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().split(".")[0].lower())
    return f"sig-{label.strip('-')[:50] or 'host'}.local."


def gateway_from_info(info: ServiceInfo) -> DiscoveredGateway:
    """A resolved instance as a :class:`DiscoveredGateway`; ValueError if unusable."""
    name, tls, version = parse_txt(info.decoded_properties)
    addresses = info.parsed_scoped_addresses()
    if not addresses or not info.port:
        raise ValueError("no address or no port")
    addresses.sort(key=lambda a: ":" in a)  # IPv4 first, stable otherwise
    instance = info.name[: -len(SERVICE_TYPE) - 1] if info.name.endswith(SERVICE_TYPE) else ""
    return DiscoveredGateway(
        name=name or instance,
        addresses=tuple(addresses),
        port=info.port,
        tls=tls,
        version=version,
        instance=instance,
    )


# --- opening zeroconf ----------------------------------------------------------


@contextlib.contextmanager
def _zeroconf_quiet() -> Iterator[None]:
    """Hold back zeroconf's own log lines while it opens its sockets.

    A failure there is reported once, by us, with the reason (:func:`_reason`);
    zeroconf would add a second line for the same thing.
    """
    zeroconf_log = logging.getLogger("zeroconf")

    def drop(record: logging.LogRecord) -> bool:
        return False

    zeroconf_log.addFilter(drop)
    try:
        yield
    finally:
        zeroconf_log.removeFilter(drop)


def _reason(exc: BaseException) -> str:
    """The error text for the one log line, with the usual cause of EADDRINUSE."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            f"{exc}: another mDNS stack holds UDP port 5353 and does not share it"
            " (avahi-daemon: set disallow-other-stacks=no)"
        )
    return str(exc) or type(exc).__name__


def open_zeroconf(interfaces: Sequence[str] | InterfaceChoice) -> AsyncZeroconf:
    """An AsyncZeroconf on ``interfaces``; OSError (after no log line) if it cannot."""
    with _zeroconf_quiet():
        return AsyncZeroconf(
            interfaces=list(interfaces) if isinstance(interfaces, Sequence) else interfaces
        )


# --- the gateway side ---------------------------------------------------------


class Advertiser:
    """Publishes one gateway as ``_sig._tcp``; :meth:`start` and :meth:`stop` never raise."""

    def __init__(self, name: str, port: int, bound: Sequence[str], *, tls: bool = False) -> None:
        self.name = name
        self.port = port
        self.bound = list(bound)
        self.tls = tls
        #: The addresses published (empty: not advertising).
        self.addresses: list[str] = []
        self._zc: AsyncZeroconf | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Start advertising in the background; False (and one log line) if it cannot."""
        try:
            self.addresses = advertised_addresses(self.bound, interface_addresses())
            if not self.addresses:
                logger.info("discovery: not advertising on the LAN: %s", self._why_not())
                return False
            info = ServiceInfo(
                SERVICE_TYPE,
                f"{instance_label(self.name)}.{SERVICE_TYPE}",
                port=self.port,
                properties=txt_properties(self.name, tls=self.tls),
                server=server_name(),
                parsed_addresses=self.addresses,
            )
            self._zc = open_zeroconf(self.addresses)
        except Exception as exc:  # no multicast, no interface, odd name: the gateway carries on
            logger.warning(
                "discovery: cannot advertise (%s); the gateway runs without it", _reason(exc)
            )
            await self._close()
            return False
        self._task = asyncio.create_task(self._register(info), name="sig-discovery")
        return True

    def _why_not(self) -> str:
        """Why there is no address to publish, for the one log line."""
        bound = ", ".join(self.bound) or "nothing"
        if all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in self.bound):
            return f"the gateway listens on loopback only ({bound}); --host 0.0.0.0 to be found"
        return f"no LAN address on this host for {bound}"

    async def _register(self, info: ServiceInfo) -> None:
        """Probe for the name (renamed ``name-2`` on a clash), then announce."""
        assert self._zc is not None
        try:
            announced = await self._zc.async_register_service(info, allow_name_change=True)
            await announced
        except Exception as exc:
            logger.warning(
                "discovery: cannot advertise (%s); the gateway runs without it", _reason(exc)
            )
            return
        logger.info(
            "discovery: advertising %r as %s on %s port %d",
            self.name,
            info.name,
            ", ".join(self.addresses),
            self.port,
        )

    async def stop(self) -> None:
        """Withdraw the service (goodbye packets, bounded) and close the sockets."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._close()

    async def _close(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            await asyncio.wait_for(zc.async_close(), STOP_TIMEOUT)
        except Exception as exc:
            logger.warning("discovery: closing the advertiser failed (%s)", exc)


# --- the client side ------------------------------------------------------------


async def discover_async(
    timeout: float = DEFAULT_TIMEOUT, *, limit: int | None = None
) -> list[DiscoveredGateway]:
    """Gateways on the LAN, in the order they answered.

    Browses for ``timeout`` seconds, or until ``limit`` gateways are resolved.
    Raises :class:`sig.ConnectError` if this host cannot do multicast at all.
    """
    return await _browse(timeout, limit, lambda gateway: True)


async def _browse(
    timeout: float, limit: int | None, accept: Callable[[DiscoveredGateway], bool]
) -> list[DiscoveredGateway]:
    """:func:`discover_async`, keeping only the gateways ``accept`` takes."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: list[DiscoveredGateway] = []
    enough = asyncio.Event()
    seen: set[str] = set()
    pending: set[asyncio.Task[None]] = set()
    try:
        aiozc = open_zeroconf(InterfaceChoice.All)
    except OSError as exc:
        raise ConnectError(f"cannot browse for sig gateways: {_reason(exc)}") from exc

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        left_ms = max(1.0, (deadline - loop.time()) * 1000)
        try:
            if not await info.async_request(aiozc.zeroconf, left_ms):
                return
            gateway = gateway_from_info(info)
        except Exception as exc:  # an untrusted answer: drop this instance only
            logger.debug("discovery: ignoring %r: %s", name, exc)
            return
        if not accept(gateway):
            logger.info(
                "discovery: skipping %r (tls %s, protocol %d)", name, gateway.tls, gateway.version
            )
            return
        found.append(gateway)
        if limit is not None and len(found) >= limit:
            enough.set()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is not ServiceStateChange.Added or name in seen:
            return
        if len(seen) >= MAX_GATEWAYS:
            logger.debug("discovery: more than %d instances; ignoring %r", MAX_GATEWAYS, name)
            return
        seen.add(name)
        task = loop.create_task(resolve(name))
        pending.add(task)
        task.add_done_callback(pending.discard)

    browser = AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(enough.wait(), timeout)
    finally:
        await browser.async_cancel()
        for task in list(pending):
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await aiozc.async_close()
    return found[:limit]


def discover(
    timeout: float = DEFAULT_TIMEOUT, *, limit: int | None = None
) -> list[DiscoveredGateway]:
    """Blocking :func:`discover_async`, for scripts (not from inside an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(discover_async(timeout, limit=limit))
    raise SigError("sig.discover() blocks; in asyncio code use await sig.discover_async()")


def usable(gateway: DiscoveredGateway, tls: bool = False) -> bool:
    """Whether a client can talk to ``gateway``: our protocol version, and TLS
    (TXT ``tls=1``) exactly when the client speaks TLS."""
    return gateway.version == PROTOCOL_VERSION and gateway.tls == tls


async def find_gateway(timeout: float, *, tls: bool = False) -> DiscoveredGateway:
    """The first usable gateway that answers (a TLS one for a TLS client);
    :class:`sig.ConnectError` if none does in time."""
    found = await _browse(timeout, 1, lambda gateway: usable(gateway, tls))
    if not found:
        raise ConnectError(f"no sig gateway found on the LAN within {timeout:g} s")
    return found[0]
