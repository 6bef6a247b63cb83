"""Requests across gateways as MQTT 5 request/response (sans-I/O, BRIDGE.md).

A local REQUEST to a remote sender reaches the bridge's session like any
handler's; it leaves on ``<prefix>/<sender>/@req/<method>`` with a response
topic (``<prefix>/@gw/<me>/resp``), correlation data (``incarnation:id``) and
a user property ``gateway`` naming the sender's gateway. That gateway runs it
through its core and answers with user properties ``status`` (the ErrorCode)
and ``message``, the result as the payload. The requesting core keeps the
deadline: no answer is its TIMEOUT, the sender going is SENDER_GONE.
"""

from __future__ import annotations

from sig.errors import DecodeError, ErrorCode
from sig.mqtt.state import MAX_SERVING, Host, Props
from sig.protocol import messages as w


class Requests:
    """Requests to remote senders, and requests from the broker to ours."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.serving = 0

    def out(self, msg: w.Request) -> None:
        """A local REQUEST to a remote sender: an MQTT 5 request to its gateway."""
        host = self.host
        remote = host.remote.get(msg.sender)
        if remote is None or not remote.claim.gateway or host.broker is None:
            text = f"sender {msg.sender!r} went away"
            host.later(w.Response(msg.request_id, ErrorCode.SENDER_GONE, text))
            return
        host.counters["requests_out"] += 1
        props = Props(
            response_topic=host.topics.responses(host.me),
            correlation=f"{host.incarnation}:{msg.request_id}".encode(),
            user=(("gateway", remote.claim.gateway),),
        )
        try:
            payload = host.codec.to_mqtt(msg.data)
        except DecodeError:
            payload = b""
        host.publish(host.topics.request(msg.sender, msg.method), payload, qos=1, props=props)

    def response(self, payload: bytes, props: Props) -> None:
        """An answer on our response topic: the RESPONSE the core waits for."""
        host = self.host
        rid = self._correlated(props.correlation)
        if rid is None or rid not in host.session.handling:
            host.counters["late_responses"] += 1
            return
        try:
            status = int(props.get("status") or 0)
        except ValueError:
            status = ErrorCode.HANDLER_ERROR
        message = props.get("message") or ""
        data = b""
        if status == ErrorCode.OK:
            try:
                data = host.codec.to_cbor(payload)
            except DecodeError as exc:
                host.counters["dropped_malformed"] += 1
                status, message = ErrorCode.HANDLER_ERROR, f"bad result payload: {exc}"
        host.feed(w.Response(rid, status, message[:1000], data))

    def _correlated(self, correlation: bytes | None) -> int | None:
        try:
            incarnation, rid = (correlation or b"").decode().split(":")
            return int(rid) if incarnation == self.host.incarnation else None
        except ValueError:
            return None

    def served(self, sender: str, method: str, payload: bytes, props: Props) -> None:
        """A request from the broker: run it if the sender is one of ours."""
        host = self.host
        target = props.get("gateway")
        if target is not None and target != host.me:
            return
        if props.response_topic is None:
            host.counters["dropped_malformed"] += 1
            return
        reply = Reply(self, props)
        info = host.core.table.sender(sender)
        if info is None or info.owner is host.session:
            if target is not None:  # meant for us, and gone
                reply(ErrorCode.SENDER_GONE, f"sender {sender!r} went away", b"")
            return
        if self.serving >= MAX_SERVING:
            reply(ErrorCode.BUSY, "too many requests from the broker", b"")
            return
        try:
            params = host.codec.to_cbor(payload)
        except DecodeError as exc:
            host.counters["dropped_malformed"] += 1
            reply(ErrorCode.MALFORMED, f"params: {exc}", b"")
            return
        host.counters["requests_in"] += 1
        self.serving += 1
        reply.counted = True
        host.core.start_request(sender, method, params, reply)


class Reply:
    """The ``done`` of one request from the broker: publishes its answer once."""

    def __init__(self, requests: Requests, props: Props) -> None:
        self.requests = requests
        self.props = props
        self.counted = False  #: True while it holds one of MAX_SERVING

    def __call__(self, status: int, message: str, data: bytes) -> None:
        host = self.requests.host
        if self.counted:
            self.requests.serving -= 1
            self.counted = False
        payload = b""
        if status == ErrorCode.OK:
            try:
                payload = host.codec.to_mqtt(data)
            except DecodeError:
                status, message = ErrorCode.HANDLER_ERROR, "result is not valid CBOR"
        props = Props(
            correlation=self.props.correlation,
            user=(("status", str(int(status))), ("message", message[:1000])),
        )
        topic = self.props.response_topic
        assert topic is not None
        host.publish(topic, payload, qos=1, props=props)
