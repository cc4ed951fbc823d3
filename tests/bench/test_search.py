"""The bracketing lr search: known optima are found, ends are extended, missing results stop it, and on a
workload with a closed-form final loss the protocol picks the known-best lr."""

from __future__ import annotations

import math

import numpy as np
import pytest

from precond.bench.protocol import Plan, run_plan
from precond.bench.search import LRSearch, bracket_search
from precond.bench.store import Store
from precond.bench.workloads import get_workload
from tests.bench.test_trial_store import Quadratic1D


def _bowl(center: float):
    return lambda lr: (math.log10(lr) - math.log10(center)) ** 2


@pytest.mark.parametrize("center", [5.6e-3, 3e-4, 0.2, 2e-6])
def test_search_finds_a_known_optimum_inside_or_beyond_the_range(center: float) -> None:
    trace = bracket_search(1e-4, 1e-2, LRSearch(start_points=3, max_extend=4, refine=3), _bowl(center))
    assert trace.complete and not trace.at_edge and trace.best is not None
    # three refinements end at an eighth of the start's one-decade step: the best is within half of that
    assert abs(math.log10(trace.best) - math.log10(center)) <= 1 / 16 + 1e-9
    assert trace.final_step == pytest.approx(0.125)


def test_search_reports_an_optimum_beyond_its_extensions_and_a_grid_is_the_degenerate_search() -> None:
    trace = bracket_search(1e-4, 1e-2, LRSearch(3, max_extend=1, refine=0), _bowl(1.0))
    assert trace.at_edge and trace.best == 0.1 and trace.extended == (0, 1)
    grid = bracket_search(1e-4, 1e-2, LRSearch(4, 0, 0), _bowl(1.0))
    assert [lr for lr, _ in grid.points] == [0.0001, 0.0004642, 0.002154, 0.01]


def test_search_with_every_trial_diverged_goes_down_then_reports_nothing() -> None:
    trace = bracket_search(1e-4, 1e-2, LRSearch(3, 2, 1), lambda lr: math.inf)
    assert trace.best is None and trace.extended == (2, 0) and len(trace.points) == 3 + 2 + 1


def test_search_stops_at_a_missing_result() -> None:
    answers = {0.0001: 1.0, 0.001: 0.5}
    trace = bracket_search(1e-4, 1e-2, LRSearch(), answers.get)
    assert not trace.complete and [lr for lr, _ in trace.points] == [0.0001, 0.001]


@pytest.mark.parametrize("bad", [{"start_points": 0}, {"max_extend": -1}, {"refine": 1.5}])
def test_search_parameters_are_checked(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        LRSearch(**bad)


def test_protocol_picks_the_closed_form_best_lr_of_sgd_on_a_quadratic() -> None:
    """Momentum-free SGD on 0.5 a w^2: the final loss of every peak lr is known in closed form; the oracle is a
    dense float64 scan of it, and the search must land within its final resolution of the oracle's argmin."""
    wl = Quadratic1D(curvature=10.0, steps=20, warmup=2)
    lrs = np.logspace(-3, 0, 20001)
    oracle = float(lrs[np.argmin([wl.final_loss(float(lr)) for lr in lrs])])
    plan = Plan(
        "quad1d", ("sgd",), preset="tiny", baseline="sgd", seeds=1, lr_refine=4, fixed_hparams={"sgd": {"momentum": 0}}
    )
    with Store(":memory:") as store:
        summary = run_plan(plan, store, workload=wl, code_version="t")
    best = summary.get("sgd").best_hparams
    assert best is not None
    step = 1.0 / 2**4  # start log-step: one decade (1e-3…1e-1, 3 points)
    assert abs(math.log10(float(best["lr"])) - math.log10(oracle)) <= step / 2 + 1e-3
    assert summary.get("sgd").final_mean == pytest.approx(wl.final_loss(float(best["lr"])), rel=1e-4)


@pytest.mark.slow
def test_a_finer_search_on_lm_tiny_changes_no_speedup_by_more_than_its_seed_spread() -> None:
    """Issue 15: the default search (3 start points, 2 refinements: a quarter-decade resolution) against one 4x
    finer (4 refinements), AdamW and Muon on lm/tiny, 3 seeds. The speedup of Muon (the baseline's is 1 by
    definition) may move by at most its seed spread (max - min of the per-seed speedups, the larger of the two
    searches'). Measured once: 4.78x (spread 0.80) vs 4.25x (spread 1.11); a one-point "search" (lr 1e-3 / 3e-3)
    gives 1.87x, so the bound does separate an under-tuned comparison. Both plans share one store: the finer
    search reuses the default's trials (about 24 trials in all)."""
    wl = get_workload("lm", "tiny")
    with Store(":memory:") as store:
        runs = [
            run_plan(Plan("lm", ("adamw", "muon"), preset="tiny", seeds=3, lr_refine=r), store, workload=wl)
            for r in (2, 4)
        ]
    default, finer = (s.get("muon") for s in runs)
    assert default.speedup is not None and finer.speedup is not None
    assert default.speedup_spread is not None and finer.speedup_spread is not None
    spread = max(default.speedup_spread, finer.speedup_spread)
    assert abs(finer.speedup - default.speedup) <= spread
    assert runs[1].plan.search.refine == 4 and len(runs[1].get("adamw").sweep) > len(runs[0].get("adamw").sweep)
