"""The one reopen loop (sig.routers.retry): backoff delays and how keep_open ends."""

from __future__ import annotations

import pytest

from sig.routers.retry import Backoff, keep_open


def test_backoff_doubles_up_to_its_maximum_within_the_jitter() -> None:
    b = Backoff(initial=0.5, maximum=4.0, factor=2.0, jitter=0.1)
    for attempt, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        for _ in range(20):
            assert base * 0.9 <= b.delay(attempt) <= base * 1.1
    assert Backoff(jitter=0.0).delay(-3) == 0.5  # a negative attempt is the first one


async def test_keep_open_retries_failed_opens_with_growing_delays_and_stops_when_told() -> None:
    steps: list[str] = []
    delays: list[float] = []
    outcomes = iter([None, None, "conn-1", None, "conn-2"])

    async def open_once() -> str | None:
        conn = next(outcomes)
        steps.append(f"open:{conn}")
        return conn

    async def serve(conn: str) -> bool:
        steps.append(f"serve:{conn}")
        return conn != "conn-2"  # the second connection is the last

    # factor 2 from 1 ms: the delays say which attempt each wait was for
    backoff = Backoff(initial=0.001, maximum=1.0, factor=2.0, jitter=0.0)
    await keep_open(open_once, serve, backoff, waiting=delays.append)
    assert steps == [
        "open:None",
        "open:None",
        "open:conn-1",
        "serve:conn-1",
        "open:None",  # the attempt count starts again after a connection was up
        "open:conn-2",
        "serve:conn-2",
    ]
    assert delays == [0.001, 0.002, 0.001]


async def test_an_error_from_open_once_ends_the_loop() -> None:
    async def open_once() -> int | None:
        raise LookupError("no such port")

    async def serve(conn: int) -> bool:  # pragma: no cover - never reached
        raise AssertionError

    with pytest.raises(LookupError):
        await keep_open(open_once, serve, Backoff())
