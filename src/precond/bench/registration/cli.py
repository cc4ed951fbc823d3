"""Command line of the registration benchmark: ``precond bench registration`` (quick grid by default) and
``benchmarks/registration.py`` (full grid by default)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from precond._args import int_at_least, positive_float, script_main, writable_folder
from precond.bench.registration.run import DEFAULT_BUDGET, DEFAULT_OUT, DEFAULT_THREADS, run_benchmark
from precond.bench.registration.runners import METHODS, available_methods
from precond.bench.registration.scenes import FULL, KINDS, QUICK, SceneSpec

__all__ = ["add_arguments", "main", "run_from_args"]

OUTPUT_FILES = {
    True: ("registration_quick.json", "registration_quick.png"),
    False: ("registration.json", "registration.png"),
}


def _choices(allowed: Sequence[str], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or text!r}; choose from {', '.join(allowed)}"
            )
        return items

    return parse


def add_arguments(
    parser: argparse.ArgumentParser, *, quick_default: bool, out_default: Path, shared_defaults: bool = True
) -> None:
    """The options (``--full`` where quick is the default, ``--quick`` where not); ``shared_defaults=False`` leaves
    ``--threads``/``--out`` unset for the ``precond bench`` subcommand (see :mod:`precond.bench.ot.cli`)."""
    if quick_default:
        parser.add_argument("--full", dest="quick", action="store_false", help="full grid (10k points per cloud)")
    else:
        parser.add_argument("--quick", action="store_true", help="quick grid (2k points per cloud)")
    parser.set_defaults(quick=quick_default)
    parser.add_argument("--budget", type=positive_float, default=None, help="hard seconds per method and scene")
    parser.add_argument(
        "--methods",
        type=_choices(METHODS, "method"),
        default=None,
        help="comma-separated subset of: " + ", ".join(METHODS),
    )
    parser.add_argument(
        "--scenes", type=_choices(KINDS, "scene"), default=None, help="comma-separated subset of: " + ", ".join(KINDS)
    )
    parser.add_argument("--points", type=int_at_least(100), default=None, help="points per cloud (replaces grid's)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
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
    """Run what ``args`` ask for; ``--out`` is checked before anything runs."""
    threads = getattr(args, "threads", None) or DEFAULT_THREADS
    out = getattr(args, "out", None) or out_default
    writable_folder(out, "--out", OUTPUT_FILES[args.quick])
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET[args.quick]
    grid = [s for s in (QUICK if args.quick else FULL) if args.scenes is None or s.kind in args.scenes]
    grid = [SceneSpec(s.kind, args.points or s.points, args.seed) for s in grid]
    names, notes = available_methods(args.methods or list(METHODS))
    for note in notes:
        print(note, flush=True)
    return run_benchmark(
        grid, names, budget=budget, threads=threads, out=out, quick=args.quick, command=command, notes=notes
    )


def main(argv: Sequence[str] | None = None, *, out_default: Path = DEFAULT_OUT, prog: str | None = None) -> dict:
    """The full-grid benchmark script (``benchmarks/registration.py``): ``--quick`` for the quick grid."""
    import precond.bench.registration as package

    result: dict = script_main(package.__doc__, add_arguments, run_from_args, argv, out_default=out_default, prog=prog)
    return result
