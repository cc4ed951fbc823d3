"""Degenerate point-to-plane registration (issue 13): ``precond.registration``'s DCReg and baselines side by side
with Open3D (point-to-plane, generalized ICP) and small_gicp (GICP), under a hard time budget per run.

Used by ``precond bench registration`` (quick grid: 2k points) and ``benchmarks/registration.py`` (full: 10k). Per
(method, scene): translation and rotation error, the error split into observable and degenerate directions (and
the degenerate drift from the initial guess), iterations, time per registration, DCReg's detected mask. Modules:
:mod:`~precond.bench.registration.scenes` (the scenes and their degenerate bases), :mod:`~precond.bench.
registration.runners` (one runner per library, in the child), :mod:`~precond.bench.registration.run` (children,
errors, table, figure, JSON), :mod:`~precond.bench.registration.cli` (options and ``main``).
"""

from precond.bench.registration.cli import add_arguments, main, run_from_args
from precond.bench.registration.run import DEFAULT_BUDGET, DEFAULT_OUT, errors, format_table, plot, run_benchmark
from precond.bench.registration.runners import METHODS, PEERS, available_methods, register
from precond.bench.registration.scenes import FULL, KINDS, PERTURBATION, QUICK, Scene, SceneSpec, make_scene

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_OUT",
    "FULL",
    "KINDS",
    "METHODS",
    "PEERS",
    "PERTURBATION",
    "QUICK",
    "Scene",
    "SceneSpec",
    "add_arguments",
    "available_methods",
    "errors",
    "format_table",
    "main",
    "make_scene",
    "plot",
    "register",
    "run_benchmark",
    "run_from_args",
]
