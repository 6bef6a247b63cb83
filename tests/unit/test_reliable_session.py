"""The reliable session (sig.core.reliable.ReliableSession) on a fake clock.

First the scripted exchanges of tests/vectors.json (the C library replays the
same ones), then each rule of PROTOCOL.md section 5 on its own: accept,
duplicate, gap, lost ACK, window full and the queue behind it, max retries,
fast retransmit, bad ACKs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sig.core.reliable import MAX_RETRIES, ReliableSession
from sig.errors import ErrorCode, RemoteProtocolError
from sig.protocol import messages as w
from sig.protocol.reliable import add_seq, strip_seq
from tests.support.fakes import FakeClock

VECTORS = json.loads((Path(__file__).parents[1] / "vectors.json").read_text())["reliable"]


def make(**options: Any) -> tuple[ReliableSession, list[bytes]]:
    out: list[bytes] = []
    return ReliableSession(out.append, **options), out


def ack(n: int) -> bytes:
    return w.encode(w.Ack(n))


def req(i: int) -> bytes:
    return w.encode(w.Request(i, "s", "m"))


@pytest.mark.parametrize("script", VECTORS["exchanges"], ids=lambda s: s["name"])
def test_scripted_exchanges(script: dict[str, Any]) -> None:
    """Every step's output, counters and state, in milliseconds (window 2, RTO 200)."""
    rs, out = make(
        window=VECTORS["window"], rto_initial=VECTORS["rto_ms"], max_retries=VECTORS["max_retries"]
    )
    for step in script["steps"]:
        out.clear()
        now = step["t_ms"]
        if step["do"] == "send":
            body = bytes.fromhex(step["body"])
            if step["sequenced"]:
                assert rs.send(body, now)
            else:
                out.append(body)  # best effort: straight to the line, past the window
        elif step["do"] == "receive":
            got = rs.receive(bytes.fromhex(step["body"]), now)
            assert (got.hex() if got is not None else None) == step["accepted"]
        else:
            assert rs.poll(now) is bool(step.get("ends_session"))
        where = f"{script['name']} at {now} ms"
        assert [b.hex() for b in out] == step["out"], where
        assert {k: rs.counts[k] for k in step["counters"]} == step["counters"], where
        state = {
            "expected": rs.expected,
            "next_seq": rs.next_seq,
            "kept": [k.seq for k in rs.kept],
            "rto_ms": rs.rto,
            "retries": rs.retries,
            "deadline_ms": rs.deadline,
        }
        assert state == step["state"], where


def test_accept_in_order_and_ack_each() -> None:
    rs, out = make()
    for seq in (1, 2, 3):
        assert rs.receive(add_seq(req(seq), seq), 0.0) == req(seq)
    assert out == [ack(1), ack(2), ack(3)] and rs.expected == 4


def test_duplicate_is_dropped_and_acked_again() -> None:
    """The sender lost our ACK and sent the frame again: handled once, ACKed twice."""
    rs, out = make()
    assert rs.receive(add_seq(req(1), 1), 0.0) == req(1)
    assert rs.receive(add_seq(req(1), 1), 0.1) is None
    assert out == [ack(1), ack(1)] and rs.counts["duplicates"] == 1


def test_gap_is_dropped_until_the_missing_frame_comes() -> None:
    rs, out = make()
    assert rs.receive(add_seq(req(2), 2), 0.0) is None  # 1 was lost
    assert rs.receive(add_seq(req(3), 3), 0.0) is None
    assert out == [ack(0), ack(0)] and rs.counts["out_of_order"] == 2
    assert rs.receive(add_seq(req(1), 1), 0.1) == req(1)
    assert rs.receive(add_seq(req(2), 2), 0.1) == req(2)
    assert rs.expected == 3


def test_unsequenced_frames_pass_without_ack() -> None:
    rs, out = make()
    event = w.encode(w.Trigger(1))
    assert rs.receive(event, 0.0) == event and out == [] and rs.expected == 1


@pytest.mark.parametrize(
    "bad", [c for c in VECTORS["bad"] if c["reliable"]], ids=lambda c: c["name"]
)
def test_bad_sequence_headers_raise_and_are_not_acked(bad: dict[str, Any]) -> None:
    rs, out = make()
    with pytest.raises(RemoteProtocolError) as info:
        rs.receive(bytes.fromhex(bad["body"]), 0.0)
    assert info.value.code == ErrorCode[bad["error"]] and out == [] and rs.expected == 1


def test_lost_ack_then_retransmission_with_backoff() -> None:
    clock = FakeClock()
    rs, out = make(rto_initial=0.2)
    rs.send(req(1), clock())
    first = out[:]
    assert strip_seq(first[0]) == (1, req(1))
    out.clear()
    clock.now += 0.19
    assert not rs.poll(clock()) and out == []  # not due yet
    clock.now += 0.02
    assert not rs.poll(clock()) and out == first and rs.rto == pytest.approx(0.4)
    out.clear()
    rs.receive(ack(1), clock())
    assert not rs.kept and rs.deadline is None and rs.retries == 0 and rs.rto == 0.2
    assert rs.counts["retransmits"] == 1


def test_window_full_queues_then_drains_in_order() -> None:
    rs, out = make(window=2, queue_limit=3)
    assert all(rs.send(req(i), 0.0) for i in range(1, 6))  # 2 sent, 3 queued
    assert not rs.send(req(6), 0.0)  # window and queue full: the caller refuses it
    assert [strip_seq(b)[0] for b in out] == [1, 2] and len(rs.queue) == 3
    out.clear()
    rs.receive(ack(1), 0.1)
    assert [strip_seq(b) for b in out] == [(3, req(3))]
    out.clear()
    rs.receive(ack(3), 0.2)
    assert [strip_seq(b) for b in out] == [(4, req(4)), (5, req(5))] and not rs.queue


def test_max_retries_ends_the_session() -> None:
    clock = FakeClock()
    rs, out = make(rto_initial=0.2)
    rs.send(req(1), clock())
    for _ in range(MAX_RETRIES):
        deadline = rs.next_deadline()
        assert deadline is not None
        clock.now = deadline
        assert not rs.poll(clock())
    assert rs.counts["retransmits"] == MAX_RETRIES and rs.rto == pytest.approx(1.6)
    deadline = rs.next_deadline()
    assert deadline is not None
    clock.now = deadline
    assert rs.poll(clock()) and rs.failed and rs.counts["reliable_failures"] == 1


def test_progress_resets_the_retry_count() -> None:
    """Eight timeouts spread over frames that each got through are not a failure."""
    clock = FakeClock()
    rs, out = make(rto_initial=0.2)
    for i in range(1, 2 * MAX_RETRIES):
        rs.send(req(i), clock())
        clock.now += 0.2
        assert not rs.poll(clock())  # one retransmission each
        rs.receive(ack(i), clock())
    assert rs.counts["reliable_failures"] == 0 and rs.retries == 0


def test_ack_for_a_seq_never_sent_is_counted_and_ignored() -> None:
    rs, out = make()
    rs.send(req(1), 0.0)
    rs.receive(ack(5), 0.1)
    assert rs.counts["bad_acks"] == 1 and len(rs.kept) == 1 and out[1:] == []


def test_fast_retransmit_once_per_oldest_seq() -> None:
    """A window of 4 with its first frame lost: 3 duplicate ACKs, one resend."""
    rs, out = make(window=4)
    for i in range(1, 5):
        rs.send(req(i), 0.0)
    out.clear()
    for _ in range(3):
        rs.receive(ack(0), 0.001)
    assert [strip_seq(b)[0] for b in out] == [1, 2, 3, 4] and rs.deadline == pytest.approx(0.2)
    out.clear()
    rs.receive(ack(2), 0.002)  # 1 and 2 came; 3 lost again
    rs.receive(ack(2), 0.003)
    assert [strip_seq(b)[0] for b in out] == [3, 4] and rs.counts["retransmits"] == 6


def test_fast_retransmit_can_be_off() -> None:
    rs, out = make(fast_retransmit=False)
    rs.send(req(1), 0.0)
    out.clear()
    rs.receive(ack(0), 10.0)
    assert out == []
