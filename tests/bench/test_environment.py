"""Run conditions (threads, cores, load) recorded with every trial, and the report's warnings when compared
trials ran under different conditions (issue 11, item 12)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from precond.bench import environment
from precond.bench.environment import RunConditions, timing_warnings
from precond.bench.protocol import Plan, summarize
from precond.bench.report import COLUMNS, format_table, headline
from precond.bench.trial import TrialResult, TrialSpec, run_trial
from tests.bench.test_trial_store import Quadratic1D, sgd_spec

QUIET = RunConditions(threads=2, cpu_count=2, load_start=1.2, load_end=2.1)


def test_busy_and_background_hand_computed() -> None:
    assert not QUIET.busy and QUIET.load == 2.1 and QUIET.background == pytest.approx(0.05)  # (2.1 - 2) / 2
    # the case: 2 threads on a 2-core machine shared with other jobs, load average 6.75
    loaded = RunConditions(threads=2, cpu_count=2, load_start=6.75, load_end=5.0)
    assert loaded.busy and loaded.background == pytest.approx((6.75 - 2) / 2)
    assert RunConditions(1, 2, 2.4, None).busy is False  # 2.4 <= 2 + 0.5: one other job beside ours
    assert RunConditions(1, 2, 2.6, None).busy is True
    assert RunConditions(4, 2, None, None).busy is True  # more threads than cores: oversubscribed by itself
    unknown = RunConditions(2, 2)
    assert unknown.load is None and unknown.background is None and not unknown.busy


def test_comparable_conditions_give_no_warning() -> None:
    assert timing_warnings([QUIET, RunConditions(2, 2, 1.9, 2.0), RunConditions(2, 2, None, 2.2)]) == []
    assert timing_warnings([]) == []


@pytest.mark.parametrize(
    ("conditions", "needle"),
    [
        ([QUIET, RunConditions(1, 2, 1.0, 1.1)], "different thread counts (1, 2)"),
        ([QUIET, RunConditions(2, 8, 1.0, 2.0)], "different core counts (2, 8)"),
        ([QUIET, RunConditions(2, 2, 6.75, 6.0)], "1 of the compared trials ran on a busy machine"),
        ([QUIET, None, None], "2 of the 3 compared trials have no recorded threads or load"),
        # 1 thread on 8 cores: background 0.1 vs (6.5 - 1) / 8 = 0.69 per core, not busy but spread 0.59 > 0.5
        ([RunConditions(1, 8, 1.8, 1.9), RunConditions(1, 8, 6.5, 6.0)], "background load of the compared trials"),
    ],
)
def test_each_kind_of_difference_is_warned(conditions: list[RunConditions | None], needle: str) -> None:
    out = timing_warnings(conditions)
    assert any(needle in w for w in out), out
    assert out[-1].startswith("wall-clock figures (time→target, time speedup, step ×) are unreliable")


def test_trial_records_threads_cores_and_load(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([1.5, 2.5])
    monkeypatch.setattr(environment, "load_average", lambda: next(loads))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        result = run_trial(Quadratic1D(), sgd_spec(0.03))
    finally:
        torch.set_num_threads(threads)
    assert result.conditions == RunConditions(threads=1, cpu_count=os.cpu_count() or 1, load_start=1.5, load_end=2.5)


def _result(optimizer: str, lr: float, seed: int, seconds: float, conditions: RunConditions | None) -> TrialResult:
    curve = ((0, 3.0, 0.0), (10, 2.0, seconds / 2), (20, 1.0, seconds))
    spec = TrialSpec.make("quadratic", "tiny", optimizer, {"lr": lr}, seed)
    return TrialResult(spec, "ok", 1.0, curve, 20, seconds, seconds / 20, 0, 0, conditions=conditions)


def _summary(soap_conditions: RunConditions | None):
    plan = Plan("quadratic", ("adamw", "soap"), preset="tiny", lr_points=1, lr_extend=0, lr_refine=0, seeds=2)
    (lr_a,) = (p["lr"] for p in plan.grid("adamw"))
    (lr_s,) = (p["lr"] for p in plan.grid("soap"))
    results = [
        _result("adamw", lr_a, 0, 2.0, QUIET),
        _result("adamw", lr_a, 1, 2.0, QUIET),
        _result("soap", lr_s, 0, 1.0, soap_conditions),
        _result("soap", lr_s, 1, 1.0, soap_conditions),
    ]
    return summarize(plan, results)


def test_report_warns_when_the_compared_runs_differ_in_threads() -> None:
    """The issue's case: reused trials from a run at other threads/load gave a 'time speedup' of 6-7×."""
    summary = _summary(RunConditions(threads=1, cpu_count=2, load_start=0.3, load_end=1.0))
    assert summary.get("soap").time_speedup == pytest.approx(2.0)  # still computed, but flagged
    assert any("different thread counts (1, 2)" in w for w in summary.timing_warnings)
    text = headline(summary)
    assert "  warning: the compared runs ran with different thread counts (1, 2)." in text
    assert "  warning: wall-clock figures (time→target, time speedup, step ×) are unreliable" in text
    record = json.loads(json.dumps(summary.to_dict()))
    assert record["timing_warnings"] == list(summary.timing_warnings)
    assert record["optimizers"][1]["conditions"][0] == {
        "threads": 1,
        "cpu_count": 2,
        "load_start": 0.3,
        "load_end": 1.0,
    }


def test_report_is_silent_when_the_runs_are_comparable() -> None:
    summary = _summary(QUIET)
    assert summary.timing_warnings == () and "warning" not in headline(summary)
    assert summary.to_dict()["timing_warnings"] == []


def test_report_warns_about_runs_without_conditions() -> None:
    summary = _summary(None)
    assert summary.timing_warnings[0].startswith("2 of the 4 compared runs have no recorded threads or load")


def test_no_peak_memory_column() -> None:
    """The old 'peak MiB' (in-process RSS growth: 44 / 0 / 0 MiB) is gone from the table, the legend and JSON."""
    summary = _summary(QUIET)
    assert "peak" not in format_table(summary) and all("peak" not in name for name, _ in COLUMNS)
    assert "peak_memory_bytes" not in json.dumps(summary.to_dict())
    assert not hasattr(_result("adamw", 0.1, 0, 1.0, None), "peak_memory_bytes")
