"""The fair protocol: plan grids, sweeps with known answers, resume, and the summary's numbers and verdicts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from precond.bench import protocol
from precond.bench.environment import RunConditions
from precond.bench.protocol import (
    Plan,
    mean_curve,
    run_plan,
    select_best,
    steps_to_target,
    summarize,
    t_critical,
    welch_test,
)
from precond.bench.store import Store
from precond.bench.trial import CurvePoint, TrialResult, TrialSpec, run_trial
from tests.bench.test_trial_store import Quadratic1D

SGD_GRID = [0.001, 0.004642, 0.02154, 0.1]  # the registry's sgd range 1e-3…1e-1, 4 points, 4 significant digits


def sgd_plan(**kw: Any) -> Plan:
    """Momentum-free SGD alone (its own baseline) on :class:`Quadratic1D`."""
    args: dict[str, Any] = {
        "workload": "quad1d",
        "preset": "tiny",
        "optimizers": ("sgd",),
        "baseline": "sgd",
        "fixed_hparams": {"sgd": {"momentum": 0.0}},
        "lr_points": 4,
        "lr_extend": 0,  # the fixed grid (a degenerate search): these tests count its trials
        "lr_refine": 0,
        **kw,
    }
    return Plan(**args)


class Spy:
    """Counts the trials :func:`run_plan` actually trains; raises ``KeyboardInterrupt`` at call ``interrupt_at``."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.specs: list[TrialSpec] = []
        self.interrupt_at = interrupt_at

    def __call__(self, workload: Any, spec: TrialSpec, progress: Any = None) -> TrialResult:
        if self.interrupt_at is not None and len(self.specs) + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        self.specs.append(spec)
        return run_trial(workload, spec, progress)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    s = Spy()
    monkeypatch.setattr(protocol, "run_trial", s)
    return s


# ------------------------------------------------------------------------------------------------------ plan


def test_plan_normalises_and_builds_grids() -> None:
    plan = Plan("mlp", ("SOAP", "muon", "soap"), lr_points=4, sweep_weight_decay=True, wd_points=2)
    assert plan.optimizers == ("adamw", "soap", "muon")  # baseline first, names lowered, duplicates dropped
    adamw = plan.grid("adamw")  # the search's start points; the weight-decay pass comes after the lr search
    assert adamw == [{"lr": v} for v in (0.0001, 0.0004642, 0.002154, 0.01)]
    assert plan.grid("sgd") == [{"lr": lr} for lr in SGD_GRID]  # no weight-decay range: lr only
    assert Plan("mlp", ("adamw",), lr_points=4).grid("adamw") == [
        {"lr": v} for v in (0.0001, 0.0004642, 0.002154, 0.01)
    ]
    assert plan.extra_seeds() == (1, 2)
    assert Plan("mlp", ("adamw",), tune_seed=1, seeds=4).extra_seeds() == (0, 2, 3)
    assert Plan("mlp", ("adamw",), seeds=1).extra_seeds() == ()
    specs = plan.sweep_specs("muon")
    assert len(specs) == 4 and {s.seed for s in specs} == {0} and specs[0].workload == "mlp"
    reruns = plan.seed_specs(specs[3])
    assert [s.seed for s in reruns] == [1, 2] and all(s.hparams == specs[3].hparams for s in reruns)
    assert sgd_plan().grid("sgd")[0] == {"lr": 0.001, "momentum": 0.0}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"lr_points": 0}, "lr_points"),
        ({"seeds": 0}, "seeds"),
        ({"alpha": 0.2}, "alpha"),
        ({"optimizers": ("nope",)}, "unknown optimizer"),
        ({"baseline": "nope"}, "unknown optimizer"),
    ],
)
def test_plan_rejects_bad_settings(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Plan(**{"workload": "mlp", "optimizers": ("adamw",), **kw})


# ------------------------------------------------------------------------------------------- known answers


def test_sweep_picks_the_known_best_lr(tmp_path: Path, spy: Spy) -> None:
    """Momentum-free SGD on 0.5*a*w^2 with a = 10: lr = 0.1 = 1/a zeroes w at the first full-lr step."""
    wl = Quadratic1D(curvature=10.0)
    expected = {lr: wl.final_loss(lr) for lr in SGD_GRID}
    assert min(expected, key=expected.__getitem__) == 0.1
    with Store(tmp_path / "b.sqlite") as store:
        summary = run_plan(sgd_plan(), store, workload=wl, code_version="test")
        sweep = {p.hparams["lr"]: p for p in summary.get("sgd").sweep}
        for lr in SGD_GRID[:3]:
            assert sweep[lr].final_val == pytest.approx(expected[lr], rel=1e-4)
        assert sweep[0.1].final_val is not None and sweep[0.1].final_val < 1e-10
    sgd = summary.get("sgd")
    assert sgd.best_hparams == {"lr": 0.1, "momentum": 0.0}
    assert sgd.verdict == "baseline" and sgd.seeds == (0, 1, 2) and sgd.n == 3 and sgd.complete
    assert len(spy.specs) == 6  # 4 learning rates, then 2 more seeds of the winner
    assert [s.seed for s in spy.specs[4:]] == [1, 2] and all(s.hparams_dict["lr"] == 0.1 for s in spy.specs[4:])
    assert summary.target == sgd.final_mean and sgd.speedup == 1.0


def test_diverging_trials_are_recorded_and_the_sweep_goes_on(tmp_path: Path, spy: Spy) -> None:
    wl = Quadratic1D(curvature=30.0)  # lr = 0.1: |1 - lr * a| = 2, explodes; lr = 0.02154 converges fastest
    with Store(tmp_path / "b.sqlite") as store:
        summary = run_plan(sgd_plan(), store, workload=wl, code_version="test")
        statuses = {r.spec.hparams_dict["lr"]: r.status for r in store.results() if r.spec.seed == 0}
    assert statuses == {0.001: "ok", 0.004642: "ok", 0.02154: "ok", 0.1: "diverged"}
    sgd = summary.get("sgd")
    assert sgd.best_hparams is not None and sgd.best_hparams["lr"] == 0.02154
    assert sgd.diverged == 1 and sgd.errors == 0 and sgd.n == 3
    assert [p.status for p in sgd.sweep] == ["ok", "ok", "ok", "diverged"]


def test_an_optimizer_that_raises_is_recorded_as_error(tmp_path: Path, spy: Spy) -> None:
    wl = Quadratic1D()
    plan = Plan(
        "quad1d",
        ("sgd",),
        preset="tiny",
        lr_points=2,
        lr_extend=0,
        lr_refine=0,
        fixed_hparams={"sgd": {"momentum": -1.0}},
        seeds=2,
    )  # torch's SGD refuses a negative momentum
    with Store(tmp_path / "b.sqlite") as store:
        summary = run_plan(plan, store, workload=wl, code_version="test")
        stored = store.results(optimizer="sgd")
    assert [r.status for r in stored] == ["error", "error"] and "momentum" in stored[0].message
    sgd, adamw = summary.get("sgd"), summary.get("adamw")
    assert sgd.verdict == "failed" and sgd.errors == 2 and sgd.best_hparams is None
    assert adamw.verdict == "baseline" and adamw.n == 2  # the plan went on with the baseline
    assert len(spy.specs) == 2 + 2 + 1


# ------------------------------------------------------------------------------------------------ resume


def test_rerun_reuses_every_finished_trial(tmp_path: Path, spy: Spy) -> None:
    wl, path = Quadratic1D(curvature=30.0), tmp_path / "b.sqlite"
    with Store(path) as store:
        first = run_plan(sgd_plan(), store, workload=wl, code_version="test")
    assert len(spy.specs) == 6
    reused: list[bool] = []
    with Store(path) as store:
        again = run_plan(
            sgd_plan(), store, workload=wl, code_version="test", on_result=lambda r, hit: reused.append(hit)
        )
        assert len(store) == 6
    assert len(spy.specs) == 6 and reused == [True] * 6  # nothing trained the second time
    assert again.to_dict() == first.to_dict()
    with Store(path) as store:  # another code version: nothing is reused
        run_plan(sgd_plan(), store, workload=wl, code_version="other")
        assert len(store) == 12
    assert len(spy.specs) == 12


def test_partial_store_finishes_only_the_rest(tmp_path: Path, spy: Spy) -> None:
    wl, plan = Quadratic1D(), sgd_plan()
    with Store(tmp_path / "b.sqlite") as store:
        for spec in plan.sweep_specs("sgd")[:2]:
            store.put(run_trial(wl, spec), "test")
        run_plan(plan, store, workload=wl, code_version="test")
        assert len(store) == 6
    assert [s.hparams_dict["lr"] for s in spy.specs] == [0.02154, 0.1, 0.1, 0.1]


def test_interrupt_keeps_finished_trials_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wl, plan, path = Quadratic1D(), sgd_plan(), tmp_path / "b.sqlite"
    monkeypatch.setattr(protocol, "run_trial", Spy(interrupt_at=3))
    with Store(path) as store, pytest.raises(KeyboardInterrupt):
        run_plan(plan, store, workload=wl, code_version="test")
    resumed = Spy()
    monkeypatch.setattr(protocol, "run_trial", resumed)
    with Store(path) as store:
        assert len(store) == 2 and all(r.ok for r in store.results())
        summary = run_plan(plan, store, workload=wl, code_version="test")
    assert len(resumed.specs) == 4 and summary.get("sgd").complete


def test_rerun_errors_retries_only_errors(tmp_path: Path, spy: Spy) -> None:
    wl = Quadratic1D(raise_at=25)  # never raises: 20 steps
    plan = sgd_plan(lr_points=2, seeds=1)
    bad = Quadratic1D(raise_at=0)
    with Store(tmp_path / "b.sqlite") as store:
        first = plan.sweep_specs("sgd")[0]
        store.put(run_trial(bad, first), "test")
        assert store.get(first.key("test")).status == "error"  # type: ignore[union-attr]
        run_plan(plan, store, workload=wl, code_version="test")
        assert len(spy.specs) == 1  # the stored error is reused by default
        run_plan(plan, store, workload=wl, code_version="test", rerun_errors=True)
        assert len(spy.specs) == 2 and store.get(first.key("test")).status == "ok"  # type: ignore[union-attr]


def test_progress_names_the_trial(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    with Store(tmp_path / "b.sqlite") as store:
        run_plan(
            sgd_plan(lr_points=1, seeds=1),
            store,
            workload=Quadratic1D(),
            code_version="test",
            progress=lambda spec, step, total, loss: seen.append((spec.optimizer, step, total)),
        )
    assert seen == [("sgd", step, 20) for step in range(1, 21)]


def test_run_plan_refuses_another_workload(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store, pytest.raises(ValueError, match="plan is for"):
        run_plan(sgd_plan(), store, workload=Quadratic1D(preset="quick"), code_version="test")


# -------------------------------------------------------------------------------------- synthetic summaries


def curve(val_at_50: float, final: float, seconds_per_step: float) -> tuple[CurvePoint, ...]:
    return ((0, 3.0, 0.0), (50, val_at_50, 50 * seconds_per_step), (100, final, 100 * seconds_per_step))


def result(optimizer: str, lr: float, seed: int, pts: Sequence[CurvePoint], step_seconds: float) -> TrialResult:
    return TrialResult(
        spec=TrialSpec.make("w", "tiny", optimizer, {"lr": lr}, seed),
        status="ok",
        final_val=pts[-1][1],
        curve=tuple(pts),
        steps_run=100,
        train_seconds=pts[-1][2],
        step_seconds=step_seconds,
        state_bytes=1000 if optimizer == "adamw" else 3000,
        model_bytes=500,
        conditions=RunConditions(threads=2, cpu_count=2, load_start=1.0 + seed, load_end=2.0),
    )


def synthetic(sgd_finals: Sequence[float], sgd_at_50: float = 1.0) -> tuple[Plan, list[TrialResult]]:
    """adamw's best lr is 0.01 with finals 1.00, 1.02, 1.01 (target 1.01); sgd's best is 0.1."""
    plan = Plan(
        "w", ("sgd",), preset="tiny", lr_points=2, lr_extend=0, lr_refine=0
    )  # adamw grid {1e-4, 1e-2}, sgd grid {1e-3, 1e-1}
    rs = [result("adamw", 0.0001, 0, curve(2.5, 2.0, 0.1), 0.01), result("sgd", 0.001, 0, curve(2.8, 2.6, 0.2), 0.02)]
    rs += [result("adamw", 0.01, s, curve(2.0, f, 0.1), 0.01) for s, f in enumerate((1.00, 1.02, 1.01))]
    rs += [result("sgd", 0.1, s, curve(sgd_at_50, f, 0.2), 0.02) for s, f in enumerate(sgd_finals)]
    return plan, rs


def test_summary_numbers_from_synthetic_curves() -> None:
    plan, rs = synthetic((0.50, 0.52, 0.51))
    summary = summarize(plan, rs, code_version="v")
    adamw, sgd = summary.get("adamw"), summary.get("sgd")
    assert summary.target == pytest.approx(1.01)
    assert adamw.best_hparams == {"lr": 0.01} and sgd.best_hparams == {"lr": 0.1}
    assert adamw.final_mean == pytest.approx(1.01) and adamw.final_std == pytest.approx(0.01)
    # adamw's mean curve (0, 3.0), (50, 2.0), (100, 1.01) ends at the target: 100 steps, 10 s.
    assert adamw.steps_to_target == pytest.approx(100.0) and adamw.seconds_to_target == pytest.approx(10.0)
    # Per seed: 2.0 -> 1.00 crosses 1.01 at 50 + 50 * 0.99/1.00; 1.02 never reaches it; 1.01 exactly at 100.
    s0, s1, s2 = adamw.seed_steps_to_target
    assert s0 == pytest.approx(99.5) and s1 is None and s2 == pytest.approx(100.0)
    # sgd's mean curve (0, 3.0), (50, 1.0) crosses 1.01 at 50 * 1.99/2.00 = 49.75 steps, 0.2 s/step: 9.95 s.
    assert sgd.steps_to_target == pytest.approx(49.75) and sgd.seconds_to_target == pytest.approx(9.95)
    assert sgd.speedup == pytest.approx(100 / 49.75) and sgd.time_speedup == pytest.approx(10 / 9.95)
    assert sgd.seed_steps_to_target == pytest.approx((49.75, 49.75, 49.75))
    assert sgd.step_overhead == pytest.approx(2.0) and adamw.speedup == 1.0 and adamw.step_overhead == 1.0
    assert sgd.state_bytes == 3000 and len(sgd.conditions) == 3 and sgd.train_seconds == pytest.approx(20)
    assert sgd.verdict == "faster" and adamw.verdict == "baseline"
    assert sgd.comparison is not None and sgd.comparison.significant and not sgd.comparison.overlap
    assert sgd.trials_planned == sgd.trials_found == 4 and sgd.complete
    text = json.dumps(summary.to_dict())
    assert '"verdict": "faster"' in text and json.loads(text)["plan"]["optimizers"] == ["adamw", "sgd"]


def test_overlapping_spreads_are_inconclusive_and_clear_losses_slower() -> None:
    plan, rs = synthetic((0.95, 1.05, 1.00))  # mean 1.00 ± 0.05 against 1.01 ± 0.01
    sgd = summarize(plan, rs).get("sgd")
    assert sgd.verdict == "inconclusive" and sgd.comparison is not None and sgd.comparison.overlap
    plan, rs = synthetic((1.50, 1.52, 1.51), sgd_at_50=2.5)
    sgd = summarize(plan, rs).get("sgd")
    assert sgd.verdict == "slower" and sgd.steps_to_target is None and sgd.speedup is None
    assert sgd.seed_steps_to_target == (None, None, None)


def test_summary_with_missing_and_single_seed_results() -> None:
    plan, rs = synthetic((0.50, 0.52, 0.51))
    only_tuning = [r for r in rs if r.spec.seed == 0 and r.spec.optimizer == "adamw"]
    summary = summarize(plan, only_tuning + [r for r in rs if r.spec.optimizer == "sgd" and r.spec.seed == 0])
    sgd = summary.get("sgd")
    assert sgd.n == 1 and sgd.final_std is None and sgd.comparison is None and sgd.verdict == "inconclusive"
    assert not sgd.complete and sgd.trials_found == 2
    summary = summarize(plan, [r for r in rs if r.spec.optimizer == "sgd"])
    assert summary.target is None and summary.get("adamw").verdict == "missing"
    assert summary.get("sgd").speedup is None and summary.get("sgd").verdict == "inconclusive"
    foreign = [*rs, replace(rs[2], spec=TrialSpec.make("other", "tiny", "adamw", {"lr": 0.01}, 0), final_val=0.0)]
    assert summarize(plan, foreign).to_dict() == summarize(plan, rs).to_dict()  # other workloads are ignored


def test_select_best_breaks_ties_towards_smaller_lr() -> None:
    pts = curve(2.0, 1.0, 0.1)
    rs = [result("adamw", lr, 0, pts, 0.01) for lr in (0.01, 0.001, 0.1)]
    best = select_best(rs)
    assert best is not None and best.spec.hparams_dict["lr"] == 0.001
    assert select_best([]) is None


# ------------------------------------------------------------------------------------------------ statistics


def test_steps_to_target_interpolates() -> None:
    c = ((0, 4.0, 0.0), (10, 2.0, 1.0), (20, 1.0, 3.0))
    assert steps_to_target(c, 3.0) == (5.0, 0.5)
    assert steps_to_target(c, 1.5) == (15.0, 2.0)
    assert steps_to_target(c, 2.0) == (10.0, 1.0)
    assert steps_to_target(c, 5.0) == (0.0, 0.0)
    assert steps_to_target(c, 0.5) is None
    assert mean_curve([c, ((0, 2.0, 2.0), (10, 0.0, 3.0))]) == ((0, 3.0, 1.0), (10, 1.0, 2.0))


def test_welch_test_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.50, 0.52, 0.51, 0.49], [0.55, 0.60, 0.58]
    cmp = welch_test(a, b, alpha=0.05)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert cmp is not None and cmp.t == pytest.approx(ref.statistic) and cmp.df == pytest.approx(ref.df)
    assert cmp.delta == pytest.approx(0.505 - 0.5766666666666667) and cmp.significant == (ref.pvalue < 0.05)
    assert welch_test([1.0], b) is None
    same = welch_test([1.0, 1.0], [1.0, 1.0])
    assert same is not None and not same.significant and same.t is None
    apart = welch_test([1.0, 1.0], [2.0, 2.0])
    assert apart is not None and apart.significant and apart.t == float("-inf")


def test_t_table_matches_scipy_and_interpolation_is_conservative() -> None:
    stats = pytest.importorskip("scipy.stats")
    for alpha in (0.05, 0.01):
        for df in range(1, 31):
            assert t_critical(df, alpha) == pytest.approx(stats.t.ppf(1 - alpha / 2, df), abs=1.5e-3)
        for df in (1.3, 2.5, 2.94, 4.7, 12.2, 29.9, 45.0):
            assert t_critical(df, alpha) >= stats.t.ppf(1 - alpha / 2, df) - 1e-3
    with pytest.raises(ValueError):
        t_critical(0.5)
