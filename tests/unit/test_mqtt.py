"""The MQTT bridge's sans-I/O parts: topic escaping, payloads, config, federation rules.

The federation tests run two gateway cores joined by :class:`MiniBroker`, a
few lines of MQTT semantics in memory (retained messages, wildcards, No
Local), so that the claim tie-break and the listen rules can be driven step
by step on a fake clock. The real thing (two ``sig serve`` processes and a
real Mosquitto) is tests/integration/test_mqtt_federation.py.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from typing import Any

import pytest
from fakes import FakeClock, MemoryLink
from hypothesis import given
from hypothesis import strategies as st

from sig.core.gateway import GatewayCore
from sig.core.routing import check_name
from sig.errors import DecodeError, ErrorCode, InvalidNameError
from sig.mqtt.config import MqttConfigError, from_settings, parse_url
from sig.mqtt.federation import Federation
from sig.mqtt.imports import expand, match
from sig.mqtt.payload import Codec
from sig.mqtt.state import Props
from sig.mqtt.topics import Topics, escape, unescape
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack


def valid_name(text: str) -> bool:
    try:
        check_name("sender", text)
        text.encode("utf-8")
    except (InvalidNameError, UnicodeEncodeError):
        return False
    return True


names = st.text(
    alphabet=st.sampled_from("ab%/+#$@\0 é~") | st.characters(), min_size=1, max_size=40
).filter(valid_name)


# --- topics ---------------------------------------------------------------------


@given(names)
def test_escape_round_trips_every_valid_name(name: str) -> None:
    level = escape(name)
    assert unescape(level) == name
    assert not set(level) & {"/", "+", "#", "\0"}
    assert level[0] not in "$@"


@given(names, names)
def test_escape_is_one_to_one(a: str, b: str) -> None:
    assert (escape(a) == escape(b)) == (a == b)


@pytest.mark.parametrize(
    ("name", "level"),
    [("#alarm", "%23alarm"), ("$gateway", "%24gateway"), ("@x", "%40x"), ("a$@", "a$@"),
     ("50%/x+y", "50%25%2Fx%2By"), ("a\0b", "a%00b")],
)  # fmt: skip
def test_escape_examples(name: str, level: str) -> None:
    assert escape(name) == level


@pytest.mark.parametrize("level", ["", "a+b", "#x", "$x", "@x", "%2", "%zz", "%41", "a%24b"])
def test_unescape_refuses_what_escape_never_writes(level: str) -> None:
    assert unescape(level) is None


def test_topics_parse_every_kind() -> None:
    t = Topics("home/sig")
    assert t.parse(t.event("#chan", "a/b")) == ("event", "#chan", "a/b")
    assert t.parse(t.presence("gw1", "s")) == ("presence", "gw1", "s")
    assert t.parse(t.status("gw1")) == ("status", "gw1")
    assert t.parse(t.listens("gw1")) == ("listens", "gw1")
    assert t.parse(t.responses("gw1")) == ("resp", "gw1")
    assert t.parse(t.request("s", "get")) == ("request", "s", "get")
    assert t.parse("home/sig/a/b/c") is None
    assert t.parse("other/a/b") is None
    assert t.listen_filter(None, "#x") == "home/sig/+/%23x"
    with pytest.raises(ValueError):
        Topics("a/#")


# --- payloads -------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, -2.5, "é", [1, {"a": None}], {"k": [True, False]}, 2**70])
def test_json_payload_round_trips_json_values(value: Any) -> None:
    codec = Codec("json")
    assert unpack(codec.to_cbor(codec.to_mqtt(pack(value)))) == value


@pytest.mark.parametrize("value", [b"\x00\xff", math.inf, {1: "int key"}, [b"x", 1]])
def test_what_json_cannot_carry_travels_as_cbor_losslessly(value: Any) -> None:
    codec = Codec("json")
    payload = codec.to_mqtt(pack(value))
    assert payload.startswith(b'{"$cbor":')
    assert codec.to_cbor(payload) == pack(value)


def test_nan_and_no_data() -> None:
    codec = Codec("json")
    assert math.isnan(unpack(codec.to_cbor(codec.to_mqtt(pack(math.nan)))))
    assert codec.to_mqtt(b"") == b"" and codec.to_cbor(b"") == b""


@pytest.mark.parametrize(
    "payload", [b"{bad", b"\xff\xfe", b'{"$cbor": "!!"}', b'{"$cbor": "/w=="}']
)
def test_malformed_json_payloads_raise(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        Codec("json").to_cbor(payload)


def test_cbor_payload_is_the_item_itself_and_checked() -> None:
    codec = Codec("cbor")
    assert codec.to_mqtt(pack({"a": 1})) == pack({"a": 1})
    with pytest.raises(DecodeError):
        codec.to_cbor(b"\x82\x01")  # an array of two with one item


# --- config and imports -----------------------------------------------------------


def test_urls_and_the_table() -> None:
    assert parse_url("mqtts://u%40x:p@broker:8884") == {
        "host": "broker", "port": 8884, "tls": True, "username": "u@x", "password": "p"
    }  # fmt: skip
    assert parse_url("mqtt://h")["port"] == 1883
    for bad in ("http://h", "mqtt://", "mqtt://h:99999"):
        with pytest.raises(MqttConfigError):
            parse_url(bad)
    cfg = from_settings({"url": "mqtt://h", "gateway_id": "g", "payload": "cbor",
                         "import": [{"topic": "z2m/+", "event": "state"}]}, "gw")  # fmt: skip
    assert (cfg.gateway_id, cfg.client_id, cfg.payload, cfg.prefix) == ("g", "sig-g", "cbor", "sig")
    assert cfg.imports[0].sender == "{1}"
    bad_tables: list[dict[str, Any]] = [
        {"url": "mqtt://h", "nope": 1},
        {"url": "mqtt://h", "payload": "xml"},
        {"url": "mqtt://h", "keepalive": 0},
        {},
        {"url": "mqtt://h", "prefix": "#"},
    ]
    for bad_table in bad_tables:
        with pytest.raises(MqttConfigError):
            from_settings(bad_table, "gw")


def test_import_filters_and_templates() -> None:
    assert match("z2m/+", "z2m/lamp") == ["lamp"]
    assert match("z2m/+", "z2m/lamp/set") is None
    assert match("t/#", "t/a/b") == ["a", "b"]
    assert match("t/#", "t") is None
    assert match("t/+/x", "t/a/y") is None
    assert expand("{1}-{2}", ["a", "b"]) == "a-b"
    assert expand("{2}", ["a"]) is None


# --- federation, two cores on a broker in memory ----------------------------------------


def _matches(topic_filter: str, topic: str) -> bool:
    want, got = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(got) or (level != "+" and level != got[i]):
            return False
    return len(want) == len(got)


class MiniBroker:
    """Retained messages, wildcards, No Local, last wills; delivered by :meth:`run`."""

    def __init__(self) -> None:
        self.retained: dict[str, tuple[bytes, Props | None]] = {}
        self.clients: dict[str, MiniClient] = {}
        self.queue: deque[tuple[MiniClient, str, bytes, Props | None]] = deque()
        self.log: list[tuple[str, bytes]] = []

    def deliver(self, sender: MiniClient | None, topic: str, payload: bytes, retain: bool,
                props: Props | None) -> None:  # fmt: skip
        self.log.append((topic, payload))
        if retain:
            if payload:
                self.retained[topic] = (payload, props)
            else:
                self.retained.pop(topic, None)
        for client in self.clients.values():
            for topic_filter, no_local in client.subs.items():
                if _matches(topic_filter, topic) and not (no_local and client is sender):
                    self.queue.append((client, topic, payload, props))
                    break

    def run(self) -> None:
        for _ in range(100_000):
            if not self.queue:
                return
            client, topic, payload, props = self.queue.popleft()
            if client.connected:
                client.federation.on_message(topic, payload, props)
        raise AssertionError("the federation does not settle: a loop")


class MiniClient:
    def __init__(self, broker: MiniBroker, federation: Federation) -> None:
        self.broker = broker
        self.federation = federation
        self.subs: dict[str, bool] = {}
        self.connected = False

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                props: Props | None = None) -> bool:  # fmt: skip
        if not self.connected:
            return False
        self.broker.deliver(self, topic, payload, retain, props)
        return True

    def subscribe(self, topic_filter: str, *, no_local: bool = False) -> None:
        self.subs[topic_filter] = no_local
        for topic, (payload, props) in list(self.broker.retained.items()):
            if _matches(topic_filter, topic):
                self.broker.queue.append((self, topic, payload, props))

    def unsubscribe(self, topic_filter: str) -> None:
        self.subs.pop(topic_filter, None)


class Gw:
    """One gateway core with its federation and a client of the MiniBroker."""

    def __init__(self, broker: MiniBroker, gid: str, clock: FakeClock, wall: list[float]) -> None:
        self.core = GatewayCore(gid, clock=clock)
        self.fed = Federation(
            self.core, gateway_id=gid, incarnation=f"{gid}-1", topics=Topics(),
            codec=Codec(), wall=lambda: wall[0], wake=lambda: None,
        )  # fmt: skip
        self.client = MiniClient(broker, self.fed)
        self.broker = broker
        broker.clients[gid] = self.client

    def connect(self) -> None:
        self.client.connected = True
        self.fed.connected(self.client)
        self.broker.run()

    def die(self) -> None:
        """Connection lost without goodbye: the broker sends the will."""
        self.client.connected = False
        self.client.subs.clear()
        self.fed.disconnected()
        will = self.fed.status_payload(False)
        self.broker.deliver(None, self.fed.topics.status(self.fed.me), will, True, None)
        self.broker.run()

    def tick(self) -> None:
        self.fed.tick()
        self.broker.run()

    def peer(self, name: str) -> tuple[MemoryLink, Any]:
        link = MemoryLink(f"tcp:{name}")
        session = self.core.attach(link)
        self.core.receive(session, w.encode(w.Hello(name, 65535, 0)))
        link.take()
        return link, session


@pytest.fixture
def net() -> tuple[MiniBroker, Gw, Gw, list[float]]:
    broker, clock, wall = MiniBroker(), FakeClock(), [1000.0]
    return broker, Gw(broker, "A", clock, wall), Gw(broker, "B", clock, wall), wall


def test_remote_senders_connect_and_events_cross_only_when_listened(net: Any) -> None:
    broker, a, b, _ = net
    a.connect()
    b.connect()
    seen: list[tuple[str, str, Any]] = []
    b.core.endpoints.add_listener(lambda i, d: seen.append((i["sender"], i["event"], d)))
    sensor = a.core.endpoints.add_sender("sensor", ["t"])
    a.tick()
    b.tick()
    connects = [d for s, e, d in seen if (s, e) == ("sensor", "#connect")]
    assert [(d["events"], d["requests"]) for d in connects] == [(["t"], [])]
    sensor.trigger("t", 1)
    broker.run()
    assert ("sensor", "t", 1) in seen
    # nobody listens on B any more: A stops publishing sensor's events
    seen.clear()
    b.core.table.unsubscribe(next(iter(b.core.table.subscribers(None, None))), None, None)
    b.tick()
    a.tick()
    before = len(broker.log)
    sensor.trigger("t", 2)
    broker.run()
    assert len(broker.log) == before
    assert a.fed.stats()["remote_listens"] == 0


def test_nothing_loops_with_listeners_for_everything_on_both(net: Any) -> None:
    broker, a, b, _ = net
    a.connect()
    b.connect()
    got_a: list[Any] = []
    got_b: list[Any] = []
    a.core.endpoints.add_listener(lambda i, d: got_a.append((i["sender"], i["event"])))
    b.core.endpoints.add_listener(lambda i, d: got_b.append((i["sender"], i["event"])))
    sa = a.core.endpoints.add_sender("sa", ["e"])
    for _ in range(2):
        a.tick()
        b.tick()
    sa.trigger("e", "x")
    broker.run()  # raises if messages keep coming back
    assert got_a.count(("sa", "e")) == 1 and got_b.count(("sa", "e")) == 1
    assert [t for t, _ in broker.log].count("sig/sa/e") == 1


def test_the_earlier_claim_wins_and_the_later_local_sender_is_refused(net: Any) -> None:
    broker, a, b, wall = net
    link_b, sess_b = b.peer("client-b")
    b.core.receive(sess_b, w.encode(w.RegisterSender(1, "dup", ((1, "e"),))))
    b.tick()  # B sees its sender at wall 1000 (no broker yet)
    wall[0] = 1005.0
    link_a, sess_a = a.peer("client-a")
    a.core.receive(sess_a, w.encode(w.RegisterSender(1, "dup", ((1, "e"),))))
    a.tick()  # A's claim is 5 s later
    a.connect()
    b.connect()
    a.tick()
    b.tick()
    refused = [m for m in link_a.take() if isinstance(m, w.Error)]
    assert [m.code for m in refused] == [ErrorCode.DUPLICATE_SENDER]
    assert a.core.table.sender("dup").owner is a.fed.session  # A now routes to B's
    assert b.core.table.sender("dup").owner is sess_b
    assert not [m for m in link_b.take() if isinstance(m, w.Error)]
    assert a.fed.stats()["conflicts"] == 1
    assert "sig/@presence/A/dup" not in broker.retained  # the loser's claim is cleared


def test_a_tie_goes_to_the_smaller_gateway_id(net: Any) -> None:
    broker, a, b, _ = net
    for gw in (a, b):
        link, sess = gw.peer("c")
        gw.core.receive(sess, w.encode(w.RegisterSender(1, "tie", ((1, "e"),))))
        gw.tick()
        gw.link = link
    a.connect()
    b.connect()
    a.tick()
    b.tick()
    assert a.core.table.sender("tie").owner is not a.fed.session  # "A" < "B"
    assert b.core.table.sender("tie").owner is b.fed.session


def test_a_dead_gateway_s_senders_disconnect_on_its_will(net: Any) -> None:
    broker, a, b, _ = net
    a.connect()
    b.connect()
    gone: list[str] = []
    b.core.endpoints.add_listener(lambda i, d: gone.append(i["sender"]), None, "#disconnect")
    a.core.endpoints.add_sender("s1", ["e"])
    a.tick()
    b.tick()
    assert b.core.table.sender("s1") is not None
    a.die()
    assert gone == ["s1"] and b.core.table.sender("s1") is None
    assert b.fed.stats()["gateways"] == 0


def test_requests_cross_with_typed_outcomes(net: Any) -> None:
    broker, a, b, _ = net
    a.connect()
    b.connect()

    def boom(params: Any) -> Any:
        raise RuntimeError("x")

    a.core.endpoints.add_sender("svc", ["e"], {"double": lambda p: p * 2, "boom": boom})
    a.tick()
    b.tick()
    results: list[tuple[int, str, bytes]] = []
    for method, params in (("double", 4), ("boom", None), ("nope", None)):
        b.core.start_request("svc", method, pack(params), lambda *r: results.append(r))
        broker.run()
    assert results[0] == (ErrorCode.OK, "", pack(8))
    assert results[1][0] == ErrorCode.HANDLER_ERROR
    assert results[2][0] == ErrorCode.NO_SUCH_METHOD  # B's core knows svc's methods


def test_malformed_presence_and_unmapped_events_are_counted(net: Any) -> None:
    broker, a, b, _ = net
    b.connect()
    b.client.subscribe("sig/+/+")
    broker.deliver(None, "sig/@presence/X/s", b"not json", True, None)
    broker.deliver(None, "sig/nobody/e", b"1", False, None)
    broker.run()
    stats = b.fed.stats()
    assert stats["dropped_malformed"] == 1 and stats["ignored_unmapped"] == 1


# --- Home Assistant discovery ---------------------------------------------------------


def test_discovery_config_follows_the_description() -> None:
    from sig.mqtt.hass import config_topic, object_id, sensor_config

    described = {"unit": "°C", "device_class": "temperature", "value_key": "value", "bad": [1]}
    config = sensor_config(Topics(), "gw/1", "sensor 1", "temperature", described)
    assert config["state_topic"] == "sig/sensor 1/temperature"
    assert config["unit_of_measurement"] == "°C" and config["device_class"] == "temperature"
    assert config["value_template"] == "{{ value_json.value }}"
    assert config["availability"][0]["topic"] == "sig/@gw/gw%2F1/status"
    assert "bad" not in config
    topic = config_topic("homeassistant", "gw/1", "sensor 1", "temperature")
    assert re.fullmatch(r"homeassistant/sensor/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config", topic)
    assert object_id("a b") != object_id("a_b")  # the hash keeps names apart
    plain = sensor_config(Topics(), "g", "s", "e", {"value_key": "x}}{{"})
    assert plain["value_template"] == "{{ value_json }}"


def test_discovery_publishes_for_described_senders_and_removes_on_goodbye(net: Any) -> None:
    from sig.mqtt.hass import Discovery

    broker, a, _, _ = net
    discovery = Discovery(a.fed)
    a.connect()
    discovery.connected()
    a.core.endpoints.add_sender("plain", ["e"])
    describe = {"temperature": {"unit": "°C", "device_class": "temperature"}}
    sensor = a.core.endpoints.add_sender("sensor", ["temperature", "other"], describe=describe)
    a.tick()
    configs = [t for t in broker.retained if t.startswith("homeassistant/")]
    assert len(configs) == 1
    payload = json.loads(broker.retained[configs[0]][0])
    assert payload["state_topic"] == "sig/sensor/temperature"
    assert payload["unit_of_measurement"] == "°C"
    sensor.trigger("temperature", 21.5)  # published with no gateway listening: HA reads it
    sensor.trigger("other", 1)  # not described: not published
    broker.run()
    assert ("sig/sensor/temperature", b"21.5") in broker.log
    assert not [t for t, _ in broker.log if t == "sig/sensor/other"]
    a.core.endpoints.remove_sender("sensor")
    a.tick()
    assert not [t for t in broker.retained if t.startswith("homeassistant/")]


def test_the_bridge_session_answers_keepalive_and_outlives_silence(net: Any) -> None:
    from sig.core.session import State

    broker, a, _, _ = net
    a.connect()
    clock = a.core.clock
    for _ in range(20):  # 100 s without a message from the broker: PINGs, PONGs
        clock.now += 5.0
        a.core.poll()
        a.tick()
    assert a.fed.session.state is State.OPEN
    assert a.fed.session in a.core.sessions
