"""A crash-safe result cache: one SQLite row per finished item, keyed by a content hash.

Each `put` is its own committed transaction (WAL journal, `synchronous=FULL`), so after `kill -9` or a
power cut every item reported done is on disk and nothing is half-written; items in flight at that
moment are simply absent. The key is a primary key, so a rerun that redoes an item replaces its row
and can never duplicate it. Several processes may share one cache file (SQLite locks it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def content_hash(*parts: Any) -> str:
    """sha256 (hex) of the canonical JSON of `parts`: equal content gives an equal key on any machine."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResultStore:
    """Maps content hashes to JSON records in one table of an SQLite file."""

    def __init__(self, path: str | os.PathLike, table: str = "results"):
        if not table.isidentifier():
            raise ValueError(f"invalid table name {table!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table = table
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, record TEXT NOT NULL, updated REAL NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a usable result cache ({exc}); delete it or choose another --cache") from exc

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored records of those `keys` that are present."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, record in self._conn.execute(f"SELECT key, record FROM {self.table} WHERE key IN ({marks})", chunk):
                out[key] = json.loads(record)
        return out

    def put_many(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        """Store (or replace) records, all in one committed transaction."""
        if not items:
            return
        now = time.time()
        rows = [(k, json.dumps(dict(v), ensure_ascii=False), now) for k, v in items.items()]
        with self._conn:  # BEGIN ... COMMIT (ROLLBACK on error)
            self._conn.execute("BEGIN")
            self._conn.executemany(f"INSERT OR REPLACE INTO {self.table} (key, record, updated) VALUES (?, ?, ?)", rows)

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        self.put_many({key: record})

    def __len__(self) -> int:
        return int(self._conn.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
