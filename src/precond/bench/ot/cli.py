"""Command line of the entropic OT benchmark: ``precond bench ot`` (quick grid by default) and
``benchmarks/ot.py`` (full grid by default)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from precond._args import int_at_least, positive_float, script_main, writable_folder
from precond.bench.ot.problems import KINDS, select_problems
from precond.bench.ot.run import DEFAULT_BUDGET, DEFAULT_OUT, DEFAULT_THREADS, run_benchmark
from precond.bench.ot.runners import METHODS, available_methods

__all__ = ["add_arguments", "main", "run_from_args"]

#: the files the benchmark writes into ``--out`` (quick, full)
OUTPUT_FILES = {True: ("ot_quick.json", "ot_quick_convergence.png"), False: ("ot.json", "ot_convergence.png")}


def _list_of(convert: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        return [convert(t) for t in items]

    return parse


def _method(text: str) -> str:
    if text not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose from {', '.join(METHODS)}")
    return text


def _kind(text: str) -> str:
    if text not in KINDS:
        raise argparse.ArgumentTypeError(f"unknown problem {text!r}; choose from {', '.join(KINDS)}")
    return text


def add_arguments(
    parser: argparse.ArgumentParser, *, quick_default: bool, out_default: Path, shared_defaults: bool = True
) -> None:
    """The benchmark's options: ``--full`` where the quick grid is the default, ``--quick`` where it is not.

    ``shared_defaults=False`` leaves ``--threads`` and ``--out`` unset when they are not given (their default is
    ``argparse.SUPPRESS``): for a subcommand whose parent parser has the same options, so that a value given
    before the subcommand is not overwritten by the subcommand's default; :func:`run_from_args` fills them in.
    """
    if quick_default:
        parser.add_argument(
            "--full", dest="quick", action="store_false", help="full grid (n=2000, 5 problems, 3 ε; 10 s budget)"
        )
    else:
        parser.add_argument("--quick", action="store_true", help="quick grid (n=500, 3 problems, 2 ε; 3 s budget)")
    parser.set_defaults(quick=quick_default)
    parser.add_argument(
        "--budget", type=positive_float, default=None, help="hard seconds per method and problem (quick 3, full 10)"
    )
    parser.add_argument(
        "--methods",
        type=_list_of(_method, "methods"),
        default=None,
        help="comma-separated subset of: " + ", ".join(METHODS),
    )
    parser.add_argument(
        "--problems",
        type=_list_of(_kind, "problems"),
        default=None,
        help="comma-separated subset of: " + ", ".join(KINDS),
    )
    parser.add_argument(
        "--n", type=_list_of(int_at_least(4), "sizes"), default=None, help="problem size(s), replaces the grid's"
    )
    parser.add_argument(
        "--eps", type=_list_of(positive_float, "ε values"), default=None, help="ε value(s), replaces the grid's"
    )
    parser.add_argument("--seed", type=int, default=0, help="problem seed (default 0)")
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


def run_from_args(args: argparse.Namespace, command: str, *, out_default: Path = DEFAULT_OUT) -> dict:
    """Run the benchmark ``args`` ask for; ``--out`` is checked (created, writable) before anything runs
    (:class:`~precond._args.UsageError` naming it otherwise)."""
    threads = getattr(args, "threads", None) or DEFAULT_THREADS
    out = getattr(args, "out", None) or out_default
    writable_folder(out, "--out", OUTPUT_FILES[args.quick])
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET[args.quick]
    grid = select_problems(args.quick, args.problems, args.n, args.eps)
    names, notes = available_methods(args.methods or list(METHODS))
    for note in notes:
        print(note, flush=True)
    return run_benchmark(
        grid,
        names,
        budget=budget,
        threads=threads,
        seed=args.seed,
        out=out,
        quick=args.quick,
        command=command,
    )


def main(argv: Sequence[str] | None = None, *, out_default: Path = DEFAULT_OUT, prog: str | None = None) -> dict:
    """The full-grid benchmark script (``benchmarks/ot.py``): ``--quick`` for the quick grid."""
    import precond.bench.ot as package

    result: dict = script_main(package.__doc__, add_arguments, run_from_args, argv, out_default=out_default, prog=prog)
    return result
