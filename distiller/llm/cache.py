"""The call cache: every answered call, addressed by the content of its request, shared across runs.

Key: SHA-256 of (provider, model, messages, temperature, max_tokens, schema name, schema JSON) in
canonical JSON. The base URL and the key are not part of it (the same model behind another URL gives the
same kind of answer; the key is never stored anywhere). The value is the *validated* answer of the
original request — after any parse retries — so a hit is as good as a fresh call.

Storage: SQLite in WAL mode, one committed row per answer as it arrives. WAL with synchronous=NORMAL
survives a killed process (SIGKILL) with every committed answer intact; only an OS crash or power loss
can lose the last few. Several processes may read and write it at once (WAL, busy timeout).
Only successful answers are cached: a failure is retried by the next run, which is what a re-run is for.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from distiller.llm.types import Message

CACHE_FILENAME = "llm_cache.sqlite"
KEY_VERSION = 1  # bump when the key's recipe changes, so old entries are never misread

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    parsed TEXT NOT NULL,
    raw TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created_at TEXT NOT NULL
)
"""


def cache_key(
    *,
    provider: str,
    model: str,
    messages: Sequence[Message],
    temperature: float,
    max_tokens: int,
    schema_name: str,
    schema_text: str,
) -> str:
    payload = {
        "v": KEY_VERSION,
        "provider": provider,
        "model": model,
        "messages": [[m.role, m.content] for m in messages],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "schema_name": schema_name,
        "schema": schema_text,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CachedAnswer(BaseModel):
    parsed: dict[str, Any]
    raw: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    created_at: str = ""


class CallCache:
    """Thread-safe (one connection, one lock); cheap enough to call from the event loop (~0.1 ms a write)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    @classmethod
    def in_dir(cls, cache_dir: Path | str) -> CallCache:
        """The shared cache of a config: `CallCache.in_dir(config.cache_path)`."""
        return cls(Path(cache_dir) / CACHE_FILENAME)

    def get(self, key: str) -> CachedAnswer | None:
        with self._lock:
            row = self._db.execute(
                "SELECT parsed, raw, input_tokens, output_tokens, cost_usd, created_at "
                "FROM calls WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return CachedAnswer(
            parsed=json.loads(row[0]),
            raw=row[1],
            input_tokens=row[2],
            output_tokens=row[3],
            cost_usd=row[4],
            created_at=row[5],
        )

    def contains(self, keys: Iterable[str]) -> set[str]:
        """Which of these keys have an answer (for estimates and progress)."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(wanted), 500):  # SQLite's bound-variable limit
                part = wanted[i : i + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT key FROM calls WHERE key IN ({marks})", part).fetchall()
                found.update(r[0] for r in rows)
        return found

    def put(self, key: str, answer: CachedAnswer, *, provider: str, model: str, schema_name: str) -> None:
        created = answer.created_at or datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            # Autocommit mode: the row is durable when execute() returns.
            self._db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    provider,
                    model,
                    schema_name,
                    json.dumps(answer.parsed, ensure_ascii=False),
                    answer.raw,
                    answer.input_tokens,
                    answer.output_tokens,
                    answer.cost_usd,
                    created,
                ),
            )

    def output_stats(
        self, provider: str | None = None, model: str | None = None
    ) -> dict[str, tuple[int, float]]:
        """schema name -> (answers, mean output tokens billed per answer), for calibrating estimates
        (a model's own answers when it has some, else every model's)."""
        sql = "SELECT schema_name, COUNT(*), AVG(output_tokens) FROM calls WHERE output_tokens > 0"
        args: tuple[str, ...] = ()
        if provider is not None and model is not None:
            sql, args = sql + " AND provider = ? AND model = ?", (provider, model)
        with self._lock:
            rows = self._db.execute(sql + " GROUP BY schema_name", args).fetchall()
        return {r[0]: (int(r[1]), float(r[2])) for r in rows}

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CACHE_FILENAME", "CachedAnswer", "CallCache", "cache_key"]
