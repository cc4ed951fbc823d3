"""An SQLite store of finished trials (``precond-bench.sqlite`` by default), so sweeps resume and reuse work.

Each trial is one row of the ``trials`` table, keyed by :meth:`TrialSpec.key(code_version)
<precond.bench.trial.TrialSpec.key>` (workload, preset, optimizer, hyperparameters, seed and code version); the
``meta`` table holds ``schema_version``. Opening a file written with another schema version raises
:class:`SchemaError` (there is only version 1 so far: nothing to migrate; a later version would migrate old files
here, inside one transaction).

Consistency: every :meth:`Store.put` is one ``INSERT OR REPLACE`` inside one transaction (``with connection:``), so
a row is either fully written or not at all, also when Ctrl-C or a crash interrupts it; a trial interrupted while
it trains is never put, so it is simply run again next time. The database uses SQLite's default rollback journal
rather than WAL: each commit comes after seconds of training, so WAL's faster commits buy nothing, while the
rollback journal keeps the database a single file (no ``-wal``/``-shm`` side files to copy along) and also works
on network file systems; it is just as atomic. Concurrent sweeps on one file are serialised by SQLite's locking
(``timeout`` seconds of waiting for a lock).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from precond.bench.trial import TrialResult, TrialSpec

__all__ = ["DEFAULT_PATH", "SCHEMA_VERSION", "SchemaError", "Store"]

#: File name used when the CLI is given no ``--db``.
DEFAULT_PATH = "precond-bench.sqlite"
#: Version of the tables below; bump it (and migrate in :meth:`Store._check_schema`) when they change.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    key               TEXT PRIMARY KEY,                -- TrialSpec.key(code_version): SHA-256 hex
    workload          TEXT NOT NULL,
    preset            TEXT NOT NULL,
    optimizer         TEXT NOT NULL,
    hparams           TEXT NOT NULL,                   -- JSON object, keys sorted
    seed              INTEGER NOT NULL,
    code_version      TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('ok', 'diverged', 'error')),
    final_val         REAL,                            -- NULL unless status = 'ok'
    steps_run         INTEGER NOT NULL,
    curve             TEXT NOT NULL,                   -- JSON [[step, val_loss, train_seconds], ...]
    train_seconds     REAL NOT NULL,
    step_seconds      REAL NOT NULL,
    state_bytes       INTEGER NOT NULL,
    model_bytes       INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    message           TEXT NOT NULL,
    created_at        TEXT NOT NULL                    -- ISO 8601, UTC
);
CREATE INDEX IF NOT EXISTS trials_by_run ON trials (workload, preset, optimizer, code_version);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{version}');
"""

_COLUMNS = (
    "key",
    "workload",
    "preset",
    "optimizer",
    "hparams",
    "seed",
    "code_version",
    "status",
    "final_val",
    "steps_run",
    "curve",
    "train_seconds",
    "step_seconds",
    "state_bytes",
    "model_bytes",
    "peak_memory_bytes",
    "message",
    "created_at",
)


class SchemaError(RuntimeError):
    """The file is not a precond bench database, or one of another schema version."""


def _hparams_from_json(text: str) -> tuple[tuple[str, Any], ...]:
    return tuple(json.loads(text).items())


class Store:
    """Finished trials in an SQLite file (created if missing); use as a context manager or call :meth:`close`.

    ``path=":memory:"`` gives a throwaway in-memory store.
    """

    def __init__(self, path: str | Path = DEFAULT_PATH, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self._conn = sqlite3.connect(self.path, timeout=timeout)
        try:
            self._check_schema()
        except BaseException:
            self._conn.close()
            raise

    def _check_schema(self) -> None:
        try:
            tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise SchemaError(f"{self.path} is not an SQLite database ({exc})") from exc
        if not tables:
            # one transaction: a new file gets both tables and its version, or nothing
            self._conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA.format(version=SCHEMA_VERSION) + "COMMIT;")
            return
        if "meta" not in tables or "trials" not in tables:
            raise SchemaError(f"{self.path} is an SQLite database but not a precond bench store (tables: {tables})")
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = row[0] if row else None
        if found != str(SCHEMA_VERSION):
            raise SchemaError(
                f"{self.path} has bench schema version {found}, this precond needs {SCHEMA_VERSION}; "
                "use another --db file (or delete this one to start over)"
            )

    @property
    def schema_version(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    # ---------------------------------------------------------------------------------------------- writing

    def put(self, result: TrialResult, code_version: str) -> str:
        """Store ``result`` (replacing any row with the same key) in one transaction; return its key."""
        spec = result.spec
        key = spec.key(code_version)
        row = (
            key,
            spec.workload,
            spec.preset,
            spec.optimizer,
            json.dumps(spec.hparams_dict, sort_keys=True, allow_nan=False),
            spec.seed,
            code_version,
            result.status,
            result.final_val,
            result.steps_run,
            json.dumps([list(p) for p in result.curve]),
            result.train_seconds,
            result.step_seconds,
            result.state_bytes,
            result.model_bytes,
            result.peak_memory_bytes,
            result.message,
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._conn:
            self._conn.execute(f"INSERT OR REPLACE INTO trials ({', '.join(_COLUMNS)}) VALUES ({placeholders})", row)
        return key

    def delete(self, key: str) -> bool:
        """Remove the trial ``key``; whether there was one."""
        with self._conn:
            return self._conn.execute("DELETE FROM trials WHERE key = ?", (key,)).rowcount > 0

    # ---------------------------------------------------------------------------------------------- reading

    @staticmethod
    def _result(row: sqlite3.Row | tuple[Any, ...]) -> TrialResult:
        r = dict(zip(_COLUMNS, row, strict=True))
        spec = TrialSpec(r["workload"], r["preset"], r["optimizer"], _hparams_from_json(r["hparams"]), r["seed"])
        return TrialResult(
            spec=spec,
            status=r["status"],
            final_val=r["final_val"],
            curve=tuple((int(s), float(v), float(t)) for s, v, t in json.loads(r["curve"])),
            steps_run=r["steps_run"],
            train_seconds=r["train_seconds"],
            step_seconds=r["step_seconds"],
            state_bytes=r["state_bytes"],
            model_bytes=r["model_bytes"],
            peak_memory_bytes=r["peak_memory_bytes"],
            message=r["message"],
        )

    def get(self, key: str) -> TrialResult | None:
        """The stored result of trial ``key``, or ``None``."""
        row = self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM trials WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._result(row)

    def __contains__(self, key: object) -> bool:
        return self._conn.execute("SELECT 1 FROM trials WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

    def results(
        self,
        workload: str | None = None,
        preset: str | None = None,
        optimizer: str | None = None,
        code_version: str | None = None,
    ) -> list[TrialResult]:
        """Stored results matching every filter given, oldest first."""
        where, args = [], []
        for column, value in (
            ("workload", workload),
            ("preset", preset),
            ("optimizer", optimizer),
            ("code_version", code_version),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM trials"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, rowid"
        return [self._result(row) for row in self._conn.execute(sql, args)]

    def code_versions(self) -> list[str]:
        """Distinct code versions in the store, most recent trial first."""
        rows = self._conn.execute(
            "SELECT code_version FROM trials GROUP BY code_version ORDER BY MAX(created_at) DESC, MAX(rowid) DESC"
        )
        return [r[0] for r in rows]

    def __iter__(self) -> Iterator[TrialResult]:
        return iter(self.results())

    # ---------------------------------------------------------------------------------------------- lifetime

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
