"""The MQTT bridge's asyncio side: one connection to the broker, kept open (aiomqtt, MQTT 5).

:class:`MqttBridge` owns the connection and two tasks: the connection loop
(connect, subscribe, read; on any loss tell the federation, then reconnect
with :class:`sig.routers.retry.Backoff`) and a ticker that lets the federation
follow the gateway's senders and listens. Everything the federation publishes
goes through one bounded, ordered queue (:class:`_Outbox`): when the broker is
away or the queue is full, messages are counted as dropped, never held
without bound. The gateway serves its local links the whole time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import uuid
from collections import deque
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from sig.core.gateway import GatewayCore
from sig.mqtt.config import MqttConfig
from sig.mqtt.federation import Federation
from sig.mqtt.hass import Discovery
from sig.mqtt.imports import Importer
from sig.mqtt.payload import Codec
from sig.mqtt.state import Props
from sig.mqtt.topics import Topics
from sig.routers.retry import Backoff

logger = logging.getLogger(__name__)

#: Messages waiting for the broker at most (then new ones are dropped and counted).
MAX_OUTBOX = 10000
#: QoS 0 publishes in flight together (each waits for paho to write it).
BATCH = 256
#: Seconds between the federation's scans of the gateway's senders and listens.
TICK = 0.05
BACKOFF = Backoff(initial=0.2, maximum=5.0)

Op = tuple[str, str, bytes, int, bool, Props | None]


class _Outbox:
    """The ordered queue of publishes and (un)subscriptions for one connection."""

    def __init__(self) -> None:
        self.ops: deque[Op] = deque()
        self.ready = asyncio.Event()
        self.open = False

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
        props: Props | None = None,
    ) -> bool:  # fmt: skip
        return self._put(("pub", topic, payload, qos, retain, props))

    def subscribe(self, topic_filter: str, *, no_local: bool = False) -> None:
        self._put(("sub", topic_filter, b"", int(no_local), False, None), force=True)

    def unsubscribe(self, topic_filter: str) -> None:
        self._put(("unsub", topic_filter, b"", 0, False, None), force=True)

    def _put(self, op: Op, *, force: bool = False) -> bool:
        if not self.open or (len(self.ops) >= MAX_OUTBOX and not force):
            return False
        self.ops.append(op)
        self.ready.set()
        return True


class MqttBridge:
    """Joins one gateway core to an MQTT broker: federation, imports, discovery."""

    def __init__(self, core: GatewayCore, config: MqttConfig) -> None:
        self.core = core
        self.config = config
        self.topics = Topics(config.prefix)
        self.incarnation = uuid.uuid4().hex[:12]
        self._outbox = _Outbox()
        self.federation = Federation(
            core,
            gateway_id=config.gateway_id,
            incarnation=self.incarnation,
            topics=self.topics,
            codec=Codec(config.payload),
            wall=time.time,
            wake=self._wake,
            link_name=f"mqtt:{config.host}:{config.port}",
        )
        self.importer = Importer(self.federation, config.imports)
        self.discovery = (
            Discovery(self.federation, config.discovery_prefix) if config.discovery else None
        )
        self._tasks: list[asyncio.Task[Any]] = []
        self._woken = False
        self.connected = asyncio.Event()
        self.connects = 0

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (the gateway does not wait for the broker)."""
        self._tasks = [
            asyncio.create_task(self._run(), name="sig-mqtt"),
            asyncio.create_task(self._ticker(), name="sig-mqtt-tick"),
        ]

    async def stop(self) -> None:
        """Say goodbye (offline status, presence cleared), then close."""
        fed = self.federation
        if fed.broker is not None:
            if self.discovery is not None:
                self.discovery.clear()
            fed.goodbye()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained(), 5)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _drained(self) -> None:
        while self._outbox.ops or self._outbox.ready.is_set():
            await asyncio.sleep(0.01)

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._woken = False
        self.federation.pump()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.federation.tick()
            except Exception:  # a bug must not stop the bridge: logged, next tick
                logger.exception("mqtt: tick failed")

    # --- the connection ---------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        fed = self.federation
        will = aiomqtt.Will(self.topics.status(fed.me), fed.status_payload(False), 1, True)
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=cfg.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            keepalive=cfg.keepalive,
            clean_start=True,
            tls_context=self._tls_context(),
            timeout=10,
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if not cfg.tls:
            return None
        context = ssl.create_default_context(cafile=cfg.tls_ca)
        if cfg.tls_cert:
            context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        return context

    async def _run(self) -> None:
        attempt = 0
        fed = self.federation
        while True:
            fed.state = "connecting"
            try:
                async with self._client() as client:
                    attempt = 0
                    self.connects += 1
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                if fed.state == "connected":
                    logger.warning("mqtt: lost %s: %s", self.config.url, exc)
                elif attempt == 0:
                    logger.warning("mqtt: cannot reach %s: %s", self.config.url, exc)
            finally:
                self._outbox.open = False
                self._outbox.ops.clear()
                self.connected.clear()
                if fed.broker is not None or fed.state == "connected":
                    fed.disconnected()
                fed.state = "down"
            await asyncio.sleep(BACKOFF.delay(attempt))
            attempt += 1

    async def _serve(self, client: aiomqtt.Client) -> None:
        _no_delay(client)
        outbox = self._outbox
        outbox.ops.clear()
        outbox.open = True
        self.federation.connected(outbox)
        self.importer.connected(outbox)
        if self.discovery is not None:
            self.discovery.connected()
        writer = asyncio.create_task(self._write(client), name="sig-mqtt-write")
        try:
            async for message in client.messages:
                self._deliver(message)
                if writer.done():
                    break
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        writer.result()  # the writer's MqttError, if that is why we stopped

    def _deliver(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, (bytes, bytearray)):
            payload = b"" if payload is None else str(payload).encode()
        topic = message.topic.value
        props = _props_in(message.properties)
        try:
            if not self.federation.on_message(topic, bytes(payload), props):
                self.importer.on_message(topic, bytes(payload), bool(message.retain))
        except Exception:  # a bug on one message must not end the connection
            logger.exception("mqtt: message on %r failed", topic)

    async def _write(self, client: aiomqtt.Client) -> None:
        await self._drain(client)  # status, subscriptions (SUBACKed), presence, listens
        self.connected.set()
        logger.info("mqtt: connected to %s as %s", self.config.url, self.federation.me)
        while True:
            await self._drain(client)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Send everything queued, in order (a subscription waits for its SUBACK)."""
        outbox = self._outbox
        await outbox.ready.wait()
        ops = outbox.ops
        paho = getattr(client, "_client", None)
        while ops:
            if ops[0][0] == "pub" and ops[0][3] == 0 and paho is not None:
                await _publish_batch(client, paho, ops)
                continue
            kind, topic, payload, qos, retain, props = ops.popleft()
            if kind == "pub":
                await client.publish(topic, payload, qos, retain, _props_out(props))
            elif kind == "sub":
                options = SubscribeOptions(qos=1, noLocal=bool(qos))
                await client.subscribe(topic, options=options)
            else:
                await client.unsubscribe(topic)
        outbox.ready.clear()


async def _publish_batch(client: aiomqtt.Client, paho: Any, ops: deque[Op]) -> None:
    """Up to BATCH QoS 0 publishes from the front of ``ops``, in order, without a wait each.

    aiomqtt's publish waits until paho wrote the message: one loop turn per
    event (about 2,500 events/s). So all but the last go straight to paho's
    queue, and the last through aiomqtt, whose wait then covers them all
    (paho writes in order): at most BATCH messages wait in paho at a time.
    """
    count = 0
    while ops and ops[0][0] == "pub" and ops[0][3] == 0:
        _, topic, payload, _, retain, props = ops.popleft()
        count += 1
        last = count >= BATCH or not ops or ops[0][0] != "pub" or ops[0][3] != 0
        if last:
            await client.publish(topic, payload, 0, retain, _props_out(props))
            return
        info = paho.publish(topic, payload, 0, retain, _props_out(props))
        if info.rc != 0:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")


def _no_delay(client: aiomqtt.Client) -> None:
    """TCP_NODELAY on the broker connection (paho leaves Nagle on).

    A request and its answer are small writes each waiting for the other's
    ACK: with Nagle and delayed ACKs that cost 40 ms a round trip (bench/
    federation.py). aiomqtt does not expose the socket; paho's client does.
    """
    paho = getattr(client, "_client", None)
    sock = paho.socket() if paho is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _props_out(props: Props | None) -> Properties | None:
    if props is None:
        return None
    out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if props.response_topic is not None:
        out.ResponseTopic = props.response_topic
    if props.correlation is not None:
        out.CorrelationData = props.correlation
    if props.user:
        out.UserProperty = list(props.user)
    return out


def _props_in(props: Any) -> Props:
    if props is None:
        return Props()
    user = getattr(props, "UserProperty", None) or []
    return Props(
        response_topic=getattr(props, "ResponseTopic", None),
        correlation=getattr(props, "CorrelationData", None),
        user=tuple((str(k), str(v)) for k, v in user),
    )
