"""`precond bench solvers` (quick sizes) end to end: the JSON record, the DCDM network matching the grid, and
the least-squares part's status and errors against numpy.linalg.lstsq; the options' bad input."""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from precond.bench.solvers.least_squares import CONDITIONS, lstsq_part
from precond.bench.solvers.problems import ill_conditioned
from precond.cli import main

HAS_PYAMG = importlib.util.find_spec("pyamg") is not None  # a benchmark peer (requirements/peers.txt), not in CI


@pytest.mark.slow
def test_quick_run_writes_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = contextlib.nullcontext() if HAS_PYAMG else pytest.warns(UserWarning, match="pyamg is not installed")
    with missing:
        assert main(["bench", "solvers", "--out", str(tmp_path), "--lsqr-iter-limit", "60"]) == 0
    assert "record:" in capsys.readouterr().out
    record = json.loads((tmp_path / "solvers_quick.json").read_text())
    assert record["meta"]["quick"] and record["meta"]["lsqr_iter_limit"] == 60
    assert (tmp_path / "solvers_quick.png").exists()
    relax = record["relax"]["mean_iterations"]
    assert relax["instance-optimal"] <= relax["best fixed ω"] < relax["ω=1.00"]
    dcdm = {r["method"]: r for r in record["dcdm"]}
    assert dcdm["DCDM (32² net)"]["converged"] == dcdm["DCDM (32² net)"]["rhs"] == 2
    assert dcdm["DCDM (32² net)"]["iterations"] < dcdm["CG"]["iterations"]
    assert ("pyamg SA-PCG" in dcdm) == HAS_PYAMG  # without pyamg its row is left out, the rest still runs
    rows = record["lstsq"]
    assert {r["cond"] for r in rows} == set(CONDITIONS) and all(r["shape"] == [2000, 50] for r in rows)
    plain = [r for r in rows if r["method"] == "lsqr (cap 60)"]
    assert [r["status"] for r in plain] == ["max_iter"] * 3 and all(r["iterations"] == 60 for r in plain)


def test_lstsq_part_rows_against_numpy() -> None:
    rows = lstsq_part([(600, 20)], (1e2, 1e10), lsqr_iter_limit=100)
    assert len(rows) == 2 * 6
    for r in rows:
        A, b = ill_conditioned(600, 20, r["cond"], seed=0)
        ref = np.linalg.lstsq(A, b, rcond=None)[0]
        best = np.linalg.norm(A @ ref - b)
        assert r["rel_residual"] * np.linalg.norm(b) == pytest.approx(r["residual_ratio"] * best, rel=1e-12)
        if r["method"].startswith(("sketch", "precond", "numpy")):
            assert r["status"] in ("converged", "direct")
            assert r["rel_error"] <= max(1e-10, r["cond"] * 1e-12)
            assert r["residual_ratio"] == pytest.approx(1.0, abs=1e-8)
    plain = {r["cond"]: r for r in rows if r["method"] == "lsqr (cap 100)"}
    assert plain[1e2]["status"] == "converged" and plain[1e2]["rel_error"] < 1e-10
    assert plain[1e10]["status"] == "max_iter" and plain[1e10]["iterations"] == 100
    assert plain[1e10]["rel_error"] > 1e-3  # unpreconditioned LSQR is far from the solution at the cap


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_lsqr_iter_limit_must_be_a_positive_integer(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "solvers", "--lsqr-iter-limit", value])
    assert "--lsqr-iter-limit" in capsys.readouterr().err
