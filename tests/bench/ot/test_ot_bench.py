"""``precond bench ot`` / benchmarks/ot.py: problems, error, rows under the hard time budget, summary, CLI end to end.

The budgeted child process itself is tested in tests/bench/test_harness.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from precond.bench import versions
from precond.bench.ot import output, problems, run, runners
from precond.bench.ot import summarize as _summarize
from precond.bench.ot.output import format_table
from precond.bench.ot.problems import FULL, QUICK, l1_error, make_problem, select_problems
from precond.bench.ot.run import run_method
from precond.cli import main
from tests.bench import stubs

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("kind", "size"),
    [("assignment", 50), ("gauss", 50), ("density1d_w1", 50), ("density1d_w2", 50), ("density2d_w2", 49)],
)
def test_make_problem_shapes_normalization_and_determinism(kind: str, size: int) -> None:
    a, b, M = make_problem(kind, 50, seed=3)
    assert a.shape == b.shape == (size,) and M.shape == (size, size)
    assert a.sum() == pytest.approx(1.0, abs=1e-14) and b.sum() == pytest.approx(1.0, abs=1e-14)
    assert (a > 0).all() and (b > 0).all()
    assert M.max() == 1.0 and M.min() >= 0.0
    a2, b2, M2 = make_problem(kind, 50, seed=3)
    assert np.array_equal(a, a2) and np.array_equal(b, b2) and np.array_equal(M, M2)
    if kind in ("assignment", "gauss"):
        assert not np.array_equal(M, make_problem(kind, 50, seed=4)[2])
        assert np.allclose(a, 1 / 50)
    else:
        assert np.allclose(np.diag(M), 0.0)  # same grid on both sides


def test_costs_match_pot() -> None:
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(40, 2))
    assert np.allclose(problems._dist(x, y), ot.dist(x, y), atol=1e-12)
    assert np.allclose(problems._dist(x, y, "euclidean"), ot.dist(x, y, metric="euclidean"), atol=1e-7)


def test_make_problem_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown problem kind"):
        make_problem("bogus", 10)


def test_l1_error_hand_computed() -> None:
    a = b = np.array([0.5, 0.5])
    assert l1_error(np.diag([0.5, 0.5]), a, b) == 0.0
    # rows [0.5, 0.5] exact; columns [0.4, 0.6] -> 0.1 + 0.1
    assert l1_error(np.array([[0.4, 0.1], [0.0, 0.5]]), a, b) == pytest.approx(0.2)
    # rows [0.3, 0.5], columns [0.3, 0.5] -> 0.2 + 0.2
    assert l1_error(np.array([[0.3, 0.0], [0.0, 0.5]]), a, b) == pytest.approx(0.4)
    assert l1_error(np.array([[np.nan, 0.0], [0.0, 0.5]]), a, b) == math.inf
    assert l1_error(np.array([[np.inf, 0.0], [0.0, 0.5]]), a, b) == math.inf


def test_overrunning_child_is_recorded_as_timed_out() -> None:
    t0 = time.perf_counter()
    row = run_method("a stub", "assignment", 8, 0.1, budget=1.0, threads=1, grace=0.3, target=stubs.sleep_forever)
    elapsed = time.perf_counter() - t0
    assert row["status"] == "timeout"
    assert row["timed_out"] and row["killed"] and not row["reached"]
    assert row["seconds"] == 1.0 and row["error"] is None and row["iterations"] is None
    # the budget clock starts when the child reports its solve started: setup (imports) does not count
    assert elapsed - row["setup_seconds"] >= 1.0
    assert output.format_row(row).split()[6] == ">budget"


@pytest.mark.slow
def test_failing_child_is_recorded_as_failed() -> None:
    row = run_method("a stub", "assignment", 8, 0.1, budget=5.0, threads=1, target=stubs.raise_after_start)
    assert row["status"] == "failed" and row["message"] == "RuntimeError: deliberate failure"
    assert not row["reached"] and not row["timed_out"] and row["error"] is None
    crashed = run_method("a stub", "assignment", 8, 0.1, budget=5.0, threads=1, target=stubs.crash)
    assert crashed["status"] == "failed" and crashed["message"] == "child exited with code 7"


def test_unknown_method_fails_before_any_child() -> None:
    with pytest.raises(ValueError, match="unknown method 'precond nope'; choose from precond sinkhorn"):
        run_method("precond nope", "assignment", 8, 0.1, budget=1.0)


def test_record_finished_child_within_and_over_the_budget() -> None:
    row = {"status": "ok", "reached": False, "timed_out": False}
    run._record(row, {"seconds": 2.5, "iterations": 40, "error": 9e-9}, budget=3.0)
    assert row["reached"] and not row["timed_out"] and row["seconds"] == 2.5 and row["iterations"] == 40
    row = {"status": "ok", "reached": False, "timed_out": False}
    run._record(row, {"seconds": 2.5, "iterations": 40, "error": math.inf}, budget=3.0)  # underflow
    assert not row["reached"] and row["status"] == "ok"
    row = {"status": "ok", "reached": False, "timed_out": False}
    run._record(row, {"seconds": 3.4, "iterations": 50, "error": 1e-10}, budget=3.0)  # finished in the grace
    assert row["status"] == "over_budget" and row["timed_out"] and not row["reached"]
    assert row["seconds"] == 3.0 and row["solve_seconds"] == 3.4


def test_per_iteration_is_the_median_step_of_the_history() -> None:
    # steps of 0.03, 0.03 and a busy 0.39 s: the median ignores the spike; entries every 10 iterations work too
    history = [(0, 1.0, 0.05, "sinkhorn"), (1, 0.5, 0.08, "sinkhorn"), (2, 0.2, 0.11, "sinkhorn"), (3, 0.1, 0.5, "x")]
    assert runners._per_iteration(history, 1.0, 3) == pytest.approx(0.03)
    assert runners._per_iteration([(0, 1, 0.0), (10, 1, 0.2), (20, 1, 0.4)], 1.0, 20) == pytest.approx(0.02)
    assert runners._per_iteration([], 1.0, 4) == 0.25  # no history: total time / iterations


def _row(method: str, problem: str, reached: bool, seconds: float | None, iterations: int | None, **kw) -> dict:
    row = {
        "problem": problem,
        "n": 100,
        "eps": 0.01,
        "method": method,
        "budget": 5.0,
        "status": "ok",
        "reached": reached,
        "timed_out": False,
        "seconds": seconds,
        "iterations": iterations,
        "error": 1e-9 if reached else 1e-5,
    }
    row.update(kw)
    return row


def test_summarize_ratios_hand_computed() -> None:
    timeout = {"status": "timeout", "timed_out": True, "error": None}
    rows = [
        # problem A: SNS 0.5 s / 20 its; log-Sinkhorn 200 its; POT: knopp 0.8 s, log 2.0 s, stabilized short,
        # eps-scaling killed; our scaling Sinkhorn 0.4 s
        _row("precond sinkhorn", "A", True, 0.4, 300),
        _row("precond sinkhorn_log", "A", True, 3.0, 200),
        _row("precond sns", "A", True, 0.5, 20),
        _row("POT sinkhorn", "A", True, 0.8, 310),
        _row("POT sinkhorn_log", "A", True, 2.0, 200),
        _row("POT sinkhorn_stabilized", "A", False, 4.0, 900),
        _row("POT sinkhorn_epsilon_scaling", "A", False, 5.0, None, **timeout),
        # problem B: log-Sinkhorn stops short after 1000 its, SNS 0.5 s / 50 its, no POT method reaches
        _row("precond sinkhorn", "B", False, 5.0, None, **timeout),
        _row("precond sinkhorn_log", "B", False, 4.9, 1000),
        _row("precond sns", "B", True, 0.5, 50),
        _row("POT sinkhorn", "B", False, 1.0, 500, error=math.inf),
        _row("POT sinkhorn_log", "B", False, 5.0, None, **timeout),
    ]
    lines = _summarize(rows, budget=5.0)
    assert len(lines) == 4
    sns_a, fast_a, sns_b, fast_b = lines
    assert sns_a.startswith("A n=100 eps=0.01: SNS 0.500 s, 20 iterations")
    assert "; 10.0× fewer iterations than log-Sinkhorn (200)" in sns_a  # 200 / 20
    assert "4.0× vs POT sinkhorn_log (2.00 s; POT's best of log/stabilized/eps-scaling)" in sns_a  # 2.0 / 0.5
    assert "1.6× vs POT sinkhorn (0.800 s; POT's best overall)" in sns_a  # 0.8 / 0.5
    assert fast_a == (  # 0.8 / 0.4
        "A n=100 eps=0.01: precond sinkhorn 0.400 s, 300 iterations; 2.0× vs POT sinkhorn (0.800 s; POT's best overall)"
    )
    assert "≥20.0× fewer iterations than log-Sinkhorn (1000)" in sns_b  # log did not reach: a lower bound
    # no POT method reached: lower bound from the budget, 5.0 / 0.5
    assert "≥10.0× vs POT's best overall (no POT method reached 1e-8 within the budget)" in sns_b
    assert "≥10.0× vs POT's best of log/stabilized/eps-scaling (no POT method" in sns_b
    assert "precond sinkhorn did not reach 1e-8 (over the 5 s budget)" in fast_b
    assert "neither it nor POT's best overall reached 1e-8" in fast_b

    table = format_table(rows).splitlines()
    assert table[0].split() == [
        "problem",
        "ours-sk",
        "ours-log",
        "ours-sns",
        "POT-sk",
        "POT-log",
        "POT-stab",
        "POT-eps",
    ]
    assert table[1].split()[3:] == ["0.400", "3.00", "0.500", "0.800", "2.00", "(1e-05)", ">5"]
    assert table[2].split()[3:] == [">5", "(1e-05)", "0.500", "(inf)", ">5"]


def test_select_problems() -> None:
    assert select_problems(True) == QUICK and len(QUICK) == 6
    assert select_problems(False) == FULL and len(FULL) == 19
    assert select_problems(True, ["assignment"], [60], [0.1]) == [("assignment", 60, 0.1)]
    assert select_problems(False, ["gauss"], None, [1e-3]) == [
        ("gauss", 2000, 1e-3),
        ("gauss", 500, 1e-3),
        ("gauss", 5000, 1e-3),
    ]
    # a kind the quick grid lacks gets the grid's (n, eps) pairs
    assert select_problems(True, ["density2d_w2"]) == [("density2d_w2", 500, 1e-2), ("density2d_w2", 500, 1e-3)]


def test_missing_pot_drops_its_methods_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runners, "pot_available", lambda: False)
    names, notes = runners.available_methods(["precond sinkhorn_log", "POT sinkhorn", "POT sinkhorn_log"])
    assert names == ["precond sinkhorn_log"]
    assert len(notes) == 1 and "POT" in notes[0]


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    methods = "precond sinkhorn_log,precond sns,POT sinkhorn_log"
    argv = ["bench", "ot", "--n", "60", "--eps", "0.1", "--problems", "assignment", "--budget", "5"]
    assert main([*argv, "--methods", methods, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "ot_quick.json").read_text())
    rows = record["rows"]
    assert [r["method"] for r in rows] == methods.split(",")
    for r in rows:
        assert (r["problem"], r["n"], r["eps"], r["size"]) == ("assignment", 60, 0.1, 60)
        assert r["status"] == "ok" and r["reached"] and not r["timed_out"]
        assert r["error"] <= 1e-8 and 0 < r["seconds"] < 5 and r["iterations"] >= 1
        assert f"assignment        60  1e-01  {r['method']}" in out  # one progress line each
    ours = rows[:2]
    assert all(r["history"] and r["history"][-1][1] <= 1e-8 for r in ours)
    assert "history" not in rows[2]
    meta = record["meta"]
    assert meta["budget_s"] == 5.0 and meta["threads"] == 2 and meta["quick"] is True
    assert (
        meta["command"].startswith("precond bench ot --n 60") and "'precond sinkhorn_log,precond sns" in meta["command"]
    )
    assert {"torch", "numpy", "pot", "regot"} <= set(meta["versions"]) and meta["versions"]["numpy"] == np.__version__
    assert meta["code_version"] == versions.code_version("ot") and "bench/ot/runners.py" in meta["code_files"]
    assert meta["cpu_count"] >= 1 and set(meta["load_average"]) == {"start", "end"}
    assert record["summary"][0].startswith("assignment n=60 eps=0.1: SNS ")
    assert record["summary"][0] in out
    assert (tmp_path / "ot_quick_convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "precond sns,POT nope"], "--methods"),
        (["--problems", "assignment,torus"], "--problems"),
        (["--budget", "0"], "--budget"),
        (["--n", "2"], "--n"),
        (["--eps", "-1e-2"], "--eps"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "ot", *args])
    assert exc.value.code == 2
    assert f"argument {needle}" in capsys.readouterr().err


def test_script_wrapper_parses() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/ot.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--quick" in done.stdout and "--budget" in done.stdout


@pytest.fixture
def no_children(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Replace the per-method child run by a recorder (nothing is spawned)."""
    calls: list[tuple] = []

    def fake(name: str, kind: str, n: int, reg: float, **kw: object) -> dict:
        calls.append((name, kind, n, reg, kw))
        return {
            "problem": kind,
            "n": n,
            "eps": reg,
            "method": name,
            "budget": kw["budget"],
            "status": "failed",
            "reached": False,
            "timed_out": False,
            "iterations": None,
            "seconds": None,
            "error": None,
            "message": "not run",
        }

    monkeypatch.setattr(run, "run_method", fake)
    return calls


@pytest.mark.parametrize("before", [True, False])
def test_shared_options_work_before_and_after_ot(before: bool, tmp_path: Path, no_children: list[tuple]) -> None:
    """``precond bench --threads 3 --out D ot`` means what ``precond bench ot --threads 3 --out D`` does."""
    shared = ["--threads", "3", "--out", str(tmp_path / "o")]
    rest = ["--problems", "gauss", "--n", "20", "--eps", "0.1", "--methods", "precond sns"]
    argv = ["bench", *shared, "ot", *rest] if before else ["bench", "ot", *rest, *shared]
    assert main(argv) == 0
    assert [c[:4] for c in no_children] == [("precond sns", "gauss", 20, 0.1)]
    assert no_children[0][4]["threads"] == 3
    assert json.loads((tmp_path / "o" / "ot_quick.json").read_text())["meta"]["threads"] == 3


def test_ot_defaults_when_the_shared_options_are_not_given(tmp_path: Path, monkeypatch, no_children) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "ot", "--problems", "gauss", "--n", "20", "--eps", "0.1", "--methods", "precond sns"]) == 0
    assert no_children[0][4]["threads"] == 2 and (tmp_path / "precond-bench-results" / "ot_quick.json").exists()


@pytest.mark.parametrize("option", [["--workload", "mlp"], ["--db", "x.sqlite"], ["--seeds", "2"]])
def test_optimizer_options_are_refused_for_ot(option: list[str], capsys, no_children) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", *option, "ot"])
    assert exc.value.code == 2 and f"{option[0]} does not apply to `precond bench ot`" in capsys.readouterr().err
    assert no_children == []


def test_out_that_is_a_file_fails_before_any_method_runs(tmp_path: Path, no_children: list[tuple]) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    with pytest.raises(SystemExit, match=r"--out .*a-file is a file, not a folder"):
        main(["bench", "ot", "--out", str(target), "--n", "20", "--problems", "gauss"])
    with pytest.raises(SystemExit, match=r"--out .*cannot write there"):
        main(["bench", "ot", "--out", str(target / "sub"), "--n", "20", "--problems", "gauss"])
    (tmp_path / "d" / "ot_quick.json").mkdir(parents=True)  # a folder where the record goes
    with pytest.raises(SystemExit, match=r"ot_quick.json is a folder"):
        main(["bench", "ot", "--out", str(tmp_path / "d"), "--n", "20", "--problems", "gauss"])
    assert no_children == []
    assert target.read_text() == "x"
