"""Retained values on disk (``sig serve --retain-db PATH``): sqlite3, off by default.

At start the file's values are loaded into the gateway's
:class:`~sig.core.retained.RetainedStore` as stale (their senders are not
connected yet), newest first, within the store's bounds. From then on the
store's ``journal`` tells every change; this module only notes it in a dict
(one assignment per trigger, the newest value per (sender, event) wins), and
a timer hands what piled up to one writer thread every ``interval`` seconds,
which writes it in one transaction (WAL mode, ``synchronous=NORMAL``). So a
trigger never waits for the disk, and a burst of triggers of one value costs
one row write. :meth:`RetainedDb.close` writes the rest (after the gateway
stopped, when every value is stale).

What a crash loses is at most the last ``interval`` of changes; a value is
never half written (sqlite's transactions).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from pathlib import Path

from sig.core.retained import Pair, RetainedStore, Value

logger = logging.getLogger(__name__)

#: Seconds between two writes of what changed, by default.
DEFAULT_INTERVAL = 0.2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS retained (
    sender TEXT NOT NULL,
    event TEXT NOT NULL,
    owner TEXT NOT NULL,
    data BLOB NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (sender, event)
)
"""
#: A noted change: (data, owner, when), or None for a value that went.
Row = tuple[bytes, str, float] | None


class RetainedDb:
    """One gateway's retained values in one sqlite3 file, written in batches off the loop."""

    def __init__(self, path: str | Path, store: RetainedStore, interval: float = DEFAULT_INTERVAL):
        self.path = Path(path)
        self.store = store
        self.interval = interval
        #: Batches written and rows they held (shown in ``$gateway stats``).
        self.counters = store.counters
        self.counters.update({"retained_db_writes": 0, "retained_db_rows": 0})
        self._pending: dict[Pair, Value | None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "sig-retained-db")
        self._db: sqlite3.Connection | None = None
        self._inflight: concurrent.futures.Future[None] | None = None

    def open(self) -> int:
        """Open (or create) the file, load its values as stale; returns how many were loaded.

        Raises OSError / sqlite3.Error when the file cannot be used.
        """
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        loaded = 0
        rows = db.execute("SELECT sender, event, data, owner FROM retained ORDER BY updated DESC")
        for sender, event, data, owner in rows:
            loaded += self.store.load(sender, event, bytes(data), owner)
        self._db = db
        self._loop = asyncio.get_running_loop()
        self.store.journal = self._note
        logger.info("retained values: %d loaded (stale) from %s", loaded, self.path)
        return loaded

    def _note(self, key: Pair, value: Value | None) -> None:
        """The store changed: note it (the newest wins); the timer writes it, never the caller."""
        self._pending[key] = value
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self.interval, self._flush)

    def _flush(self) -> None:
        """Hand what piled up to the writer thread (one batch in flight at a time)."""
        self._timer = None
        if not self._pending:
            return
        if self._inflight is not None and not self._inflight.done():
            assert self._loop is not None
            self._timer = self._loop.call_later(self.interval, self._flush)  # the disk is slow
            return
        self._inflight = self._writer.submit(self._write, self._take())

    def _take(self) -> dict[Pair, Row]:
        """What piled up, as rows (on the loop: the values may change after this)."""
        now = time.time()
        pending, self._pending = self._pending, {}
        return {k: None if v is None else (v.data, v.owner, now) for k, v in pending.items()}

    def _write(self, batch: dict[Pair, Row]) -> None:
        """Write one batch in one transaction (on the writer thread)."""
        db = self._db
        if db is None:
            return
        upserts = [(s, e, r[1], r[0], r[2]) for (s, e), r in batch.items() if r is not None]
        deletes = [key for key, r in batch.items() if r is None]
        try:
            with db:
                db.execute("BEGIN")
                db.executemany("DELETE FROM retained WHERE sender = ? AND event = ?", deletes)
                db.executemany(
                    "INSERT OR REPLACE INTO retained (sender, event, owner, data, updated)"
                    " VALUES (?, ?, ?, ?, ?)",
                    upserts,
                )
        except sqlite3.Error as exc:
            logger.error("retained values: writing %s failed: %s", self.path, exc)
            return
        self.counters["retained_db_writes"] += 1
        self.counters["retained_db_rows"] += len(batch)

    def close(self) -> None:
        """Write what is left, wait for it, close the file (after the gateway stopped)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.store.journal = None
        if self._inflight is not None:
            self._inflight.result()
        if self._pending:
            self._writer.submit(self._write, self._take()).result()
        self._writer.shutdown(wait=True)
        if self._db is not None:
            self._db.close()
            self._db = None
