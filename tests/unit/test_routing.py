"""The brief's Semantics, one test per rule, on the in-process LocalRouter."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fakes import CountingDict
from hypothesis import given, settings
from hypothesis import strategies as st
from presence import plain

import sig
from sig.core.routing import RoutingTable


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, Any]] = []

    def __call__(self, info: dict[str, Any], data: Any) -> None:
        self.got.append((info["sender"], info["event"], data))

    def events(self) -> list[tuple[str, str]]:
        return [(s, e) for s, e, _ in self.got]


@pytest.fixture
def router() -> sig.LocalRouter:
    return sig.LocalRouter()


def test_targeted_event_reaches_only_its_listener(router: sig.LocalRouter) -> None:
    a, b = Recorder(), Recorder()
    router.add_listener(a, "S", "e1")
    router.add_listener(b, "S", "e2")
    s = router.add_sender("S", ["e1", "e2"])
    s.get_signal("e1").trigger(1)
    assert a.got == [("S", "e1", 1)]
    assert b.got == []


def test_same_event_name_of_another_sender_is_not_delivered(router: sig.LocalRouter) -> None:
    rec = Recorder()
    router.add_listener(rec, "S", "tick")
    other = router.add_sender("T", ["tick"])
    other.trigger("tick", 1)
    assert rec.got == []


def test_targeted_event_is_not_delivered_to_anonymous_listener(router: sig.LocalRouter) -> None:
    rec = Recorder()
    router.add_listener(rec, None, "tick")
    s = router.add_sender("S", ["tick"])
    s.trigger("tick", 1)
    assert rec.got == []


def test_sender_broadcast_gets_every_event_of_that_sender(router: sig.LocalRouter) -> None:
    rec = Recorder()
    router.add_listener(rec, "S", None)
    s = router.add_sender("S", ["tick", "tac", "#ch"])
    router.add_sender("T", ["tick"]).trigger("tick")
    s.trigger("tick", 1)
    s.trigger("tac")
    s.trigger("#ch", 3)
    assert plain(rec.got) == [
        ("S", "#connect", {"events": ["tick", "tac", "#ch"], "requests": []}),
        ("S", "tick", 1),
        ("S", "tac", None),
        ("S", "#ch", 3),
    ]


def test_channel_reaches_anonymous_listeners_from_any_sender(router: sig.LocalRouter) -> None:
    rec = Recorder()
    router.add_listener(rec, None, "#temp")
    router.add_sender("A", ["#temp"]).trigger("#temp", 20)
    router.add_sender("B", ["#temp"]).trigger("#temp", 21)
    assert rec.got == [("A", "#temp", 20), ("B", "#temp", 21)]


def test_channel_with_a_named_sender_is_targeted(router: sig.LocalRouter) -> None:
    rec = Recorder()
    router.add_listener(rec, "A", "#temp")
    router.add_sender("A", ["#temp"]).trigger("#temp", 20)
    router.add_sender("B", ["#temp"]).trigger("#temp", 21)
    assert rec.got == [("A", "#temp", 20)]


def test_router_broadcast_gets_everything(router: sig.LocalRouter) -> None:
    rec = Recorder()
    router.add_listener(rec, None, None)
    s = router.add_sender("S", ["e"])
    s.trigger("e", 1)
    router.remove_sender("S")
    assert rec.events() == [("S", "#connect"), ("S", "e"), ("S", "#disconnect")]


def test_connect_and_disconnect_are_fired_by_the_router(router: sig.LocalRouter) -> None:
    any_connect, s_disconnect = Recorder(), Recorder()
    router.add_listener(any_connect, None, "#connect")
    router.add_listener(s_disconnect, "S", "#disconnect")
    router.add_sender("S", ["e", "#c"], {"get": lambda p: p, None: lambda m, p: p})
    router.add_sender("T", [])
    router.remove_sender("S")
    router.remove_sender("T")
    data = {"events": ["e", "#c"], "requests": ["get"], "default": True}
    assert plain(any_connect.got) == [
        ("S", "#connect", data),
        ("T", "#connect", {"events": [], "requests": []}),
    ]
    assert plain(s_disconnect.got) == [("S", "#disconnect", data)]


def test_listening_before_the_sender_exists(router: sig.LocalRouter) -> None:
    rec = Recorder()
    router.add_listener(rec, "later", "e")
    assert router.get_sender("later") is None
    router.add_sender("later", ["e"]).trigger("e", "hi")
    assert rec.got == [("later", "e", "hi")]


def test_listeners_get_events_again_when_the_sender_comes_back(router: sig.LocalRouter) -> None:
    rec = Recorder()
    router.add_listener(rec, "S", "e")
    router.add_sender("S", ["e"]).trigger("e", 1)
    router.remove_sender("S")
    router.add_sender("S", ["e"]).trigger("e", 2)
    assert rec.got == [("S", "e", 1), ("S", "e", 2)]


def test_removed_listener_gets_nothing_more(router: sig.LocalRouter) -> None:
    rec, kept = Recorder(), Recorder()
    handle = router.add_listener(rec, "S", "e")
    router.add_listener(kept, "S", "e")
    s = router.add_sender("S", ["e"])
    s.trigger("e", 1)
    assert router.remove_listener(handle)
    assert not router.remove_listener(handle)
    s.trigger("e", 2)
    assert rec.got == [("S", "e", 1)]
    assert kept.got == [("S", "e", 1), ("S", "e", 2)]


def test_remove_listener_by_callback_and_key(router: sig.LocalRouter) -> None:
    rec = Recorder()
    router.add_listener(rec, "S", "e")
    s = router.add_sender("S", ["e"])
    assert router.remove_listener(rec, "S", "e")
    s.trigger("e", 1)
    assert rec.got == []


def test_duplicate_sender_name_is_refused(router: sig.LocalRouter) -> None:
    router.add_sender("S", ["e"])
    with pytest.raises(sig.DuplicateSenderError, match="'S' is already connected"):
        router.add_sender("S", ["f"])
    assert router.list_senders() == {"S": {"events": ["e"], "requests": []}}


def test_removed_sender_can_no_longer_trigger(router: sig.LocalRouter) -> None:
    s = router.add_sender("S", ["e"])
    router.remove_sender(s)
    with pytest.raises(sig.NoSuchSender):
        s.trigger("e", 1)


def test_undeclared_event_cannot_be_triggered(router: sig.LocalRouter) -> None:
    s = router.add_sender("S", ["e"])
    with pytest.raises(sig.UnknownEventError, match="did not declare event 'x'"):
        s.get_signal("x")


def test_requests_with_named_and_default_handlers(router: sig.LocalRouter) -> None:
    router.add_sender("S", [], {"double": lambda p: p * 2, None: lambda method, p: f"{method}:{p}"})
    assert router.request("S", "double", 21) == 42
    assert router.request("S", "other", 1) == "other:1"


def test_request_errors_are_typed(router: sig.LocalRouter) -> None:
    def boom(params: Any) -> None:
        raise RuntimeError("sensor offline")

    router.add_sender("S", [], {"boom": boom})
    with pytest.raises(sig.NoSuchSender):
        router.request("nobody", "x")
    with pytest.raises(sig.NoSuchMethod):
        router.request("S", "x")
    with pytest.raises(sig.HandlerError, match="sensor offline"):
        router.request("S", "boom")


def test_a_raising_listener_does_not_stop_the_others(
    router: sig.LocalRouter, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()

    def bad(info: dict[str, Any], data: Any) -> None:
        raise ValueError("listener bug")

    router.add_listener(bad, "S", "e")
    router.add_listener(rec, "S", "e")
    with caplog.at_level(logging.ERROR, logger="sig"):
        router.add_sender("S", ["e"]).trigger("e", 1)
    assert rec.got == [("S", "e", 1)]
    assert router.listener_errors == 1
    assert "listener bug" in caplog.text


def test_wrong_types_from_the_api_get_clear_errors(router: sig.LocalRouter) -> None:
    with pytest.raises(sig.InvalidNameError):
        router.add_sender("", ["e"])
    with pytest.raises(sig.InvalidNameError, match="list of event names"):
        router.add_sender("S", "tick")
    with pytest.raises(sig.InvalidNameError):
        router.add_sender("S", [42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not callable"):
        router.add_listener("not a function", "S", "e")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not callable"):
        router.add_sender("S", ["e"], {"m": 3})  # type: ignore[dict-item]
    with pytest.raises(sig.InvalidNameError, match="reserved"):
        router.add_sender("$gateway", [])


def test_lookup_does_not_grow_with_unrelated_registrations() -> None:
    # O(1) in the number of registrations: match() touches at most four buckets,
    # so 10,000 non-matching subscriptions leave the result (and the buckets read) alone.
    table: RoutingTable[str] = RoutingTable()
    table.add_sender("S", ["e"])
    for i in range(10_000):
        table.subscribe(f"other{i}", f"T{i}", "e")
    table.subscribe("mine", "S", "e")
    assert table.match("S", "e") == ("mine",)
    assert len(table._subs) == 10_001


def test_one_subscriber_under_several_matching_keys_is_returned_once() -> None:
    table: RoutingTable[str] = RoutingTable()
    table.add_sender("S", ["#e"])
    for key in (("S", "#e"), ("S", None), (None, "#e"), (None, None)):
        table.subscribe("conn", *key)
    assert table.match("S", "#e") == ("conn",)
    table.unsubscribe("conn", None, None)
    assert table.match("S", "#e") == ("conn",)


# --- the match cache: every operation touches only what it changes -----------


def _table_with_cache(n: int) -> RoutingTable[str]:
    table: RoutingTable[str] = RoutingTable()
    for i in range(n):
        table.add_sender(f"s{i}", ["e", "#ch"])
        table.subscribe(f"l{i}", f"s{i}", "e")
        table.match(f"s{i}", "e")
        table.match(f"s{i}", "#ch")
    table._cache = CountingDict(table._cache)
    return table


def test_removing_a_sender_drops_only_its_own_cache_entries() -> None:
    # The quadratic teardown of issue 9: remove_sender scanned the whole cache.
    table = _table_with_cache(500)
    cache = table._cache
    assert isinstance(cache, CountingDict)
    before = dict(cache)
    cache.scans = 0
    table.remove_sender("s7")
    assert cache.scans == 0
    assert set(before) - set(cache) == {("s7", "e"), ("s7", "#ch")}
    assert all(cache[k] is v for k, v in before.items() if k[0] != "s7")
    table.check_cache()


@pytest.mark.parametrize(
    ("key", "dropped"),
    [
        (("s3", "e"), {("s3", "e")}),
        (("s3", None), {("s3", "e"), ("s3", "#ch")}),
        ((None, "#ch"), {(f"s{i}", "#ch") for i in range(200)}),
        ((None, "e"), set()),  # matches nothing (rule 3): the cache stays whole
    ],
)
def test_a_subscription_drops_only_the_cached_pairs_it_changes(
    key: tuple[str | None, str | None], dropped: set[tuple[str, str]]
) -> None:
    table = _table_with_cache(200)
    cache = table._cache
    assert isinstance(cache, CountingDict)
    before = set(cache)
    cache.scans = 0
    table.subscribe("new", *key)
    assert cache.scans == 0
    assert before - set(cache) == dropped
    table.check_cache()
    assert ("new" in table.match("s3", "#ch")) == (key[1] != "e")
    table.unsubscribe("new", *key)
    table.check_cache()
    assert "new" not in table.match("s3", "#ch")


def test_subscription_count_is_kept_not_summed() -> None:
    table: RoutingTable[str] = RoutingTable()
    table._subs = CountingDict()
    for i in range(100):
        table.subscribe("a", f"s{i}", None)
    table.subscribe("a", "s0", None)
    assert table.subscription_count() == 101
    table.unsubscribe("a", "s0", None)
    assert table.subscription_count() == 100
    assert table._subs.scans == 0


_names = st.sampled_from(["A", "B", "C"])
_events = st.sampled_from(["e", "f", "#c", "#d", "#connect", "#disconnect"])
_subs = st.sampled_from(["x", "y", "z"])
_ops = st.one_of(
    st.tuples(st.just("add"), _names),
    st.tuples(st.just("remove"), _names),
    st.tuples(st.just("remove_many"), st.lists(_names, max_size=3)),
    st.tuples(st.just("sub"), _subs, st.none() | _names, st.none() | _events),
    st.tuples(st.just("unsub"), _subs, st.none() | _names, st.none() | _events),
    st.tuples(st.just("match"), _names, _events),
    st.tuples(
        st.just("unsub_many"),
        _subs,
        st.lists(st.tuples(st.none() | _names, st.none() | _events), max_size=4),
    ),
    st.tuples(st.just("match"), st.sampled_from(["gone1", "gone2"]), _events),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ops, max_size=60))
def test_cache_and_its_index_agree_after_any_operations(ops: list[tuple[Any, ...]]) -> None:
    # At each announcement: someone listens, and the cached match is the right one.
    announced: list[bool] = []
    table: RoutingTable[str] = RoutingTable(
        lambda info, ev: announced.append(
            bool(table.match(info.name, ev))
            and set(table.match(info.name, ev)) == set(table._uncached_match(info.name, ev))
        )
    )
    for op in ops:
        if op[0] == "add":
            if table.sender(op[1]) is None:
                before = len(announced)
                table.add_sender(op[1], ["e", "f", "#c", "#d"])
                listened = bool(table._uncached_match(op[1], "#connect"))
                assert len(announced) - before == listened
        elif op[0] == "remove":
            before = len(announced)
            listened = bool(table._uncached_match(op[1], "#disconnect"))
            if table.remove_sender(op[1]) is not None:
                assert len(announced) - before == listened
                assert all(k[0] != op[1] for k in table._cache)
        elif op[0] == "remove_many":
            before = len(announced)
            live = [n for n in dict.fromkeys(op[1]) if table.sender(n) is not None]
            listened = sum(bool(table._uncached_match(n, "#disconnect")) for n in live)
            assert table.remove_senders(op[1]) == len(live)
            assert len(announced) - before == listened
            assert not any(k[0] in live for k in table._cache)
        elif op[0] == "sub":
            table.subscribe(op[1], op[2], op[3])
        elif op[0] == "unsub":
            table.unsubscribe(op[1], op[2], op[3])
        elif op[0] == "unsub_many":
            expected = {k: dict(b) for k, b in table._subs.items()}
            for key in op[2]:
                bucket = expected.get(key, {})
                if bucket.get(op[1]):
                    bucket[op[1]] -= 1
                    if not bucket[op[1]]:
                        del bucket[op[1]]
                    if not bucket:
                        del expected[key]
            table.unsubscribe_many(op[1], op[2])
            assert table._subs == expected
        else:
            got = table.match(op[1], op[2])
            assert set(got) == set(table._uncached_match(op[1], op[2]))
        table.check_cache()
    assert all(announced)
