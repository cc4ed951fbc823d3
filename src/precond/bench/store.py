"""An SQLite store of finished trials (``precond-bench.sqlite`` by default), so sweeps resume and reuse work.

Each trial is one row of the ``trials`` table, keyed by :meth:`TrialSpec.key(code_version)
<precond.bench.trial.TrialSpec.key>` (workload, preset, optimizer, hyperparameters, seed and code version); the
``meta`` table holds ``schema_version`` and the ``runs`` table the plan of every ``precond bench`` run (so that
``precond bench report`` can re-render the latest one). Files of schema version 1 or 2 are migrated to version 3
when opened, in one transaction (the run conditions of version-1 trials are unknown, see :data:`_MIGRATE_1_TO_2`;
version 3 adds ``budget_seconds``, NULL for the step-budget trials that were all there was before); a file of a
newer version raises :class:`SchemaError`.

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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from precond.bench.environment import RunConditions
from precond.bench.trial import TrialResult, TrialSpec

__all__ = ["DEFAULT_PATH", "SCHEMA_VERSION", "RunRecord", "SchemaError", "Store"]

#: File name used when the CLI is given no ``--db``.
DEFAULT_PATH = "precond-bench.sqlite"
#: Version of the tables below; bump it (and migrate in :meth:`Store._check_schema`) when they change.
SCHEMA_VERSION = 3

_TRIALS = """
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
    message           TEXT NOT NULL,
    created_at        TEXT NOT NULL,                   -- ISO 8601, UTC
    threads           INTEGER,                         -- RunConditions; NULL for rows migrated from version 1
    cpu_count         INTEGER,
    load_start        REAL,                            -- 1-minute load average at the start, NULL if unknown
    load_end          REAL,                            -- ... and at the end of the trial
    budget_seconds    REAL                             -- equal-time trials: the wall-clock budget; NULL: steps
);
CREATE INDEX IF NOT EXISTS trials_by_run ON trials (workload, preset, optimizer, code_version);
"""

_RUNS = """
CREATE TABLE IF NOT EXISTS runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    workload          TEXT NOT NULL,
    preset            TEXT NOT NULL,
    code_version      TEXT NOT NULL,
    plan              TEXT NOT NULL,                   -- JSON of Plan.to_dict()
    created_at        TEXT NOT NULL                    -- ISO 8601, UTC
);
"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
    + _TRIALS
    + _RUNS
    + "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{version}');\n"
)

#: Columns of version 1's ``trials`` table that version 2 keeps (it dropped ``peak_memory_bytes``).
_V1_KEPT = (
    "key, workload, preset, optimizer, hparams, seed, code_version, status, final_val, steps_run, curve, "
    "train_seconds, step_seconds, state_bytes, model_bytes, message, created_at"
)
#: Version 1 -> 2: drop ``peak_memory_bytes`` (meaningless on CPU, see TrialResult), add the run conditions
#: (NULL for the old rows) and the ``runs`` table. SQLite cannot drop a NOT NULL column portably, so the table is
#: rebuilt; the caller runs this inside one transaction.
_MIGRATE_1_TO_2 = (
    "ALTER TABLE trials RENAME TO trials_v1;\n"
    "DROP INDEX IF EXISTS trials_by_run;\n"
    + _TRIALS
    + f"INSERT INTO trials ({_V1_KEPT}) SELECT {_V1_KEPT} FROM trials_v1 ORDER BY rowid;\n"
    "DROP TABLE trials_v1;\n" + _RUNS + f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';\n"
)
#: Version 2 -> 3: the equal-time budget of a trial (NULL for every existing, step-budget, trial).
_MIGRATE_2_TO_3 = (
    "ALTER TABLE trials ADD COLUMN budget_seconds REAL;\n"
    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';\n"
)

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
    "message",
    "created_at",
    "threads",
    "cpu_count",
    "load_start",
    "load_end",
    "budget_seconds",
)


@dataclass(frozen=True)
class RunRecord:
    """One ``precond bench`` run as the store recorded it when it started: its plan (``Plan.to_dict()``)."""

    id: int
    workload: str
    preset: str
    code_version: str
    plan: dict[str, Any]
    created_at: str


class SchemaError(RuntimeError):
    """The file is not a precond bench database, or one of another schema version."""


def _hparams_from_json(text: str) -> tuple[tuple[str, Any], ...]:
    return tuple(json.loads(text).items())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _conditions_row(c: RunConditions | None) -> tuple[Any, ...]:
    return (None, None, None, None) if c is None else (c.threads, c.cpu_count, c.load_start, c.load_end)


def _where(**filters: str | None) -> tuple[str, list[str]]:
    """`` WHERE a = ? AND ...`` over the filters that are not ``None`` (column names are ours, never user input)."""
    given = {k: v for k, v in filters.items() if v is not None}
    if not given:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k in given), list(given.values())


class Store:
    """Finished trials in an SQLite file (created if missing); use as a context manager or call :meth:`close`.

    ``path=":memory:"`` gives a throwaway in-memory store. A path that cannot hold the file (a folder, a missing
    or unwritable folder) raises :class:`ValueError` saying so; a file that is not a store, :class:`SchemaError`.
    """

    def __init__(self, path: str | Path = DEFAULT_PATH, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            file = Path(self.path)
            if file.is_dir():
                raise ValueError(f"{file} is a folder; name a file in it instead, e.g. {file / DEFAULT_PATH}")
            if not file.parent.is_dir():
                raise ValueError(f"the folder of {file} does not exist; create {file.parent} or choose another file")
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout)
        except sqlite3.OperationalError as exc:
            raise ValueError(f"cannot open or create {self.path} ({exc}); choose a file in a writable folder") from None
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
        except sqlite3.OperationalError as exc:  # e.g. a new file in a read-only folder
            raise ValueError(f"cannot read {self.path} ({exc}); choose a file in a writable folder") from None
        if not tables:
            # one transaction: a new file gets every table and its version, or nothing
            self._script(_SCHEMA.format(version=SCHEMA_VERSION))
            return
        if "meta" not in tables or "trials" not in tables:
            raise SchemaError(f"{self.path} is an SQLite database but not a precond bench store (tables: {tables})")
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = row[0] if row else None
        if found in ("1", "2"):
            self._script(_MIGRATE_1_TO_2 if found == "1" else _MIGRATE_2_TO_3)
            found = str(SCHEMA_VERSION)
        if found != str(SCHEMA_VERSION):
            raise SchemaError(
                f"{self.path} has bench schema version {found}, this precond needs {SCHEMA_VERSION}; "
                "use another --db file (or delete this one to start over)"
            )

    def _script(self, sql: str) -> None:
        """Run ``sql`` in one transaction: all of it or, on any error, none of it."""
        try:
            self._conn.executescript("BEGIN IMMEDIATE;\n" + sql + "COMMIT;")
        except sqlite3.OperationalError as exc:
            if self._conn.in_transaction:
                self._conn.rollback()
            if "readonly" in str(exc) or "unable to open" in str(exc):
                raise ValueError(f"{self.path} is not writable ({exc}); choose a writable file") from None
            raise
        except BaseException:
            if self._conn.in_transaction:
                self._conn.rollback()
            raise

    def check_writable(self) -> None:
        """Raise :class:`ValueError` if trials cannot be written (e.g. a read-only file): checked before training,
        so that no trial is trained and then lost."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
        except sqlite3.OperationalError as exc:
            raise ValueError(f"{self.path} is not writable ({exc}); choose a writable file") from None
        finally:
            if self._conn.in_transaction:
                self._conn.rollback()

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
            result.message,
            _now(),
            *_conditions_row(result.conditions),
            spec.budget_seconds,
        )
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._conn:
            self._conn.execute(f"INSERT OR REPLACE INTO trials ({', '.join(_COLUMNS)}) VALUES ({placeholders})", row)
        return key

    def add_run(self, plan: Mapping[str, Any], code_version: str) -> int:
        """Record that a run of ``plan`` (``Plan.to_dict()``, with ``workload`` and ``preset``) starts; its id."""
        text = json.dumps(dict(plan), sort_keys=True, allow_nan=False)
        with self._conn:
            cursor = self._conn.execute(
                "INSERT INTO runs (workload, preset, code_version, plan, created_at) VALUES (?, ?, ?, ?, ?)",
                (plan["workload"], plan["preset"], code_version, text, _now()),
            )
        return int(cursor.lastrowid or 0)

    def delete(self, key: str) -> bool:
        """Remove the trial ``key``; whether there was one."""
        with self._conn:
            return self._conn.execute("DELETE FROM trials WHERE key = ?", (key,)).rowcount > 0

    # ---------------------------------------------------------------------------------------------- reading

    @staticmethod
    def _result(row: sqlite3.Row | tuple[Any, ...]) -> TrialResult:
        r = dict(zip(_COLUMNS, row, strict=True))
        spec = TrialSpec(
            r["workload"],
            r["preset"],
            r["optimizer"],
            _hparams_from_json(r["hparams"]),
            r["seed"],
            r["budget_seconds"],
        )
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
            message=r["message"],
            conditions=None
            if r["threads"] is None
            else RunConditions(r["threads"], r["cpu_count"], r["load_start"], r["load_end"]),
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
        where, args = _where(workload=workload, preset=preset, optimizer=optimizer, code_version=code_version)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM trials{where} ORDER BY created_at, rowid"
        return [self._result(row) for row in self._conn.execute(sql, args)]

    def code_versions(self, workload: str | None = None, preset: str | None = None) -> list[str]:
        """Distinct code versions of the trials (of ``workload``/``preset`` when given), most recent trial first."""
        where, args = _where(workload=workload, preset=preset)
        rows = self._conn.execute(
            f"SELECT code_version FROM trials{where} GROUP BY code_version "
            "ORDER BY MAX(created_at) DESC, MAX(rowid) DESC",
            args,
        )
        return [r[0] for r in rows]

    def contents(self) -> list[tuple[str, str, int]]:
        """``(workload, preset, number of trials)`` of every workload/preset in the store, most recent first."""
        rows = self._conn.execute(
            "SELECT workload, preset, COUNT(*) FROM trials GROUP BY workload, preset "
            "ORDER BY MAX(created_at) DESC, MAX(rowid) DESC"
        )
        return [(w, p, int(n)) for w, p, n in rows]

    def latest_run(
        self, workload: str | None = None, preset: str | None = None, code_version: str | None = None
    ) -> RunRecord | None:
        """The most recently started run (matching every filter given), or ``None``."""
        where, args = _where(workload=workload, preset=preset, code_version=code_version)
        row = self._conn.execute(
            f"SELECT id, workload, preset, code_version, plan, created_at FROM runs{where} ORDER BY id DESC LIMIT 1",
            args,
        ).fetchone()
        if row is None:
            return None
        return RunRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])

    def latest_trial(self, workload: str | None = None, preset: str | None = None) -> TrialResult | None:
        """The most recently stored trial (of ``workload``/``preset`` when given), or ``None``."""
        where, args = _where(workload=workload, preset=preset)
        row = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM trials{where} ORDER BY created_at DESC, rowid DESC LIMIT 1", args
        ).fetchone()
        return None if row is None else self._result(row)

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
