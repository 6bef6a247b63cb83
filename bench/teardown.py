"""Teardown cost of a link that holds N registrations, in the sans-I/O core.

``GatewayCore.detach`` runs inside one event-loop callback, so its duration is
the event-loop stall a disconnect causes. The script registers N senders (one
event each) on one link, or N listeners, with a second link listening to
``#disconnect`` of one sender and to one targeted event (so the match cache is
as full as it is in a real gateway), then times ``detach``.

Run: ``python bench/teardown.py [N ...]`` (default 10000 20000 40000).
Limits on registrations per link are lifted for the measurement.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from sig import _gateway as gateway
from sig import _wire as w
from sig._gateway import GatewayCore


class NullLink:
    """A link that accepts every frame and keeps none."""

    persistent = False

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, frame: bytes, droppable: bool = False, urgent: bool = False) -> bool:
        return True

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


def _core() -> GatewayCore:
    """A core with the per-link registration limits lifted (if it has them)."""
    limits = getattr(gateway, "Limits", None)
    if limits is None:  # a gateway from before the limits
        return GatewayCore("bench")
    big = 10**9
    return GatewayCore("bench", limits=limits(big, big, big))


def teardown(n: int, kind: str) -> float:
    """Seconds ``detach`` takes for a link with ``n`` senders or listeners."""
    core = _core()
    watcher = core.attach(NullLink("watcher"))
    core.receive(watcher, w.encode(w.Hello("watcher", 65535, 0)))
    core.receive(watcher, w.encode(w.Listen(1, "s0", "#disconnect")))
    core.receive(watcher, w.encode(w.Listen(2, "s1", "e")))
    victim = core.attach(NullLink("victim"))
    core.receive(victim, w.encode(w.Hello("victim", 65535, 0)))
    for i in range(n):
        if kind == "senders":
            msg: w.Message = w.RegisterSender(i, f"s{i}", ((i, "e"),))
        else:
            msg = w.Listen(i, f"s{i}", "e")
        core.receive(victim, w.encode(msg))
    start = time.perf_counter()
    core.detach(victim)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [10_000, 20_000, 40_000]
    print("| registrations | senders teardown (ms) | listeners teardown (ms) |")
    print("|---:|---:|---:|")
    for n in sizes:
        s = min(teardown(n, "senders") for _ in range(3))
        lis = min(teardown(n, "listeners") for _ in range(3))
        print(f"| {n} | {s * 1000:.1f} | {lis * 1000:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
