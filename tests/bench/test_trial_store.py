"""Trials (spec keys, schedule, training loop, divergence, errors, memory) and the SQLite store."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from torch import nn

import precond
from precond.bench.store import SCHEMA_VERSION, SchemaError, Store
from precond.bench.trial import (
    TrialResult,
    TrialSpec,
    code_version,
    optimizer_state_bytes,
    run_trial,
    schedule_factor,
)

# ------------------------------------------------------------------------------------------- fake workloads


@dataclass(frozen=True)
class FakeTask:
    model: nn.Module
    train_loss: Callable[[int], torch.Tensor]
    validate: Callable[[], float]


@dataclass(frozen=True)
class Quadratic1D:
    """``0.5 * a * w^2`` on one weight started at ``w0 * (1 + seed / 100)``: plain SGD multiplies ``w`` by
    ``1 - lr * factor_t * a`` at step ``t``, so every final loss is known in closed form (:meth:`final_loss`).

    ``nan_at``/``raise_at``: the training loss of that step is NaN / raises ``RuntimeError``.
    """

    curvature: float = 10.0
    name: str = "quad1d"
    preset: str = "tiny"
    steps: int = 20
    warmup: int = 2
    eval_every: int = 5
    w0: float = 1.0
    nan_at: int | None = None
    raise_at: int | None = None

    def start(self, seed: int) -> float:
        return self.w0 * (1 + seed / 100)

    def build(self, seed: int) -> FakeTask:
        model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            model.weight.fill_(self.start(seed))

        def loss() -> torch.Tensor:
            return 0.5 * self.curvature * model.weight.square().sum()

        def train_loss(step: int) -> torch.Tensor:
            if step == self.raise_at:
                raise RuntimeError("batch went missing")
            if step == self.nan_at:
                return loss() * float("nan")
            return loss()

        def validate() -> float:
            with torch.no_grad():
                return float(loss())

        return FakeTask(model, train_loss, validate)

    def final_loss(self, lr: float, seed: int = 0) -> float:
        """Closed form of the final loss of momentum-free SGD with peak learning rate ``lr``."""
        w = self.start(seed)
        for t in range(self.steps):
            w *= 1 - lr * schedule_factor(t, self.warmup, self.steps) * self.curvature
        return 0.5 * self.curvature * w * w


def sgd_spec(lr: float, seed: int = 0, workload: Quadratic1D | None = None, **extra: float) -> TrialSpec:
    wl = workload or Quadratic1D()
    return TrialSpec.make(wl.name, wl.preset, "sgd", {"lr": lr, "momentum": 0.0, **extra}, seed)


# ----------------------------------------------------------------------------------------------- TrialSpec


def test_spec_normalises_hparams_and_canonical_form_is_pinned() -> None:
    a = TrialSpec.make("mlp", "quick", "AdamW", {"weight_decay": 0.01, "lr": 0.001}, 0)
    b = TrialSpec.make("mlp", "quick", "adamw", {"lr": 0.001, "weight_decay": 0.01}, 0)
    assert a == b and hash(a) == hash(b)
    assert a.hparams == (("lr", 0.001), ("weight_decay", 0.01))
    # Pinned: changing the canonical form silently orphans every stored trial.
    assert a.canonical("v1") == (
        '{"code_version":"v1","hparams":{"lr":0.001,"weight_decay":0.01},'
        '"optimizer":"adamw","preset":"quick","seed":0,"workload":"mlp"}'
    )
    assert a.key("v1") == hashlib.sha256(a.canonical("v1").encode()).hexdigest()
    assert len(a.key("v1")) == 64


def test_key_changes_with_every_field() -> None:
    base = TrialSpec.make("mlp", "quick", "adamw", {"lr": 0.001}, 0)
    keys = {
        base.key("v1"),
        base.key("v2"),
        replace(base, seed=1).key("v1"),
        TrialSpec.make("mlp", "quick", "adamw", {"lr": 0.002}, 0).key("v1"),
        TrialSpec.make("mlp", "quick", "adamw", {"lr": 0.001, "weight_decay": 0.0}, 0).key("v1"),
        TrialSpec.make("mlp", "quick", "soap", {"lr": 0.001}, 0).key("v1"),
        TrialSpec.make("mlp", "tiny", "adamw", {"lr": 0.001}, 0).key("v1"),
        TrialSpec.make("lm", "quick", "adamw", {"lr": 0.001}, 0).key("v1"),
    }
    assert len(keys) == 8
    assert base.key("v1") == TrialSpec.make("mlp", "quick", "adamw", {"lr": 0.001}, 0).key("v1")


def test_spec_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="finite"):
        TrialSpec.make("mlp", "quick", "adamw", {"lr": math.nan}, 0)
    with pytest.raises(TypeError):
        TrialSpec.make("mlp", "quick", "adamw", {"lr": object()}, 0)
    with pytest.raises(TypeError, match="seed"):
        TrialSpec.make("mlp", "quick", "adamw", {"lr": 0.1}, 1.5)  # type: ignore[arg-type]
    lists = TrialSpec.make("mlp", "quick", "adamw", {"betas": [0.9, 0.95]}, 0)
    assert lists.hparams == (("betas", (0.9, 0.95)),)  # lists become tuples: hashable


def test_code_version_names_package_and_is_stable() -> None:
    v = code_version()
    assert v.startswith(precond.__version__ + "+") and f"torch{torch.__version__}" in v
    assert v == code_version()


# ----------------------------------------------------------------------------------------------- schedule


def test_schedule_warmup_then_cosine_to_zero() -> None:
    assert [schedule_factor(t, 4, 20) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule_factor(4, 4, 20) == 1.0
    assert schedule_factor(12, 4, 20) == pytest.approx(0.5)
    assert 0 < schedule_factor(19, 4, 20) < 0.01
    assert schedule_factor(20, 4, 20) == pytest.approx(0.0)
    assert schedule_factor(0, 0, 10) == 1.0
    assert schedule_factor(3, 5, 5) == 0.8


# ---------------------------------------------------------------------------------------------- run_trial


def test_run_trial_matches_closed_form_and_records_curve() -> None:
    wl = Quadratic1D()
    calls: list[tuple[int, int, float]] = []
    result = run_trial(wl, sgd_spec(0.03), progress=lambda s, n, loss: calls.append((s, n, loss)))
    assert result.status == "ok" and result.message == ""
    assert [p[0] for p in result.curve] == [0, 5, 10, 15, 20]
    assert result.curve[0][1] == pytest.approx(0.5 * 10.0)
    assert result.final_val == result.curve[-1][1]
    assert result.final_val == pytest.approx(wl.final_loss(0.03), rel=1e-4)
    assert result.steps_run == 20 and [c[0] for c in calls] == list(range(1, 21)) and calls[0][1] == 20
    assert calls[0][2] == pytest.approx(5.0)
    seconds = [p[2] for p in result.curve]
    assert seconds == sorted(seconds) and seconds[-1] == result.train_seconds > 0
    assert 0 < result.step_seconds * 20 <= result.train_seconds
    assert result.state_bytes == 0  # momentum-free SGD keeps no state
    assert result.model_bytes == 8  # one float32 weight and its gradient
    c = result.conditions
    assert c is not None and c.threads == torch.get_num_threads() and c.cpu_count == os.cpu_count()


def test_run_trial_counts_adamw_state() -> None:
    wl = Quadratic1D()
    spec = TrialSpec.make(wl.name, wl.preset, "adamw", {"lr": 0.01}, 0)
    result = run_trial(wl, spec)
    assert result.status == "ok"
    assert result.state_bytes == 12  # exp_avg, exp_avg_sq and the float32 step counter of one weight


def test_run_trial_is_deterministic_per_seed() -> None:
    wl = Quadratic1D()
    a, b, c = run_trial(wl, sgd_spec(0.03)), run_trial(wl, sgd_spec(0.03)), run_trial(wl, sgd_spec(0.03, seed=1))
    assert a.curve[-1][:2] == b.curve[-1][:2]
    assert c.final_val == pytest.approx(wl.final_loss(0.03, seed=1), rel=1e-4) and c.final_val != a.final_val


def test_loss_explosion_is_recorded_as_diverged() -> None:
    wl = Quadratic1D(curvature=30.0)
    result = run_trial(wl, sgd_spec(0.1, workload=wl))  # |1 - lr * a| = 2: the loss quadruples every step
    assert result.status == "diverged" and result.final_val is None
    assert "exceeds 10x" in result.message
    assert 0 < result.steps_run < wl.steps
    assert result.curve[0][0] == 0


def test_nan_loss_is_recorded_as_diverged() -> None:
    wl = Quadratic1D(nan_at=7)
    result = run_trial(wl, sgd_spec(0.01, workload=wl))
    assert result.status == "diverged" and "non-finite training loss nan at step 7" in result.message
    assert result.steps_run == 7 and [p[0] for p in result.curve] == [0, 5]


def test_exceptions_become_error_results() -> None:
    wl = Quadratic1D(raise_at=3)
    result = run_trial(wl, sgd_spec(0.01, workload=wl))
    assert result.status == "error" and result.steps_run == 3
    assert "RuntimeError: batch went missing" in result.message
    bad_hparam = run_trial(Quadratic1D(), sgd_spec(0.01, momentum=-1.0))  # the optimizer refuses it
    assert bad_hparam.status == "error" and "ValueError" in bad_hparam.message and bad_hparam.steps_run == 0


def test_run_trial_refuses_a_spec_for_another_workload() -> None:
    with pytest.raises(ValueError, match="spec is for"):
        run_trial(Quadratic1D(name="other"), sgd_spec(0.01))


def test_state_bytes_counts_shared_storage_once_and_skips_params() -> None:
    p = nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=0.1)
    buffer = torch.zeros(10)
    opt.state[p] = {"a": buffer[:5], "b": [buffer[5:], {"c": torch.zeros(3, dtype=torch.float64)}], "alias": p[:2]}
    assert optimizer_state_bytes(opt) == 10 * 4 + 3 * 8


class _Factor:
    """State kept in a plain object, as pytorch_optimizer's ``PreConditioner`` keeps it."""

    def __init__(self, side: int) -> None:
        self.matrix, self.root, self.me = torch.zeros(side, side), torch.zeros(side, side, dtype=torch.float64), self


def test_state_bytes_counts_tensors_held_by_plain_objects() -> None:
    p = nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=0.1)
    opt.state[p] = {"factors": [_Factor(3), _Factor(2)], "kind": torch.float32, "fn": len}  # cycles, non-tensors
    assert optimizer_state_bytes(opt) == (9 + 4) * (4 + 8)


def test_state_bytes_of_scalable_shampoo_counts_its_preconditioner_and_graft() -> None:
    """pytorch_optimizer.ScalableShampoo on a 6×4 matrix: momentum, graft momentum (6×4 each), statistics and
    inverse roots (6×6 and 4×4 each), all float32."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    p = nn.Parameter(torch.randn(6, 4))
    opt = pytorch_optimizer.ScalableShampoo(
        [p], block_size=64, shape_interpretation=False, start_preconditioning_step=1, preconditioning_compute_steps=1
    )
    p.grad = torch.randn(6, 4)
    opt.step()
    assert optimizer_state_bytes(opt) == 4 * (2 * 6 * 4 + 2 * (6 * 6 + 4 * 4))


# ------------------------------------------------------------------------------------------------- store


def _results() -> list[TrialResult]:
    ok = run_trial(Quadratic1D(), sgd_spec(0.03))
    diverged = run_trial(Quadratic1D(curvature=30.0), sgd_spec(0.1, workload=Quadratic1D(curvature=30.0)))
    error = TrialResult(
        spec=TrialSpec.make("quad1d", "tiny", "adamw", {"lr": 0.1, "betas": (0.9, 0.95)}, 2),
        status="error",
        final_val=None,
        curve=(),
        steps_run=0,
        train_seconds=0.0,
        step_seconds=0.0,
        state_bytes=0,
        model_bytes=0,
        message="ValueError: nope ' \" ; DROP TABLE trials",
    )
    return [ok, diverged, error]


def test_store_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bench.sqlite"
    results = _results()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION and len(store) == 0
        keys = [store.put(r, "v1") for r in results]
        assert keys == [r.spec.key("v1") for r in results]
        for key, r in zip(keys, results, strict=True):
            assert store.get(key) == r
        assert store.get("0" * 64) is None
    with Store(path) as store:  # reopening the file
        assert len(store) == 3 and keys[0] in store
        assert [store.get(k) for k in keys] == results
        assert store.get(keys[2]).spec.hparams_dict["betas"] == (0.9, 0.95)  # type: ignore[union-attr]


def test_store_filters_and_replaces(tmp_path: Path) -> None:
    ok, diverged, error = _results()
    with Store(tmp_path / "b.sqlite") as store:
        store.put(ok, "v1")
        store.put(diverged, "v1")
        store.put(error, "v2")
        assert store.results() == [ok, diverged, error]
        assert store.results(optimizer="adamw") == [error]
        assert store.results(code_version="v1", workload="quad1d", preset="tiny") == [ok, diverged]
        assert store.results(optimizer="sgd", code_version="v2") == []
        assert store.code_versions() == ["v2", "v1"]
        rerun = replace(ok, train_seconds=123.0)
        store.put(rerun, "v1")  # same key: replaced, not duplicated
        assert len(store) == 3 and store.get(ok.spec.key("v1")) == rerun
        assert store.delete(ok.spec.key("v1")) and not store.delete(ok.spec.key("v1"))


def test_store_refuses_other_schema_versions_and_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(SchemaError, match="schema version 0"):
        Store(path)

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all, just some bytes " * 20)
    with pytest.raises(SchemaError, match="not an SQLite database"):
        Store(junk)

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(SchemaError, match="not a precond bench store"):
        Store(foreign)


def test_store_rows_are_plain_sql(tmp_path: Path) -> None:
    """Other tools can read the file: hparams and curves are JSON, the key is the spec's."""
    ok = _results()[0]
    path = tmp_path / "b.sqlite"
    with Store(path) as store:
        store.put(ok, "v1")
    with sqlite3.connect(path) as conn:
        key, hparams, curve, status = conn.execute("SELECT key, hparams, curve, status FROM trials").fetchone()
    conn.close()
    assert key == ok.spec.key("v1") and status == "ok"
    assert json.loads(hparams) == {"lr": 0.03, "momentum": 0.0}
    assert [tuple(p) for p in json.loads(curve)] == list(ok.curve)


# ------------------------------------------------------------------------------------------ schema migration

#: The schema SQL of store version 1 (precond before issue 11), verbatim: the fixture of an old database.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    key               TEXT PRIMARY KEY,
    workload          TEXT NOT NULL,
    preset            TEXT NOT NULL,
    optimizer         TEXT NOT NULL,
    hparams           TEXT NOT NULL,
    seed              INTEGER NOT NULL,
    code_version      TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('ok', 'diverged', 'error')),
    final_val         REAL,
    steps_run         INTEGER NOT NULL,
    curve             TEXT NOT NULL,
    train_seconds     REAL NOT NULL,
    step_seconds      REAL NOT NULL,
    state_bytes       INTEGER NOT NULL,
    model_bytes       INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    message           TEXT NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_by_run ON trials (workload, preset, optimizer, code_version);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
"""


def _v1_database(path: Path) -> list[str]:
    """An old-schema file with two trials (the second stored later); their keys."""
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
        rows = [
            (
                "k-old",
                "quad1d",
                "tiny",
                "sgd",
                '{"lr": 0.03, "momentum": 0.0}',
                0,
                "v1",
                "ok",
                0.25,
                20,
                "[[0, 5.0, 0.0], [20, 0.25, 0.5]]",
                0.5,
                0.01,
                0,
                8,
                46_137_344,
                "",
                "2025-01-01T00:00:00+00:00",
            ),
            (
                "k-new",
                "quad1d",
                "tiny",
                "adamw",
                '{"lr": 0.1}',
                1,
                "v1",
                "diverged",
                None,
                3,
                "[[0, 5.0, 0.0]]",
                0.1,
                0.02,
                12,
                8,
                0,
                "loss exploded",
                "2025-01-02T00:00:00+00:00",
            ),
        ]
        conn.executemany(f"INSERT INTO trials VALUES ({', '.join('?' * 18)})", rows)
    conn.close()
    return ["k-old", "k-new"]


def test_version_1_database_is_migrated_and_keeps_its_trials(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    keys = _v1_database(path)
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        old, new = (store.get(k) for k in keys)
        assert old is not None and new is not None
        assert old.spec == TrialSpec.make("quad1d", "tiny", "sgd", {"lr": 0.03, "momentum": 0.0}, 0)
        assert old.final_val == 0.25 and old.curve == ((0, 5.0, 0.0), (20, 0.25, 0.5)) and old.model_bytes == 8
        assert old.conditions is None and new.conditions is None  # not recorded by the old code
        assert new.status == "diverged" and new.message == "loss exploded" and new.state_bytes == 12
        assert store.results() == [old, new] and store.code_versions() == ["v1"]
        assert store.latest_trial() == new and store.latest_run() is None
        fresh = _results()[0]  # new rows, with conditions, go in next to the old ones
        store.put(fresh, "v2")
        assert store.get(fresh.spec.key("v2")) == fresh and fresh.conditions is not None
        store.add_run({"workload": "quad1d", "preset": "tiny", "seeds": 1}, "v2")
        assert store.latest_run() is not None
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(trials)")]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
    assert "peak_memory_bytes" not in columns and {"threads", "cpu_count", "load_start", "load_end"} <= set(columns)
    assert "trials_v1" not in tables and "runs" in tables and "trials_by_run" in indexes
    with Store(path) as store:  # reopening a migrated file changes nothing
        assert len(store) == 3 and store.schema_version == 3


def test_version_2_database_gains_budget_seconds_and_keeps_its_trials(tmp_path: Path) -> None:
    import precond.bench.store as store_module

    path = tmp_path / "v2.sqlite"
    lines = store_module._TRIALS.splitlines(keepends=True)
    v2_trials = "".join(line for line in lines if "budget_seconds" not in line).replace(
        "load_end          REAL,", "load_end REAL"
    )
    assert "budget_seconds" not in v2_trials
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
        + v2_trials
        + store_module._RUNS
        + "INSERT INTO meta VALUES ('schema_version', '2');"
    )
    old = _results()[0]
    columns = [c for c in store_module._COLUMNS if c != "budget_seconds"]
    row = (old.spec.key("v2"), "quad1d", "tiny", "sgd", '{"lr": 0.1}', 0, "v2", "ok", 0.5, 20, "[[0, 1.0, 0.0]]")
    row += (0.1, 0.01, 4, 8, "", "2025-01-01T00:00:00+00:00", 1, 2, None, None)
    conn.execute(f"INSERT INTO trials ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", row)
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == 3
        (back,) = store.results()
        assert back.spec.budget_seconds is None and back.final_val == 0.5
        timed = replace(old, spec=replace(old.spec, budget_seconds=2.5))
        store.put(timed, "v2")
        assert store.get(timed.spec.key("v2")) == timed and timed.spec.key("v2") != old.spec.key("v2")


def test_failed_migration_leaves_the_old_file_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import precond.bench.store as store_module

    path = tmp_path / "v1.sqlite"
    _v1_database(path)
    broken = store_module._MIGRATE_1_TO_2.replace("DROP TABLE trials_v1;", "DROP TABLE no_such_table;")
    monkeypatch.setattr(store_module, "_MIGRATE_1_TO_2", broken)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        Store(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta").fetchone() == ("1",)
        assert conn.execute("SELECT COUNT(*), SUM(peak_memory_bytes) FROM trials").fetchone() == (2, 46_137_344)
    conn.close()


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(SchemaError, match="schema version 4, this precond needs 3"):
        Store(path)


@pytest.mark.parametrize("case", ["folder", "missing folder", "parent is a file"])
def test_store_paths_that_cannot_hold_a_file_are_value_errors(tmp_path: Path, case: str) -> None:
    (tmp_path / "f").write_text("x")
    path, match = {
        "folder": (tmp_path, "is a folder; name a file in it instead"),
        "missing folder": (tmp_path / "nope" / "b.sqlite", "does not exist; create"),
        "parent is a file": (tmp_path / "f" / "b.sqlite", "does not exist; create"),
    }[case]
    with pytest.raises(ValueError, match=match):
        Store(path)


def test_check_writable_refuses_a_read_only_database(tmp_path: Path) -> None:
    """The probe the CLI runs before training (a read-only file is simulated with SQLite's read-only mode,
    since file permissions do not stop root)."""
    path = tmp_path / "b.sqlite"
    with Store(path) as store:
        store.check_writable()  # a writable file passes, and the probe leaves no transaction open
        store.put(_results()[2], "v1")
        store._conn.close()
        store._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        with pytest.raises(ValueError, match=r"is not writable .*readonly.*; choose a writable file"):
            store.check_writable()
        assert len(store) == 1
