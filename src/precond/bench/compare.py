"""``precond.bench.compare``: the whole ``precond bench`` protocol on any workload, from Python (a notebook).

>>> from precond.bench import compare, get_workload
>>> result = compare(get_workload("quadratic", "tiny"), ["soap"], seeds=2)  # doctest: +SKIP
>>> print(result.table())  # doctest: +SKIP

The result holds the same :class:`~precond.bench.protocol.Summary` the CLI renders; :meth:`Comparison.table`,
:meth:`Comparison.headline`, :meth:`Comparison.plot` and :meth:`Comparison.write_json` are the CLI's outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from precond.bench.interface import Workload, check_workload
from precond.bench.protocol import OnResult, Plan, PlanProgress, Summary, run_plan
from precond.bench.store import Store
from precond.bench.trial import HParamValue
from precond.bench.trial import code_version as _code_version

__all__ = ["Comparison", "compare"]


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` returns: ``summary`` (every number) and the renderings the CLI prints and writes."""

    summary: Summary

    def table(self, *, legend: bool = True) -> str:
        from precond.bench.report import format_table

        return format_table(self.summary, legend=legend)

    def headline(self) -> str:
        from precond.bench.report import headline

        return headline(self.summary)

    def plot(self, path: str | Path) -> Path:
        from precond.bench.report import plot

        return plot(self.summary, path)

    def write_json(self, path: str | Path) -> Path:
        from precond.bench.report import write_json

        return write_json(self.summary, path)

    def to_dict(self) -> dict[str, Any]:
        return self.summary.to_dict()


def compare(
    workload: Workload,
    optimizers: Sequence[str] = ("adamw", "soap", "muon"),
    *,
    baseline: str = "adamw",
    lr_points: int = 3,
    lr_extend: int = 4,
    lr_refine: int = 2,
    sweep_weight_decay: bool = False,
    tune_baseline: bool = False,
    seeds: int = 3,
    budget_seconds: float | None = None,
    db: str | Path | Store = ":memory:",
    alpha: float = 0.01,
    fixed_hparams: Mapping[str, Mapping[str, HParamValue]] | None = None,
    progress: PlanProgress | None = None,
    on_result: OnResult | None = None,
) -> Comparison:
    """Tune every optimizer of ``optimizers`` (and ``baseline``) on ``workload`` with the same lr search, rerun
    each winner with ``seeds`` seeds and compare them at the end of training (:mod:`precond.bench.protocol`).

    ``workload`` is anything with the attributes of :class:`~precond.bench.interface.Workload` (a built-in from
    :func:`~precond.bench.workloads.get_workload` or your own). ``db``: an SQLite file (finished trials are stored
    and reused, so an interrupted comparison resumes), an open :class:`~precond.bench.store.Store`, or
    ``":memory:"`` (default: nothing kept). ``budget_seconds``: equal-time mode. ``tune_baseline``: the baseline's
    β2 + weight-decay pass after its lr search. The other arguments are the
    :class:`~precond.bench.protocol.Plan`'s.
    """
    wl = check_workload(workload)
    if isinstance(optimizers, str):
        raise TypeError(f"optimizers must be a sequence of registry names, e.g. [{optimizers!r}], not a str")
    plan = Plan(
        workload=wl.name,
        optimizers=tuple(optimizers),
        preset=wl.preset,
        lr_points=lr_points,
        lr_extend=lr_extend,
        lr_refine=lr_refine,
        sweep_weight_decay=sweep_weight_decay,
        tune_baseline=tune_baseline,
        seeds=seeds,
        baseline=baseline,
        alpha=alpha,
        fixed_hparams=dict(fixed_hparams or {}),
        budget_seconds=budget_seconds,
    )
    version = _code_version()
    if isinstance(db, Store):
        summary = run_plan(plan, db, workload=wl, code_version=version, progress=progress, on_result=on_result)
        return Comparison(summary)
    with Store(db) as store:
        store.add_run(plan.to_dict(), version)
        summary = run_plan(plan, store, workload=wl, code_version=version, progress=progress, on_result=on_result)
    return Comparison(summary)
