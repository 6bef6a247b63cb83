"""Retained last values, sans-I/O: the meta map, the bounded store, the gateway core's hooks.

The same behaviour over real sockets and ptys is tests/integration/test_retained.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeClock, MemoryLink

from sig import LocalRouter
from sig.core.acl import Policy
from sig.core.gateway import GatewayCore, Limits
from sig.core.meta import NO_META, MetaError, encode_meta, parse_meta
from sig.core.principals import Principal
from sig.core.retained import LOCAL_OWNER, RetainedStore
from sig.core.session import Session
from sig.errors import EncodeError, ErrorCode, UnknownEventError
from sig.protocol import messages as w
from sig.protocol.constants import LISTEN_NO_LOCAL
from sig.protocol.data import pack, unpack

EVENTS = ("temp", "hum", "#alarm")


# --- the meta map ------------------------------------------------------------------


def test_meta_retained_true_means_every_declared_event() -> None:
    meta = parse_meta(pack({"retained": True}), EVENTS)
    assert meta.retained == frozenset(EVENTS)
    assert parse_meta(pack({"retained": ["temp"]}), EVENTS).retained == {"temp"}
    assert parse_meta(pack({"retained": False}), EVENTS).retained == frozenset()
    assert parse_meta(b"", EVENTS) is NO_META


def test_meta_keeps_describe_and_reliable_and_ignores_unknown_keys() -> None:
    raw = pack(
        {
            "describe": {"temp": {"unit": "°C", "device_class": "temperature", "precision": 1}},
            "reliable": ["#alarm"],
            "future": {"anything": [1, 2]},
        }
    )
    meta = parse_meta(raw, EVENTS)
    assert meta.describe["temp"] == {"unit": "°C", "device_class": "temperature", "precision": 1}
    assert meta.reliable == ("#alarm",) and meta.retained == frozenset()


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ([1, 2], "must be a CBOR map"),
        ({1: True}, "keys must be text"),
        ({"retained": ["nope"]}, "'nope', which is not a declared event"),
        ({"retained": "temp"}, "must be an array"),
        ({"retained": 1}, "must be an array"),
        ({"describe": ["temp"]}, "must be a map"),
        ({"describe": {"nope": {}}}, "'nope', which is not a declared event"),
        ({"describe": {"temp": {"unit": [1]}}}, "text keys to text or numbers"),
        ({"reliable": ["x"]}, "not a declared event"),
    ],
)
def test_bad_meta_says_what_is_wrong(doc: Any, says: str) -> None:
    with pytest.raises(MetaError, match=says) as info:
        parse_meta(pack(doc), EVENTS)
    assert info.value.code == ErrorCode.MALFORMED


def test_meta_that_is_not_cbor_is_refused() -> None:
    with pytest.raises(MetaError, match="not one CBOR item"):
        parse_meta(b"\xa1\x61", EVENTS)  # a map cut short


def test_encode_meta_checks_before_a_round_trip() -> None:
    assert encode_meta(EVENTS) == b""
    assert unpack(encode_meta(EVENTS, True)) == {"retained": True}
    assert unpack(encode_meta(EVENTS, ["temp", "temp"])) == {"retained": ["temp"]}
    with pytest.raises(UnknownEventError):
        encode_meta(EVENTS, ["nope"])
    with pytest.raises(TypeError):
        encode_meta(EVENTS, "temp")
    with pytest.raises(UnknownEventError):
        encode_meta(EVENTS, describe={"nope": {"unit": "C"}})
    with pytest.raises(EncodeError):
        encode_meta(EVENTS, describe={"temp": {"unit": None}})  # type: ignore[dict-item]


# --- the store -------------------------------------------------------------------


def store_with(*senders: str, **bounds: int) -> RetainedStore:
    store = RetainedStore(**bounds)
    for name in senders:
        store.registered(name, EVENTS, f"peer:{name}")
    return store


def test_the_last_trigger_is_the_value() -> None:
    store = store_with("s")
    store.update("s", "temp", b"\x01")
    store.update("s", "temp", b"\x02")
    assert [(k, v.data, v.stale) for k, v in store.matching("s", "temp")] == [
        (("s", "temp"), b"\x02", False)
    ]
    assert store.counters["retained_values"] == 1
    assert store.counters["retained_bytes"] == 1 + len("s") + len("temp")


def test_matching_follows_the_routing_rules() -> None:
    store = store_with("a", "b")
    for sender in ("a", "b"):
        for event in EVENTS:
            store.update(sender, event, b"\x00")
    assert {k for k, _ in store.matching("a", None)} == {("a", e) for e in EVENTS}
    assert {k for k, _ in store.matching(None, "#alarm")} == {("a", "#alarm"), ("b", "#alarm")}
    assert store.matching(None, "temp") == []  # targeted events never leak (rule 3)
    assert len(store.matching(None, None)) == 6
    assert store.matching("c", None) == [] and store.matching("a", "nope") == []


def test_disconnect_marks_stale_reregistering_freshens_unregistering_clears() -> None:
    store = store_with("s")
    store.update("s", "temp", b"\x01")
    store.disconnected(["s"])
    assert store.matching("s", "temp")[0][1].stale
    assert "s" not in store.kept  # its triggers no longer expected
    store.registered("s", EVENTS, "peer:s")  # the same sender is back
    assert not store.matching("s", "temp")[0][1].stale
    store.unregistered("s")
    assert store.matching("s", None) == [] and store.counters["retained_bytes"] == 0


def test_reregistering_without_the_event_or_by_another_owner_clears() -> None:
    store = store_with("s")
    store.update("s", "temp", b"\x01")
    store.update("s", "hum", b"\x02")
    store.disconnected(["s"])
    store.registered("s", ["temp"], "peer:s")
    assert [k for k, _ in store.matching("s", None)] == [("s", "temp")]
    store.disconnected(["s"])
    store.registered("s", EVENTS, "peer:someone-else")  # the name taken over
    assert store.matching("s", None) == []


def test_when_full_the_oldest_stale_value_goes_first() -> None:
    store = store_with("a", "b", "c", max_values=2)
    store.update("a", "temp", b"\x01")
    store.update("b", "temp", b"\x02")
    store.disconnected(["a"])
    store.update("c", "temp", b"\x03")  # full: a's stale value makes room
    assert {k for k, _ in store.matching(None, None)} == {("b", "temp"), ("c", "temp")}
    assert store.counters["retained_evicted"] == 1 and store.counters["retained_refused"] == 0


def test_when_full_of_live_values_a_new_pair_is_refused_and_counted() -> None:
    store = store_with("a", "b", max_values=1)
    store.update("a", "temp", b"\x01")
    store.update("b", "temp", b"\x02")
    assert [k for k, _ in store.matching(None, None)] == [("a", "temp")]
    assert store.counters["retained_refused"] == 1
    store.update("a", "temp", b"\x03")  # a value already kept is still replaced
    assert store.matching("a", "temp")[0][1].data == b"\x03"


def test_a_value_that_outgrows_the_byte_bound_goes_rather_than_lie() -> None:
    store = store_with("a", max_bytes=80)  # one owner: 20 bytes
    store.update("a", "temp", b"\x01")
    store.update("a", "temp", bytes(64))  # cannot fit: the old value is not the last any more
    assert store.matching("a", "temp") == []
    assert store.counters["retained_refused"] == 1 and store.size == 0


def test_one_owner_holds_a_quarter_of_the_store_at_most() -> None:
    store = store_with("a", "b", max_values=8)
    for event in EVENTS:
        store.update("a", event, b"\x01")
    assert len(store.matching("a", None)) == 2 and store.counters["retained_refused"] == 1
    store.update("b", "temp", b"\x01")  # another owner has its own share
    assert len(store.matching("b", None)) == 1
    local = RetainedStore(max_values=8)
    local.registered("in", EVENTS, LOCAL_OWNER)  # the gateway's own senders: the totals only
    for event in EVENTS:
        local.update("in", event, b"\x01")
    assert len(local) == 3


def test_loaded_values_are_stale_and_bounded() -> None:
    store = RetainedStore(max_values=1)
    assert store.load("a", "temp", b"\x01", LOCAL_OWNER)
    assert not store.load("b", "temp", b"\x02", "peer:b")  # full of stale: not evicted for a load
    assert store.matching("a", "temp")[0][1].stale


def test_the_journal_hears_every_change() -> None:
    store = store_with("a")
    heard: list[tuple[Any, Any]] = []
    store.journal = lambda key, value: heard.append((key, None if value is None else value.stale))
    store.update("a", "temp", b"\x01")
    store.disconnected(["a"])
    store.unregistered("a")
    assert heard == [(("a", "temp"), False), (("a", "temp"), True), (("a", "temp"), None)]


# --- the gateway core --------------------------------------------------------------


def opened(core: GatewayCore, name: str, persistent: bool = False) -> tuple[MemoryLink, Session]:
    link = MemoryLink(f"link-{name}", persistent)
    session = core.attach(link)
    core.receive(session, w.encode(w.Hello(name, 4096, 0)))
    link.take()
    return link, session


def feed(core: GatewayCore, session: Session, *msgs: w.Message) -> None:
    for msg in msgs:
        core.receive(session, w.encode(msg))


def register(core: GatewayCore, session: Session, meta: Any = None, name: str = "s") -> None:
    raw = b"" if meta is None else pack(meta)
    feed(core, session, w.RegisterSender(1, name, ((1, "temp"), (2, "hum")), (), False, raw))


def test_a_later_listener_gets_the_value_right_after_listening(core: GatewayCore) -> None:
    slink, sender = opened(core, "sensor")
    register(core, sender, {"retained": ["temp"]})
    feed(core, sender, w.Trigger(1, pack(21.5)), w.Trigger(2, pack(40)))
    llink, listener = opened(core, "dash")
    feed(core, listener, w.Listen(7, "s", None))
    assert llink.take() == [w.Listening(7), w.Retained("s", "temp", pack(21.5), stale=False)]
    assert core.stats()["retained_sent"] == 1
    assert core.table.sender("s").meta.retained == {"temp"}  # type: ignore[union-attr]


def test_after_the_link_closes_the_value_is_stale_until_unregister(core: GatewayCore) -> None:
    slink, sender = opened(core, "sensor")
    register(core, sender, {"retained": True})
    feed(core, sender, w.Trigger(1, pack(1)))
    core.detach(sender)
    llink, listener = opened(core, "dash")
    feed(core, listener, w.Listen(1, "s", "temp"))
    assert llink.take()[1] == w.Retained("s", "temp", pack(1), stale=True)
    # the same peer comes back and unregisters on purpose: the value goes
    slink2, sender2 = opened(core, "sensor")
    register(core, sender2, {"retained": True})
    feed(core, sender2, w.UnregisterSender(1))
    feed(core, listener, w.Listen(2, "s", "temp"))
    assert llink.take() == [w.Listening(2)]
    assert core.stats()["retained_values"] == 0


def test_another_peer_taking_the_name_over_clears_stale_values(core: GatewayCore) -> None:
    _, sender = opened(core, "sensor")
    register(core, sender, {"retained": True})
    feed(core, sender, w.Trigger(1, pack(1)))
    core.detach(sender)
    _, other = opened(core, "impostor")
    register(core, other, {"retained": True})
    assert core.retained.matching("s", None) == []


def test_bad_meta_is_malformed_with_the_sender_ref(core: GatewayCore) -> None:
    link, session = opened(core, "sensor")
    register(core, session, {"retained": ["nope"]})
    [err] = link.take()
    assert isinstance(err, w.Error) and err.code == ErrorCode.MALFORMED and err.ref == 1
    assert "'nope', which is not a declared event" in err.message
    assert core.table.sender("s") is None


def test_events_not_retained_are_not_kept(core: GatewayCore) -> None:
    _, session = opened(core, "sensor")
    register(core, session, {"retained": ["temp"]})
    feed(core, session, w.Trigger(2, pack(40)))
    register(core, session, None, name="plain")  # duplicate refs: refused, nothing kept
    assert core.retained.matching(None, None) == []


def test_a_value_too_large_for_the_listener_is_dropped_and_counted(core: GatewayCore) -> None:
    _, sender = opened(core, "sensor")
    register(core, sender, {"retained": True})
    feed(core, sender, w.Trigger(1, pack("x" * 200)))
    link = MemoryLink("small")
    small = core.attach(link)
    feed(core, small, w.Hello("small", 64, 0), w.Listen(1, "s", "temp"))
    assert [type(m) for m in link.take()] == [w.Welcome, w.Listening]
    assert small.dropped_too_large == 1 and core.stats()["dropped_too_large"] == 1


def test_a_full_link_drops_retained_values_like_events(core: GatewayCore) -> None:
    _, sender = opened(core, "sensor")
    register(core, sender, {"retained": True})
    feed(core, sender, w.Trigger(1, pack(1)))
    link, listener = opened(core, "dash")
    link.refuse_events = True
    feed(core, listener, w.Listen(1, "s", None))
    assert link.take() == [w.Listening(1)] and link.dropped == 1


def test_the_acl_filters_retained_values_as_it_filters_events() -> None:
    core = GatewayCore("gw", clock=FakeClock())
    core.access.install(
        Policy.from_table(
            {
                "anonymous": {"own": ["*"], "listen": ["*"]},
                "users": {"ctl": {"listen": [["s", "hum"]]}},
            }
        )
    )
    _, sender = opened(core, "sensor")
    register(core, sender, {"retained": True})
    feed(core, sender, w.Trigger(1, pack(1)), w.Trigger(2, pack(2)))
    link, ctl = opened(core, "ctl")
    ctl.principal = Principal("ctl", "user")
    feed(core, ctl, w.Listen(1, "s", None))  # allowed: some rule can match
    assert link.take() == [w.Listening(1), w.Retained("s", "hum", pack(2))]  # not temp
    feed(core, ctl, w.Listen(2, "s", "temp"))
    [refusal] = link.take()
    assert isinstance(refusal, w.Error) and refusal.code == ErrorCode.NOT_AUTHORISED


def test_the_bounds_come_from_limits() -> None:
    core = GatewayCore("gw", clock=FakeClock(), limits=Limits(retained_values=1))
    _, sender = opened(core, "sensor")
    register(core, sender, {"retained": True})
    feed(core, sender, w.Trigger(1, pack(1)), w.Trigger(2, pack(2)))
    assert core.stats()["retained_values"] == 1 and core.stats()["retained_refused"] == 1


def test_in_process_senders_and_listeners_of_the_gateway(core: GatewayCore) -> None:
    sender = core.endpoints.add_sender("local", ["temp"], retained=True)
    sender.trigger("temp", 3)
    got: list[tuple[dict[str, Any], Any]] = []
    core.endpoints.add_listener(lambda info, data: got.append((info, data)), "local")
    assert got == [({"sender": "local", "event": "temp", "retained": True, "stale": False}, 3)]
    link, remote = opened(core, "dash")
    feed(core, remote, w.Listen(1, None, None))
    assert link.take()[1] == w.Retained("local", "temp", pack(3))
    core.endpoints.remove_sender("local", on_purpose=False)  # the gateway stopping
    assert core.retained.matching("local", "temp")[0][1].stale
    core.endpoints.add_sender("local", ["temp"], retained=True)
    core.endpoints.remove_sender("local")  # on purpose
    assert core.retained.matching("local", None) == []


def test_local_router_gives_new_listeners_the_last_value() -> None:
    router = LocalRouter()
    sensor = router.add_sender("s", ["temp", "hum"], retained=["temp"])
    sensor.trigger("temp", 21.5)
    sensor.trigger("hum", 40)
    got: list[tuple[dict[str, Any], Any]] = []
    router.add_listener(lambda info, data: got.append((info, data)), "s")
    assert got == [({"sender": "s", "event": "temp", "retained": True, "stale": False}, 21.5)]
    sensor.trigger("temp", 22)
    assert got[-1] == ({"sender": "s", "event": "temp"}, 22)
    assert router.get_sender("s") is sensor


def test_a_no_local_listener_does_not_get_its_own_links_values(core: GatewayCore) -> None:
    link, session = opened(core, "both")
    register(core, session, {"retained": True})
    feed(core, session, w.Trigger(1, pack(1)))
    _, other = opened(core, "other")
    register(core, other, {"retained": True}, name="t")
    feed(core, other, w.Trigger(1, pack(2)))
    feed(core, session, w.Listen(1, None, None, options=LISTEN_NO_LOCAL))
    assert link.take()[-2:] == [w.Listening(1), w.Retained("t", "temp", pack(2))]
    feed(core, session, w.Listen(2, None, None))  # without no_local: its own value too
    assert set(link.take()[1:]) == {
        w.Retained("t", "temp", pack(2)),
        w.Retained("s", "temp", pack(1)),
    }


def test_local_router_keeps_no_value_it_cannot_encode_but_delivers_it() -> None:
    router = LocalRouter()
    sensor = router.add_sender("s", ["obj"], retained=True)
    got: list[Any] = []
    router.add_listener(lambda info, data: got.append(data), "s")
    marker = object()
    sensor.trigger("obj", marker)
    assert got == [marker] and router.retained.matching("s", None) == []


# --- the client core: which listener a RETAINED is for -------------------------------


def test_the_client_gives_retained_values_to_the_listen_they_follow() -> None:
    from sig.core import client as ccore

    session = ccore.ClientSession("app", clock=FakeClock())
    link = MemoryLink("tcp")
    session.start(link)
    session.receive(w.encode(w.Welcome("gw", 4096, 10000)))
    link.take()

    def cb(info: dict[str, Any], data: Any) -> None: ...

    def cb2(info: dict[str, Any], data: Any) -> None: ...

    first, lid = session.subscribe(cb, "s", None)
    assert lid is not None and link.take() == [w.Listen(lid, "s", None)]
    session.receive(w.encode(w.Listening(lid)))
    [ev] = session.receive(w.encode(w.Retained("s", "temp", pack(1))))
    assert isinstance(ev, ccore.RetainedReceived) and ev.key == ("s", None, 0) and ev.only is None
    second, lid2 = session.subscribe(cb2, "s", None)  # the key is listened to already
    assert lid2 is not None and lid2 != lid and link.take() == [w.Listen(lid2, "s", None)]
    session.receive(w.encode(w.Listening(lid2)))
    assert link.take() == [w.Unlisten(lid2)]  # its values follow; the first LISTEN stays
    [ev] = session.receive(w.encode(w.Retained("s", "temp", pack(1), stale=True)))
    assert isinstance(ev, ccore.RetainedReceived) and ev.only is second and ev.stale
    assert session.registrations.listen_ids == {("s", None, 0): lid}


def test_the_retained_body_is_encoded_once_per_change(core: GatewayCore) -> None:
    _, sender = opened(core, "sensor")
    register(core, sender, {"retained": True})
    feed(core, sender, w.Trigger(1, pack(1)))
    [(key, value)] = core.retained.matching("s", "temp")
    body = value.retained_body(key)
    assert value.retained_body(key) is body and w.decode(body) == w.Retained("s", "temp", pack(1))
    feed(core, sender, w.Trigger(1, pack(2)))
    assert w.decode(value.retained_body(key)) == w.Retained("s", "temp", pack(2))
    core.detach(sender)
    assert w.decode(value.retained_body(key)) == w.Retained("s", "temp", pack(2), stale=True)
