"""What retained values cost a trigger, in the sans-I/O core, and with the sqlite3 file.

One sender on one link triggers N events into ``GatewayCore.receive`` (the
hot path: a short TRIGGER), with one listening link that takes every frame.
Four rows, in the same run:

* ``not retained``: the sender retains nothing (the baseline: one dict
  lookup per trigger for the retained check);
* ``retained``: its event is retained, the store is updated per trigger;
* ``retained + db``: the store's journal notes every change for a
  :class:`sig.routers.retained_db.RetainedDb` (a dict assignment); the timer
  and the writer thread write the batches meanwhile;
* ``1,000 senders``: round robin over 1,000 senders, not retained and
  retained with the file (every batch then holds 1,000 rows).

Per row: ns per trigger (median of the runs, min-max). The database rows
give the batches written and the rows they held: a few batches for 200,000
triggers is what shows that no trigger waits for a write.

Run: ``python bench/retained.py [N]`` (default 200000 triggers, 5 runs).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, header, summary, table

sys.path.insert(0, str(ROOT))

from sig.core.gateway import GatewayCore
from sig.protocol import messages as w
from sig.protocol.data import pack
from sig.routers.retained_db import RetainedDb

RUNS = 5


class NullLink:
    """A link that accepts every frame and keeps none."""

    persistent = False
    dropped = 0
    peer_subject = None

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, frame: bytes, droppable: bool = False, urgent: bool = False) -> bool:
        return True

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


def setup(core: GatewayCore, senders: int, retained: bool) -> tuple[Any, list[bytes]]:
    """One link with ``senders`` senders of one event each, one listener of everything."""
    meta = pack({"retained": True}) if retained else b""
    sender = core.attach(NullLink("sensor"))
    core.receive(sender, w.encode(w.Hello("sensor", 65535, 0)))
    for i in range(senders):
        reg = w.RegisterSender(i + 1, f"s{i}", ((i + 1, "v"),), (), False, meta)
        core.receive(sender, w.encode(reg))
    listener = core.attach(NullLink("dash"))
    core.receive(listener, w.encode(w.Hello("dash", 65535, 0)))
    core.receive(listener, w.encode(w.Listen(1, None, None)))
    bodies = [w.encode(w.Trigger(i + 1, pack(21.5))) for i in range(senders)]
    return sender, bodies


async def run(n: int, senders: int, retained: bool, db_dir: Path | None) -> float:
    """ns per trigger of one run."""
    from sig.core.limits import Limits

    core = GatewayCore("bench", limits=Limits(senders_per_link=senders + 1))
    db = None
    if db_dir is not None:
        db = RetainedDb(db_dir / f"r{time.monotonic_ns()}.db", core.retained, interval=0.2)
        db.open()
    session, bodies = setup(core, senders, retained)
    receive = core.receive
    count = len(bodies)
    elapsed = 0.0
    for block in range(0, n, 20000):
        start = time.perf_counter()
        for i in range(block, min(n, block + 20000)):
            receive(session, bodies[i % count])
        elapsed += time.perf_counter() - start
        await asyncio.sleep(0.001)  # the loop turns: the db's timer hands batches to its thread
    if db is not None:
        db.close()
        counters = core.counters
        run.batches += counters["retained_db_writes"]  # type: ignore[attr-defined]
        run.rows += counters["retained_db_rows"]  # type: ignore[attr-defined]
    return elapsed / n * 1e9


run.batches = 0  # type: ignore[attr-defined]
run.rows = 0  # type: ignore[attr-defined]


async def main(n: int) -> None:
    header(
        "Retained values: cost per trigger (sans-I/O core)",
        [
            f"{n:,} short TRIGGERs into GatewayCore.receive, one listening link, {RUNS} runs",
            "timed in blocks of 20,000 triggers; the loop turns between blocks (db timer)",
        ],
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("not retained", 1, False, None),
            ("retained", 1, True, None),
            ("retained + db", 1, True, Path(tmp)),
            ("1,000 senders, not retained", 1000, False, None),
            ("1,000 senders retained + db", 1000, True, Path(tmp)),
        ]
        results: dict[str, list[float]] = {c[0]: [] for c in cases}
        writes: dict[str, list[int]] = {c[0]: [0, 0] for c in cases}
        for _ in range(RUNS):  # the cases interleaved, so that the machine's load hits all alike
            for label, senders, retained, db_dir in cases:
                run.batches = run.rows = 0  # type: ignore[attr-defined]
                results[label].append(await run(n, senders, retained, db_dir))
                writes[label][0] += run.batches  # type: ignore[attr-defined]
                writes[label][1] += run.rows  # type: ignore[attr-defined]
        for label, _, _, db_dir in cases:
            batches, rows_written = writes[label]
            done = f"{batches / RUNS:,.0f} batches, {rows_written / RUNS:,.0f} rows"
            rows.append([label, summary(results[label]), done if db_dir else "-"])
    print(table(["case", "ns / trigger", "db writes per run"], rows))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
