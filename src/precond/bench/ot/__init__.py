"""Entropic OT to L1 marginal error 1e-8: ``precond.ot`` side by side with POT and RegOT, under a hard time budget.

Used by ``precond bench ot`` (quick grid by default) and ``benchmarks/ot.py`` (full grid by default). The
modules, one job each:

* :mod:`~precond.bench.ot.problems`: the problems (seeded, deterministic, costs normalized to max 1), the quick
  and full grids, the L1 marginal error;
* :mod:`~precond.bench.ot.runners`: one runner per library (precond, POT, RegOT), run inside the child process:
  calibrated iteration cap, each library's stopping threshold set to imply the target, only the solve timed;
* :mod:`~precond.bench.ot.run`: one spawned child per (method, problem) under the hard budget of
  :mod:`precond.bench._harness`, the result rows, the JSON record (with :func:`precond.bench.environment.
  machine_record` and the OT code version of :mod:`precond.bench.versions`);
* :mod:`~precond.bench.ot.output`: progress rows, per-problem summary, table, plot;
* :mod:`~precond.bench.ot.cli`: the options and ``main`` of ``benchmarks/ot.py``.

Fairness rules are in :mod:`precond.bench.ot.run`, the methods in :mod:`precond.bench.ot.runners`.
"""

from precond.bench.ot.cli import add_arguments, main, run_from_args
from precond.bench.ot.output import format_row, format_table, plot, summarize
from precond.bench.ot.problems import FULL, KINDS, QUICK, TARGET, Problem, l1_error, make_problem, select_problems
from precond.bench.ot.run import DEFAULT_BUDGET, DEFAULT_OUT, GRACE_S, run_benchmark, run_method
from precond.bench.ot.runners import METHODS, available_methods, pot_available, solve

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_OUT",
    "FULL",
    "GRACE_S",
    "KINDS",
    "METHODS",
    "QUICK",
    "TARGET",
    "Problem",
    "add_arguments",
    "available_methods",
    "format_row",
    "format_table",
    "l1_error",
    "main",
    "make_problem",
    "plot",
    "pot_available",
    "run_benchmark",
    "run_from_args",
    "run_method",
    "select_problems",
    "solve",
    "summarize",
]
