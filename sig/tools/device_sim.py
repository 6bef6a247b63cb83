"""``sig device-sim``: a UART device emulator, written from PROTOCOL.md alone.

It behaves like a microcontroller running the device side of the protocol:
it uses the codec (:mod:`sig.protocol`) and
nothing of the gateway's session layer, so it checks the gateway against the
spec rather than against itself.

What it does (PROTOCOL.md section 3):

* opens its port (reopening it every ``reopen_delay`` s if it vanishes), sends
  a lone 0x00 to flush a partial frame at the gateway, then HELLO; HELLO is
  repeated every keepalive until WELCOME arrives;
* after WELCOME registers one sender (``--sender``) with its events, the
  request method ``get_temp`` and a default handler, and one LISTEN per
  ``--listen SENDER:EVENT`` (either side may be empty: a wildcard);
* answers REQUESTs: ``get_temp`` returns the temperature; any other method goes
  to the default handler, which returns ``{"method": m, "params": p}``, except
  methods starting with ``hang``, which it never answers (to test SENDER_GONE);
* triggers every declared event each ``--interval`` seconds (0: never) with
  ``{"n": tick, "value": temperature}``; makes requests to other senders
  (``--request SENDER:METHOD`` after each registration, or :meth:`request`);
* sends PING after ``keepalive`` of its own silence, answers PING with PONG;
* starts over with HELLO on INVITE, on ERROR(NO_SESSION), and after 3 x the
  agreed keepalive without any valid frame from the gateway.

Output: one line per notable thing, ``<name> <KIND> key=value ...`` where every
value is JSON (strings quoted), e.g.::

    sensor1 OPEN port="/dev/ttyUSB0" baud=115200
    sensor1 HELLO reason="open"
    sensor1 WELCOME gateway="sig-gateway" keepalive_ms=1000 max_body=65535
    sensor1 REGISTERED sender="sensor1"
    sensor1 ERROR code="DUPLICATE_SENDER" ref=1 message="..."

Kinds: OPEN, PORT_ERROR, PORT_LOST, HELLO, WELCOME, REGISTERED, LISTENING,
TRIGGER (only when ``verbose``), EVENT, EVENT_DROPPED, REQUEST, RESPONSE,
ERROR, BAD_FRAME, AUTH_DROP, INVITE, TIMEOUT, STOPPED.

With a key (``--key-file``) every frame is signed and checked as PROTOCOL.md
section 5 says (:mod:`sig.tools.device_signing`); a frame that fails is
dropped, counted (``auth_failed``, ``replayed``, ``unsigned`` in
``signing.counts``) and recorded as AUTH_DROP. Tests read the same records as
``(kind, fields)`` tuples in :attr:`DeviceSim.records`.

With ``--reliable`` it asks for the reliable UART mode (PROTOCOL.md section 5,
:mod:`sig.tools.device_reliable`): when granted, its registrations, requests
and responses, and the triggers of ``--reliable-events`` (default: all its
events), are sequenced, acknowledged and retransmitted; after 16
retransmissions in vain it starts over with HELLO (reason "reliable").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import serial
import serial_asyncio

from sig.errors import (
    DecodeError,
    EncodeError,
    ErrorCode,
    NotConnectedError,
    RemoteProtocolError,
    RequestTimeout,
    request_error_for,
)
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack
from sig.protocol.frame import FrameDecoder, encode_frame
from sig.routers.retry import Backoff, keep_open
from sig.tools import device_reliable
from sig.tools.device_signing import DeviceSigning, read_key_file

logger = logging.getLogger(__name__)

DEVICE_MAX_BODY = 512  #: what the emulated device announces it can receive
TICK = 0.02  #: seconds between timer checks (keepalive, HELLO retry, triggers)

Record = tuple[str, dict[str, Any]]
Pair = tuple[str | None, str | None]


def matches(listen: Pair, sender: str, event: str) -> bool:
    """PROTOCOL.md section 4: does LISTEN ``(sender, event)`` match this event?"""
    s, e = listen
    if s is not None:
        return s == sender and (e is None or e == event)
    if e is not None:
        return e.startswith("#") and e == event
    return True


def _code_name(code: int) -> str:
    """Name of a wire error code; unknown codes (a newer gateway) as their number."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


#: The message type numbers, to name an ERROR's ``about`` in the log.
_TYPES = frozenset(int(t) for t in w.MessageType)


def _fmt(value: Any) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False, separators=(",", ":"))


class _PortProtocol(asyncio.Protocol):
    """Bytes from the port into frames; tells the device when the port dies."""

    def __init__(self, on_frame: Callable[[bytes], None]) -> None:
        self.on_frame = on_frame
        self.decoder = FrameDecoder(DEVICE_MAX_BODY)
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.Event()
        self.error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for body in self.decoder.feed(data):
            self.on_frame(body)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.error = exc
        self.lost.set()


class _QuietTransport(serial_asyncio.SerialTransport):  # type: ignore[misc]
    def _fatal_error(self, exc: BaseException, message: str = "") -> None:
        self._abort(exc)


class RecordLog:
    """What the device reports: one ``<name> <KIND> key=value ...`` line per record.

    Tests read the same records as ``(kind, fields)`` tuples and wait for them.
    """

    def __init__(self, name: str, out: Callable[[str], None] | None) -> None:
        self.name = name
        self.out = out
        #: Everything notable, in order: (kind, fields).
        self.records: list[Record] = []
        self._changed = asyncio.Event()

    def _emit(self, kind: str, **fields: Any) -> None:
        self.records.append((kind, fields))
        self._changed.set()
        self._changed = asyncio.Event()
        line = " ".join([self.name, kind, *(f"{k}={_fmt(v)}" for k, v in fields.items())])
        if self.out is not None:
            self.out(line)
        logger.debug("%s", line)

    def find(self, kind: str, since: int = 0, **fields: Any) -> list[Record]:
        """Records of ``kind`` (from index ``since``) whose fields equal ``fields``."""
        return [
            r
            for r in self.records[since:]
            if r[0] == kind and all(r[1].get(k) == v for k, v in fields.items())
        ]

    async def wait_for(
        self, kind: str, timeout: float = 5.0, since: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """Wait for a record; raises TimeoutError (showing the last records) if none comes."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(kind, since, **fields)
            if found:
                return found[0][1]
            left = deadline - time.monotonic()
            if left <= 0:
                tail = "; ".join(f"{k} {f}" for k, f in self.records[-8:])
                raise TimeoutError(f"{self.name}: no {kind} {fields} within {timeout} s ({tail})")
            changed = self._changed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), left)


class _Port:
    """The device's serial port, kept open by :func:`sig.routers.retry.keep_open`.

    It opens the port, runs the device's session on it until the port goes
    away, and opens it again after ``reopen_delay`` seconds (also between
    failed attempts: a device retries at a steady pace, it does not back off).
    """

    def __init__(self, device: _Session, url: str, baud: int, reopen_delay: float) -> None:
        self.device = device
        self.url = url
        self.baud = baud
        self.backoff = Backoff(reopen_delay, reopen_delay, factor=1.0, jitter=0.0)
        self.proto: _PortProtocol | None = None
        self._last_error = ""

    async def run(self) -> None:
        """Open, serve, reopen, until cancelled."""
        await keep_open(self._open_once, self._serve, self.backoff)

    def write(self, data: bytes) -> bool:
        """Write to the port if it is open; False (nothing written) if it is not."""
        proto = self.proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return False
        proto.transport.write(data)
        return True

    async def _open_once(self) -> _PortProtocol | None:
        """The open port, or None (reported once per distinct error) if it cannot be opened."""
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0, exclusive=True)
            proto = _PortProtocol(self.device._on_frame)
            _QuietTransport(asyncio.get_running_loop(), proto, port)
            await asyncio.sleep(0)  # let connection_made run
        except (serial.SerialException, OSError, ValueError) as exc:
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                self.device._emit("PORT_ERROR", port=self.url, error=self._last_error)
            return None
        self._last_error = ""
        return proto

    async def _serve(self, proto: _PortProtocol) -> bool:
        """Run the device's session on the open port until it closes; True: reopen it."""
        self.proto = proto
        device = self.device
        device._port_opened()
        ticker = asyncio.create_task(device._timer(), name=f"device-sim-{device.name}-timer")
        try:
            await proto.lost.wait()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if proto.transport is not None:
                proto.transport.close()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proto.lost.wait(), 1.0)
            self.proto = None
            device._set_down()
        device._emit("PORT_LOST", error=str(proto.error) if proto.error else "closed")
        return True


class _Session(RecordLog):
    """The device side of one session (PROTOCOL.md section 3), whatever the device offers.

    HELLO until WELCOME, then the device's registrations; PING after a
    keepalive of its own silence, PONG to every PING; HELLO again on INVITE, on
    ERROR(NO_SESSION) and after 3 keepalives without a valid frame; requests to
    other senders and their responses. Frames go to a handler per message
    type (``_handlers``), which the device extends with its own.
    """

    def __init__(
        self,
        name: str,
        keepalive_ms: int,
        out: Callable[[str], None] | None,
        key: bytes | None = None,
        reliable: bool = False,
    ) -> None:
        super().__init__(name, out)
        self.keepalive_ms = keepalive_ms
        #: The reliable UART mode (PROTOCOL.md section 5), asked for when ``reliable``.
        self.rel = device_reliable.DeviceReliable(reliable, self._write_body)
        #: Signs what the device sends and checks what it gets (PROTOCOL.md section 5).
        self.signing = DeviceSigning(key) if key is not None else None
        #: "down" (no port), "hello" (waiting for WELCOME), "open" (session up).
        self.state = "down"
        self.registered = False
        self.counters = {"frames_in": 0, "frames_out": 0, "triggers": 0, "not_sent": 0}
        self._port: _Port | None = None
        self._keepalive_s = keepalive_ms / 1000 or 1.0
        self._last_rx = self._last_tx = self._hello_at = 0.0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[w.Response]] = {}
        self._handlers: dict[w.MessageType, Callable[[Any], None]] = {
            w.MessageType.PING: lambda msg: self._send(w.Pong(msg.token)),
            w.MessageType.PONG: lambda msg: None,
            w.MessageType.INVITE: self._on_invite,
            w.MessageType.WELCOME: self._on_welcome,
            w.MessageType.ERROR: self._on_error,
            w.MessageType.RESPONSE: self._on_response,
            w.MessageType.ACK: self.rel.stray_ack,
        }

    # --- what the device adds ----------------------------------------------

    def _register(self) -> None:
        """Send the device's registrations (the session just opened)."""

    def _periodic(self, now: float) -> None:
        """Called every TICK while the port is open."""

    # --- the port's calls ---------------------------------------------------

    def _port_opened(self) -> None:
        """A fresh port: flush a partial frame at the gateway, then HELLO."""
        assert self._port is not None
        self._emit("OPEN", port=self._port.url, baud=self._port.baud)
        self._write(b"\x00")
        self._start_over("open")

    def _set_down(self) -> None:
        self.rel.reset()
        self.state = "down"
        self.registered = False
        self._fail_pending("the port closed")

    async def _timer(self) -> None:
        """HELLO retry, keepalive, link timeout, and the device's periodic work."""
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            if self.state == "hello" and now - self._hello_at >= self._keepalive_s:
                self._start_over("no-welcome")
            elif self.state == "open":
                self._keepalive(now)
                if self.rel.poll(now):
                    self._start_over("reliable")
            self._periodic(now)

    def _keepalive(self, now: float) -> None:
        """Start over after 3 keepalives of silence from the gateway; PING after 1 of ours."""
        ka = self._keepalive_s
        if now - self._last_rx > 3 * ka:
            self._emit("TIMEOUT", silent_s=round(now - self._last_rx, 2))
            self._start_over("timeout")
        elif now - self._last_tx >= ka:
            self._send(w.Ping(next(self._ids) & 0xFFFF))

    # --- session ----------------------------------------------------------

    def _start_over(self, reason: str) -> None:
        self.rel.reset()
        self.state = "hello"
        self.registered = False
        self._fail_pending(f"session restarted ({reason})")
        now = time.monotonic()
        self._hello_at = now
        self._last_rx = now
        features = w.Feature.AUTH if self.signing is not None else w.Feature.NONE
        features |= self.rel.features
        self._send(w.Hello(self.name, DEVICE_MAX_BODY, self.keepalive_ms, features=features))
        self._emit("HELLO", reason=reason)

    def _on_frame(self, body: bytes) -> None:
        """One frame from the gateway: decode it and hand it to its type's handler."""
        if self.signing is not None:
            plain, why = self.signing.unseal(body, self.state == "hello")
            if plain is None:
                self._emit("AUTH_DROP", error=why)
                return
            body = plain
        self._last_rx = time.monotonic()
        self.counters["frames_in"] += 1
        try:
            seen = self.rel.receive(body, self._last_rx)
            if seen is None:
                return  # an ACK, a duplicate or a gap: the reliable layer's own
            msg = w.decode(body := seen)
        except RemoteProtocolError as exc:
            self._emit("BAD_FRAME", code=exc.code.name, error=str(exc))
            answer = w.error_answer(body, RemoteProtocolError(str(exc)[:100], exc.code))
            if answer is not None:  # an ERROR is never answered
                self._send(answer)
            return
        handler = self._handlers.get(msg.TYPE)
        if handler is None:  # what only a device sends (HELLO, TRIGGER, ...)
            self._send(w.Error(ErrorCode.UNKNOWN_TYPE, body[0], "not sent to a device", msg.TYPE))
        else:
            handler(msg)

    def _on_invite(self, msg: w.Invite) -> None:
        """HELLO again, unless one waits for its WELCOME: a second HELLO would cross it
        (ERROR(NO_SESSION) likewise).

        The INVITE a port sends when the gateway opens it can reach a device
        that has just sent HELLO (a cold start); the HELLO retry covers a
        HELLO that was lost. PROTOCOL.md section 3, "Invite".
        """
        if self.state == "hello":
            self._emit("INVITE", ignored=True)
            return
        self._emit("INVITE")
        self._start_over("invite")

    def _on_welcome(self, msg: w.Welcome) -> None:
        if self.state != "hello":
            return
        self.state = "open"
        self.rel.open(msg.features)
        self._keepalive_s = (msg.keepalive_ms or self.keepalive_ms or 1000) / 1000
        self._emit(
            "WELCOME", gateway=msg.name, keepalive_ms=msg.keepalive_ms, max_body=msg.max_body
        )
        self._register()

    def _on_error(self, msg: w.Error) -> None:
        about = w.MessageType(msg.about).name if msg.about in _TYPES else msg.about
        self._emit(
            "ERROR", code=_code_name(msg.code), about=about, ref=msg.ref, message=msg.message
        )
        if msg.code == ErrorCode.NO_SESSION and self.state != "hello":  # like INVITE
            self._start_over("no-session")

    # --- requests to other senders ------------------------------------------

    async def request(
        self, sender: str, method: str, params: Any = None, timeout: float = 5.0
    ) -> Any:
        """Call another sender through the gateway; raises a sig.RequestError subclass."""
        if self.state != "open":
            raise NotConnectedError(f"{self.name}: no session with the gateway")
        rid = next(self._ids)
        fut: asyncio.Future[w.Response] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._send(w.Request(rid, sender, method, pack(params)))
            response = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no response from {sender}.{method}") from None
        finally:
            self._pending.pop(rid, None)
        if response.status:
            status = _code_name(response.status)
            self._emit("RESPONSE", id=rid, status=status, message=response.message)
            raise request_error_for(response.status, response.message)
        result = unpack(response.data)
        self._emit("RESPONSE", id=rid, status="OK", data=result)
        return result

    def _on_response(self, msg: w.Response) -> None:
        fut = self._pending.pop(msg.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _fail_pending(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(NotConnectedError(f"{self.name}: {why}"))
        self._pending.clear()

    # --- output -------------------------------------------------------------

    def _send(self, msg: w.Message, sequenced: bool = False) -> None:
        """Send ``msg`` (sequenced when a reliable session says so)."""
        if not self.rel.send(msg, time.monotonic(), sequenced):
            self._write_body(w.encode(msg))

    def _write_body(self, plain: bytes) -> None:
        """Sign (when keyed), frame and write one body."""
        body = plain if self.signing is None else self.signing.seal(plain)
        if body is None:  # signed, but no session yet (or its counter is used up)
            self.counters["not_sent"] += 1
            return
        self._write(encode_frame(body))
        self.counters["frames_out"] += 1

    def _write(self, data: bytes) -> None:
        if self._port is not None and self._port.write(data):
            self._last_tx = time.monotonic()


class DeviceSim(_Session):
    """The emulated device; ``await start()`` / ``await stop()`` (or ``async with``).

    It registers one sender with its events, methods and default handler, and
    its listeners; answers requests; triggers its events every ``interval``.
    """

    def __init__(
        self,
        port: str,
        *,
        baud: int = 115200,
        name: str = "sensor1",
        sender: str | None = None,
        events: Iterable[str] = ("temperature",),
        methods: Iterable[str] = ("get_temp",),
        default_handler: bool = True,
        interval: float = 0.0,
        listens: Iterable[Pair] = (),
        requests: Iterable[tuple[str, str]] = (),
        keepalive_ms: int = 1000,
        temperature: float = 21.5,
        reopen_delay: float = 0.2,
        out: Callable[[str], None] | None = None,
        verbose: bool = False,
        key: bytes | None = None,
        reliable: bool = False,
        reliable_events: Iterable[str] | None = None,
    ) -> None:
        """``key``: sign every frame with it (the gateway's port must have the same).
        ``reliable``: ask for the reliable mode, in which the triggers of
        ``reliable_events`` (None: every event) are sequenced."""
        super().__init__(name, keepalive_ms, out, key, reliable)
        self.port = port
        self.baud = baud
        self.sender = sender or name
        self.events = tuple(events)
        self.reliable_events = frozenset(
            self.events if reliable_events is None else reliable_events
        )
        self.methods = tuple(methods)
        self.default_handler = default_handler
        self.interval = interval
        self.listens: tuple[Pair, ...] = tuple(listens)
        self.auto_requests = tuple(requests)
        self.temperature = temperature
        self.reopen_delay = reopen_delay
        self.verbose = verbose
        self._port = _Port(self, port, baud, reopen_delay)
        self._next_tick = 0.0
        self._ticks = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._handlers.update(
            {
                w.MessageType.SENDER_REGISTERED: self._on_registered,
                w.MessageType.LISTENING: self._on_listening,
                w.MessageType.EVENT: self._on_event,
                w.MessageType.REQUEST: self._on_request,
            }
        )

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Start the device in the background (it keeps running until stop())."""
        assert self._port is not None
        self._runner = asyncio.create_task(self._port.run(), name=f"device-sim-{self.name}")

    async def stop(self) -> None:
        """Stop and close the port (no goodbye: a device just loses power)."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        self._emit("STOPPED")

    async def __aenter__(self) -> DeviceSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the device's part of the session -----------------------------------

    def _register(self) -> None:
        events = tuple((i + 1, e) for i, e in enumerate(self.events))
        meta = self.rel.meta(self.events, self.reliable_events)
        self._send(
            w.RegisterSender(1, self.sender, events, self.methods, self.default_handler, meta)
        )
        for i, (s, e) in enumerate(self.listens):
            self._send(w.Listen(i + 1, s, e))

    def _periodic(self, now: float) -> None:
        """Trigger every declared event each ``interval`` seconds once registered."""
        if self.registered and self.interval > 0 and now >= self._next_tick:
            self._next_tick = now + self.interval
            self._ticks += 1
            for event in self.events:
                self.trigger(event, {"n": self._ticks, "value": self.temperature})

    def _on_registered(self, msg: w.SenderRegistered) -> None:
        self.registered = True
        self._next_tick = time.monotonic() + self.interval
        self._emit("REGISTERED", sender=self.sender)
        for target, method in self.auto_requests:
            self._spawn(self._auto_request(target, method))

    def _on_listening(self, msg: w.Listening) -> None:
        s, e = self.listens[msg.listener_id - 1]
        self._emit("LISTENING", id=msg.listener_id, sender=s, event=e)

    def _on_event(self, msg: w.Event) -> None:
        ids = [i + 1 for i, pair in enumerate(self.listens) if matches(pair, msg.sender, msg.event)]
        try:
            data = unpack(msg.data)
        except DecodeError as exc:
            self._emit("EVENT_DROPPED", sender=msg.sender, event=msg.event, error=str(exc))
            return
        self._emit("EVENT", sender=msg.sender, event=msg.event, data=data, listeners=ids)

    def _on_request(self, msg: w.Request) -> None:
        try:
            params = unpack(msg.data)
        except DecodeError as exc:
            self._send(w.Response(msg.request_id, ErrorCode.HANDLER_ERROR, str(exc)[:100], b""))
            return
        self._emit("REQUEST", id=msg.request_id, method=msg.method, params=params)
        answer = self._answer(msg, params)
        if answer is None:
            return  # never answered: the gateway fails it with SENDER_GONE or TIMEOUT
        status, text, result = answer
        try:
            payload = pack(result) if status == ErrorCode.OK else b""
        except EncodeError as exc:
            status, text, payload = ErrorCode.HANDLER_ERROR, str(exc)[:100], b""
        self._send(w.Response(msg.request_id, status, text, payload))

    def _answer(self, msg: w.Request, params: Any) -> tuple[ErrorCode, str, Any] | None:
        """(status, message, result) of a request to this device; None: leave it unanswered."""
        if msg.sender != self.sender:
            return ErrorCode.NO_SUCH_SENDER, f"no sender {msg.sender}", None
        if msg.method == "get_temp" and "get_temp" in self.methods:
            return ErrorCode.OK, "", self.temperature
        if not self.default_handler:
            return ErrorCode.NO_SUCH_METHOD, f"no method {msg.method}", None
        if msg.method.startswith("hang"):
            return None
        return ErrorCode.OK, "", {"method": msg.method, "params": params}

    # --- API for tests and the CLI ----------------------------------------

    def trigger(self, event: str, data: Any = None) -> bool:
        """Trigger one declared event; False (counted) when not registered yet."""
        reliable = event in self.reliable_events
        if not self.registered or event not in self.events or (reliable and self.rel.full()):
            self.counters["not_sent"] += 1
            return False
        ref = self.events.index(event) + 1
        self._send(w.Trigger(ref, pack(data)), reliable)
        self.counters["triggers"] += 1
        if self.verbose:
            self._emit("TRIGGER", event=event, data=data)
        return True

    async def _auto_request(self, sender: str, method: str) -> None:
        with contextlib.suppress(Exception):  # the outcome is already in RESPONSE
            await self.request(sender, method)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# --- command line -----------------------------------------------------------


def _listen_spec(text: str) -> Pair:
    sender, sep, event = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"--listen {text!r}: expected SENDER:EVENT")
    return (sender or None, event or None)


def _request_spec(text: str) -> tuple[str, str]:
    sender, sep, method = text.partition(":")
    if not sep or not sender or not method:
        raise argparse.ArgumentTypeError(f"--request {text!r}: expected SENDER:METHOD")
    return (sender, method)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sig device-sim", description="Emulate a UART device speaking the sig protocol."
    )
    p.add_argument("--port", required=True, help="serial device path or pyserial URL")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--name", default="sensor1", help="peer name sent in HELLO")
    p.add_argument("--sender", help="sender name to register (default: --name)")
    p.add_argument(
        "--events", default="temperature", help="comma-separated events (default temperature)"
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between triggers; 0: off")
    p.add_argument(
        "--listen",
        type=_listen_spec,
        action="append",
        default=[],
        metavar="SENDER:EVENT",
        help="listen to events (either side may be empty: wildcard); repeatable",
    )
    p.add_argument(
        "--request",
        type=_request_spec,
        action="append",
        default=[],
        metavar="SENDER:METHOD",
        help="call SENDER.METHOD after each registration; repeatable",
    )
    p.add_argument("--keepalive-ms", type=int, default=1000)
    p.add_argument("--temperature", type=float, default=21.5, help="what get_temp answers")
    p.add_argument("--verbose", action="store_true", help="also print every TRIGGER")
    p.add_argument(
        "--key-file",
        metavar="FILE",
        help="sign frames with this key (64 hex digits or 32 raw bytes; PROTOCOL.md section 5)",
    )
    device_reliable.add_arguments(p)
    return p


async def _amain(sim: DeviceSim) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig_no in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig_no, stop.set)
    await sim.start()
    await stop.wait()
    await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``sig device-sim ...``: run until SIGINT/SIGTERM; exit 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    events = [e.strip() for e in args.events.split(",") if e.strip()]
    if args.interval < 0 or args.keepalive_ms < 0 or args.baud <= 0:
        print("sig device-sim: --interval, --keepalive-ms and --baud must not be negative")
        return 2
    key = None
    if args.key_file:
        try:
            key = read_key_file(args.key_file)
        except (OSError, ValueError) as exc:
            print(f"sig device-sim: --key-file {args.key_file}: {exc}")
            return 2
    sim = DeviceSim(
        args.port,
        baud=args.baud,
        name=args.name,
        sender=args.sender,
        events=events,
        interval=args.interval,
        listens=args.listen,
        requests=args.request,
        keepalive_ms=args.keepalive_ms,
        temperature=args.temperature,
        out=lambda line: print(line, flush=True),
        verbose=args.verbose,
        key=key,
        **device_reliable.options(args),
    )
    asyncio.run(_amain(sim))
    return 0
