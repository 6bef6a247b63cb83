"""Serial carrier: a UART (or any pyserial URL) carrying sig frames.

The port is opened with pyserial and driven by pyserial-asyncio's transport;
the bytes are framed by the same :class:`~carriers.stream.StreamLink` as TCP,
with ``persistent=True``: on a UART the link outlives sessions, line noise is
counted rather than fatal, and the gateway sends INVITE whenever the port is
(re)opened.

When the port vanishes (USB adapter unplugged, pty whose other side died)
pyserial raises on the next read: ``os.read`` fails with EIO, or the device
reports readable but returns no data. pyserial-asyncio then closes the
transport and calls ``connection_lost`` with that exception; the link hands a
:class:`sig.errors.ReadError` (its cause the pyserial exception) to the
handler and sets ``link.closed``, which is what the supervisor in
:mod:`sig.routers.serial` waits on before it reopens the port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import serial
import serial_asyncio

from sig.errors import ConnectError, ReadError

from .stream import FrameHandler, S, StreamLink
from .tcp import describe, map_exceptions

logger = logging.getLogger(__name__)

DEFAULT_BAUD = 115200
PARITIES = {
    "N": serial.PARITY_NONE,
    "E": serial.PARITY_EVEN,
    "O": serial.PARITY_ODD,
    "M": serial.PARITY_MARK,
    "S": serial.PARITY_SPACE,
}
STOPBITS = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE, 2: serial.STOPBITS_TWO}
BYTESIZES = (5, 6, 7, 8)
#: Keys a ``[[serial]]`` table may hold.
SPEC_KEYS = frozenset(
    {"port", "baud", "parity", "stopbits", "bytesize", "rtscts", "exclusive", "name", "key_file"}
    | {"reliable", "retransmit_ms"}
)
#: How a ``--serial`` spec names the port's key file: ``PATH[:BAUD],key_file=FILE``.
KEY_FILE_OPTION = ",key_file="
#: The options a ``--serial`` spec may add after the port: ``,key_file=FILE``,
#: ``,reliable=0|1``, ``,retransmit_ms=N`` (the reliable UART mode, PROTOCOL.md section 5).
_TEXT_OPTION = re.compile(r",(key_file|reliable|retransmit_ms)=")
#: Longest initial retransmission timeout a port takes (the RTO backs off to 8 times it).
MAX_RETRANSMIT_MS = 10_000


@dataclass(frozen=True)
class SerialSettings:
    """How to open one port. ``port`` is a device path or a pyserial URL."""

    port: str
    baud: int = DEFAULT_BAUD
    parity: str = "N"
    stopbits: float = 1
    bytesize: int = 8
    rtscts: bool = False
    #: Lock the port (flock) so a second program cannot open it by mistake.
    exclusive: bool = True
    #: Link name shown in ``sig links``; default ``serial:<port>``.
    name: str = ""
    #: File holding the port's signing key (PROTOCOL.md section 5); "" = unsigned.
    #: The key itself never goes in the config: configs are shared, pasted and
    #: committed, while a key file can be mode 0600 and replaced on its own.
    key_file: str = ""
    #: Grant the reliable UART mode (PROTOCOL.md section 5) to a device that asks.
    reliable: bool = True
    #: The reliable mode's initial retransmission timeout, milliseconds.
    retransmit_ms: int = 200

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("serial port path is empty")
        if isinstance(self.baud, bool) or not isinstance(self.baud, int) or self.baud <= 0:
            raise ValueError(
                f"serial {self.port}: baud must be a positive integer, not {self.baud!r}"
            )
        if self.parity not in PARITIES:
            raise ValueError(
                f"serial {self.port}: parity must be one of {', '.join(PARITIES)}, "
                f"not {self.parity!r}"
            )
        if self.stopbits not in STOPBITS:
            raise ValueError(
                f"serial {self.port}: stopbits must be 1, 1.5 or 2, not {self.stopbits!r}"
            )
        if self.bytesize not in BYTESIZES:
            raise ValueError(f"serial {self.port}: bytesize must be 5..8, not {self.bytesize!r}")
        for flag in ("rtscts", "exclusive", "reliable"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"serial {self.port}: {flag} must be true or false")
        ms = self.retransmit_ms
        if isinstance(ms, bool) or not isinstance(ms, int) or not 1 <= ms <= MAX_RETRANSMIT_MS:
            raise ValueError(
                f"serial {self.port}: retransmit_ms must be an integer 1..{MAX_RETRANSMIT_MS},"
                f" not {ms!r}"
            )

    @property
    def link_name(self) -> str:
        return self.name or f"serial:{self.port}"

    @classmethod
    def from_spec(cls, spec: str | Mapping[str, Any]) -> SerialSettings:
        """Parse ``"PATH[:BAUD]"`` (command line) or a ``[[serial]]`` table (config).

        Raises ValueError with a one-line message naming what is wrong.
        """
        if isinstance(spec, str):
            return cls._from_text(spec)
        if not isinstance(spec, Mapping):
            raise ValueError(f"serial spec must be 'PATH[:BAUD]' or a table, not {spec!r}")
        return cls._from_table(spec)

    @classmethod
    def _from_text(cls, spec: str) -> SerialSettings:
        """``PATH``, ``PATH:BAUD``, or a pyserial URL (``socket://host:port[:BAUD]``),
        each optionally followed by ``,key_file=FILE``, ``,reliable=0|1`` and
        ``,retransmit_ms=N``."""
        port, *pairs = _TEXT_OPTION.split(spec)
        options: dict[str, Any] = {}
        for key, value in zip(pairs[::2], pairs[1::2], strict=True):
            if key in options:
                raise ValueError(f"serial spec {port!r}: {key}= given twice")
            options[key] = _text_option(port, key, value)
        settings = cls._from_port_text(port)
        return dataclasses.replace(settings, **options) if options else settings

    @classmethod
    def _from_port_text(cls, spec: str) -> SerialSettings:
        """``PATH``, ``PATH:BAUD``, or a pyserial URL (``socket://host:port[:BAUD]``)."""
        path, sep, baud_text = spec.rpartition(":")
        if "://" in spec and spec.split("://", 1)[1].count(":") < 2:
            sep = ""  # a URL such as socket://host:port, without a baud
        if not sep:
            return cls(spec)
        if not baud_text.isdigit():
            raise ValueError(f"serial spec {spec!r}: baud {baud_text!r} is not a number")
        if not path:
            raise ValueError(f"serial spec {spec!r}: no port path before ':'")
        return cls(path, int(baud_text))

    @classmethod
    def _from_table(cls, spec: Mapping[str, Any]) -> SerialSettings:
        """A ``[[serial]]`` table: known keys only, a port string, defaults for the rest."""
        unknown = set(spec) - SPEC_KEYS
        if unknown:
            raise ValueError(
                f"[[serial]] {spec.get('port', '?')}: unknown key(s) {', '.join(sorted(unknown))}"
                f" (known: {', '.join(sorted(SPEC_KEYS))})"
            )
        if not isinstance(spec.get("port"), str):
            raise ValueError('[[serial]] table without a port = "/dev/..." string')
        parity = spec.get("parity", "N")
        return cls(
            port=spec["port"],
            baud=spec.get("baud", DEFAULT_BAUD),
            parity=parity.upper() if isinstance(parity, str) else parity,
            stopbits=spec.get("stopbits", 1),
            bytesize=spec.get("bytesize", 8),
            rtscts=spec.get("rtscts", False),
            exclusive=spec.get("exclusive", True),
            name=str(spec.get("name", "")),
            key_file=_key_file(spec),
            reliable=spec.get("reliable", True),
            retransmit_ms=spec.get("retransmit_ms", 200),
        )


def _text_option(port: str, key: str, value: str) -> Any:
    """One ``,key=value`` of a ``--serial`` spec, as SerialSettings takes it."""
    if key == "key_file":
        if not value:
            raise ValueError(f"serial spec {port!r}: key_file= names no file")
        return value
    if key == "reliable":
        if value not in ("0", "1", "true", "false"):
            raise ValueError(f"serial spec {port!r}: reliable= must be 0 or 1, not {value!r}")
        return value in ("1", "true")
    if not value.isdigit():
        raise ValueError(f"serial spec {port!r}: retransmit_ms= must be a number, not {value!r}")
    return int(value)


def _key_file(spec: Mapping[str, Any]) -> str:
    """The table's ``key_file`` (a path string), or ""."""
    key_file = spec.get("key_file", "")
    if not isinstance(key_file, str):
        raise ValueError(f"[[serial]] {spec['port']}: key_file must be a path string")
    return key_file


class SerialLink(StreamLink[S]):
    """A StreamLink on a serial port: persistent, with the port's settings in its stats."""

    def __init__(self, handler: FrameHandler[S], settings: SerialSettings, **options: Any) -> None:
        super().__init__(handler, name=settings.link_name, persistent=True, **options)
        self.settings = settings
        #: Set by the supervisor: how often the port was reopened after it was lost.
        self.reopens = 0
        #: Why the port closed (None: closed by us).
        self.error: BaseException | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if exc is not None and not isinstance(exc, ReadError):
            mapped = ReadError(f"{self.settings.port}: {describe(exc)}")
            mapped.__cause__ = exc
            exc = mapped
        self.error = exc
        super().connection_lost(exc)

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "port": self.settings.port,
            "baud": self.settings.baud,
            "port_state": "closed" if self.closed.is_set() else "open",
            "reopens": self.reopens,
        }


class _SerialTransport(serial_asyncio.SerialTransport):  # type: ignore[misc]
    """pyserial-asyncio's transport, minus the traceback it logs on a dead port.

    A failed write (EIO after an unplug) is an ordinary event for a UART
    gateway; the link reports it through ``connection_lost`` like a failed read.
    """

    def _fatal_error(self, exc: BaseException, message: str = "") -> None:
        logger.debug("%s: %s", message or "serial transport error", exc)
        self._abort(exc)


async def open_serial(
    handler: FrameHandler[S], settings: SerialSettings, **link_options: Any
) -> SerialLink[S]:
    """Open the port and start framing; raises sig.ConnectError if it cannot be opened."""
    loop = asyncio.get_running_loop()
    link = SerialLink(handler, settings, **link_options)
    with map_exceptions({serial.SerialException: ConnectError, OSError: ConnectError}):
        port = serial.serial_for_url(
            settings.port,
            baudrate=settings.baud,
            parity=PARITIES[settings.parity],
            stopbits=STOPBITS[settings.stopbits],
            bytesize=settings.bytesize,
            rtscts=settings.rtscts,
            exclusive=settings.exclusive,
            timeout=0,
        )
    try:
        _SerialTransport(loop, link, port)
    except BaseException:
        port.close()
        raise
    logger.debug("opened %s at %d baud", settings.port, settings.baud)
    return link
