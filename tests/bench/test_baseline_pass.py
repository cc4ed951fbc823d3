"""The baseline's β2 + weight-decay pass (``Plan.tune_baseline``): on a synthetic loss surface with a known optimum
the pass lands on it, only the baseline gets it, it is stated in the report, and end to end its ``betas`` reach
the optimizer and survive the store."""

from __future__ import annotations

import math

import pytest

from precond.bench.protocol import Plan, run_plan, select_best
from precond.bench.store import Store
from precond.bench.trial import TrialResult, TrialSpec
from precond.bench.tuning import SweepRanges, sweep_ranges
from tests.bench.test_trial_store import Quadratic1D

BEST = {"lr": 3e-3, "beta2": 0.98, "weight_decay": 0.01}


def surface(hp: dict) -> float:
    """Separable bowl in (log10 lr, log10(1 - β2), log10 wd) with its minimum at ``BEST``; missing keys are the
    registry's defaults (β2 = 0.999, wd = 0.01)."""
    beta2 = hp["betas"][1] if "betas" in hp else 0.999
    wd = hp.get("weight_decay", 0.01)
    return (
        1.0
        + (math.log10(hp["lr"]) - math.log10(BEST["lr"])) ** 2
        + 0.5 * (math.log10(1 - beta2) - math.log10(1 - BEST["beta2"])) ** 2
        + 0.1 * (math.log10(wd) - math.log10(BEST["weight_decay"])) ** 2
    )


def fake(spec: TrialSpec) -> TrialResult:
    loss = surface(spec.hparams_dict)
    return TrialResult(spec, "ok", loss, ((0, 5.0, 0.0), (10, loss, 1.0)), 10, 1.0, 0.1, 0, 0)


def test_the_pass_finds_the_known_beta2_and_weight_decay_at_the_best_lr() -> None:
    plan = Plan("mlp", ("adamw", "soap"), tune_baseline=True, lr_refine=3)
    specs, found, trace = plan.sweep("adamw", fake)
    assert trace.best is not None and abs(math.log10(trace.best) - math.log10(BEST["lr"])) <= 1 / 16 + 1e-9
    after = [s.hparams_dict for s in specs[len(trace.points) :]]
    # three β2 trials at the best lr (β1 kept at 0.9), then three weight decays at the best (lr, β2)
    assert after[:3] == [{"lr": trace.best, "betas": (0.9, b)} for b in (0.95, 0.98, 0.99)]
    assert after[3:] == [{"lr": trace.best, "betas": (0.9, 0.98), "weight_decay": wd} for wd in (0.001, 0.01, 0.1)]
    best = select_best(found)  # weight_decay=0.01 ties with the default the β2 trial ran: the first one wins
    assert best is not None and best.spec.hparams_dict == {"lr": trace.best, "betas": (0.9, 0.98)}
    assert best.final_val == pytest.approx(surface({"lr": trace.best, "betas": (0.9, 0.98)}))
    assert len(specs) == len(trace.points) + 6
    # the other optimizers keep the plain lr search
    soap_specs, _, soap_trace = plan.sweep("soap", fake)
    assert len(soap_specs) == len(soap_trace.points)
    assert plan.expected_trials("adamw") == 3 + 2 * 3 + 3 + 3 + 2 and plan.expected_trials("soap") == 3 + 2 * 3 + 2


def test_the_pass_stops_at_a_missing_result_and_is_stated() -> None:
    plan = Plan("mlp", ("adamw",), tune_baseline=True)
    seen: list[TrialSpec] = []

    def lookup(spec: TrialSpec) -> TrialResult | None:
        seen.append(spec)
        return None if "betas" in spec.hparams_dict else fake(spec)

    specs, _, trace = plan.sweep("adamw", lookup)
    assert trace.complete and specs[-1].hparams_dict.get("betas") == (0.9, 0.95) and len(specs) == len(seen)
    text = plan.describe_search()
    assert "baseline adamw: beta2 in {0.95, 0.98, 0.99} (beta1 0.9) at its best lr" in text
    assert "3 weight decays at its best setting" in text
    assert plan.to_dict()["tune_baseline"] is True and "beta2" in plan.to_dict()["search"]
    assert "beta2" not in Plan("mlp", ("adamw",)).describe_search()


def test_a_baseline_without_anything_to_tune_is_refused() -> None:
    assert sweep_ranges("sgd").beta2 == () and "weight_decay" not in sweep_ranges("sgd")
    with pytest.raises(ValueError, match="tune_baseline"):
        Plan("mlp", ("sgd",), baseline="sgd", tune_baseline=True)
    with pytest.raises(ValueError, match="beta2"):
        SweepRanges("x", {"lr": (1e-3, 1e-2)}, beta2=(1.0,))


def test_end_to_end_the_betas_reach_adamw_and_come_back_from_the_store() -> None:
    """AdamW on a 1-D quadratic: the β2 trials' final losses differ from each other (so ``betas`` reached the
    optimizer), and a second run of the same plan reuses every stored trial, tuples included."""
    wl = Quadratic1D(curvature=10.0, steps=20, warmup=2)
    plan = Plan("quad1d", ("adamw",), preset="tiny", seeds=1, lr_refine=0, lr_extend=0, tune_baseline=True)
    trained: list[bool] = []
    with Store(":memory:") as store:
        summary = run_plan(plan, store, workload=wl, code_version="t")
        again = run_plan(
            plan, store, workload=wl, code_version="t", on_result=lambda r, reused: trained.append(not reused)
        )
    sweep = summary.get("adamw").sweep
    beta_losses = [p.final_val for p in sweep if "betas" in p.hparams and "weight_decay" not in p.hparams]
    assert len(beta_losses) == 3 and len({round(v, 12) for v in beta_losses if v is not None}) == 3
    assert summary.get("adamw").trials_found == plan.expected_trials("adamw") == 3 + 3 + 3
    assert not any(trained) and again.get("adamw").best_hparams == summary.get("adamw").best_hparams
