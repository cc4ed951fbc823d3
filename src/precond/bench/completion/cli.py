"""Command line of the matrix-completion benchmark: ``precond bench completion`` (quick grid by default) and
``benchmarks/completion.py`` (full grid by default)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from precond._args import int_at_least, positive_float, script_main, writable_folder
from precond.bench.completion.problems import KINDS, select_problems
from precond.bench.completion.run import DEFAULT_BUDGET, DEFAULT_OUT, DEFAULT_THREADS, REFERENCE, run_benchmark
from precond.bench.completion.runners import DEFAULT_PRECISION, PRECISIONS, available_methods, methods

__all__ = ["OUTPUT_FILES", "add_arguments", "main", "run_from_args"]

#: the files the benchmark writes into ``--out`` (quick, full)
OUTPUT_FILES = {
    True: ("completion_quick.json", "completion_quick_scaling.png"),
    False: ("completion.json", "completion_scaling.png"),
}


def _list_of(convert: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        return [convert(t) for t in items]

    return parse


def _choice(choices: Callable[[], Sequence[str]], what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        known = list(choices())
        if text not in known:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; choose from {', '.join(known)}")
        return text

    return parse


def _size(text: str) -> int:
    """``|Ω|`` as an integer, also written like ``1e6``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of observed entries such as 1e6, got {text!r}") from None
    if not (value >= 100 and value == int(value)):
        raise argparse.ArgumentTypeError(f"expected a whole number of observed entries ≥ 100, got {text!r}")
    return int(value)


def add_arguments(
    parser: argparse.ArgumentParser, *, quick_default: bool, out_default: Path, shared_defaults: bool = True
) -> None:
    """The benchmark's options (``--full`` where the quick grid is the default, ``--quick`` where it is not);
    ``shared_defaults=False`` leaves ``--threads`` and ``--out`` unset when not given, as
    :func:`precond.bench.ot.add_arguments` does."""
    if quick_default:
        parser.add_argument(
            "--full",
            dest="quick",
            action="store_false",
            help=f"full grid (|Ω| 1e5..1e7, k 8..128; {DEFAULT_BUDGET[False]:g} s budget)",
        )
    else:
        parser.add_argument(
            "--quick", action="store_true", help=f"quick grid (|Ω| ≤ 1e6, k ≤ 32; {DEFAULT_BUDGET[True]:g} s budget)"
        )
    parser.set_defaults(quick=quick_default)
    parser.add_argument(
        "--budget",
        type=positive_float,
        default=None,
        help=f"hard seconds per method and problem (quick {DEFAULT_BUDGET[True]:g}, full {DEFAULT_BUDGET[False]:g})",
    )
    parser.add_argument(
        "--methods",
        type=_list_of(_choice(lambda: list(methods()), "method"), "methods"),
        default=None,
        help="comma-separated subset of: " + ", ".join(methods()) + f" ({REFERENCE} sets the target RMSE)",
    )
    parser.add_argument(
        "--problems",
        type=_list_of(_choice(lambda: KINDS, "problem"), "problems"),
        default=None,
        help="comma-separated subset of: " + ", ".join(KINDS),
    )
    parser.add_argument(
        "--sizes",
        type=_list_of(_size, "sizes"),
        default=None,
        help="synthetic |Ω| values, e.g. 1e5,1e6 (replace the grid's)",
    )
    parser.add_argument(
        "--ranks", type=_list_of(int_at_least(1), "ranks"), default=None, help="ranks k (replace the grid's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="problem and split seed (default 0)")
    parser.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=1,
        help="runs of every (method, problem), interleaved; the table shows medians (default 1)",
    )
    parser.add_argument(
        "--precision",
        type=_choice(lambda: PRECISIONS, "precision"),
        default=DEFAULT_PRECISION,
        help=f"floating point of every method: {', '.join(PRECISIONS)} (default {DEFAULT_PRECISION}, cmfrec's)",
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        default=DEFAULT_THREADS if shared_defaults else argparse.SUPPRESS,
        help=f"threads of every method (default {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=out_default if shared_defaults else argparse.SUPPRESS,
        help=f"folder for JSON and plot (default {out_default})",
    )


def plan_from_args(args: argparse.Namespace) -> tuple[list[Any], list[str], list[str], float]:
    """``(problems, methods, notes, budget)`` that ``args`` ask for; our exact solver is run first (it sets the
    target) whenever a method of ours is asked for."""
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET[args.quick]
    grid = select_problems(args.quick, args.problems, args.sizes, args.ranks)
    names, notes = available_methods(args.methods or list(methods()))
    if REFERENCE in names:
        names = [REFERENCE] + [n for n in names if n != REFERENCE]
    else:
        notes.append(f"note: {REFERENCE} is not run, so no target RMSE: the table shows final RMSEs only")
    return grid, names, notes, budget


def run_from_args(args: argparse.Namespace, command: str, *, out_default: Path = DEFAULT_OUT) -> dict:
    """Run the benchmark ``args`` ask for; ``--out`` is checked (created, writable) before anything runs."""
    threads = getattr(args, "threads", None) or DEFAULT_THREADS
    out = getattr(args, "out", None) or out_default
    writable_folder(out, "--out", OUTPUT_FILES[args.quick])
    grid, names, notes, budget = plan_from_args(args)
    for note in notes:
        print(note, flush=True)
    return run_benchmark(
        grid,
        names,
        budget=budget,
        threads=threads,
        precision=args.precision,
        seed=args.seed,
        out=out,
        quick=args.quick,
        command=command,
        repeats=args.repeats,
    )


def main(argv: Sequence[str] | None = None, *, out_default: Path = DEFAULT_OUT, prog: str | None = None) -> dict:
    """The full-grid benchmark script (``benchmarks/completion.py``): ``--quick`` for the quick grid."""
    import precond.bench.completion as package

    result: dict = script_main(package.__doc__, add_arguments, run_from_args, argv, out_default=out_default, prog=prog)
    return result
