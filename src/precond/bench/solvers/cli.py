"""Command line of the solvers benchmark: ``precond bench solvers`` (quick by default) and
``benchmarks/solvers.py`` (full by default)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from precond._args import int_at_least, script_main, writable_folder
from precond.bench.solvers.run import DEFAULT_OUT, run_benchmark

__all__ = ["add_arguments", "main", "run_from_args"]


def add_arguments(
    parser: argparse.ArgumentParser, *, quick_default: bool, out_default: Path, shared_defaults: bool = True
) -> None:
    """``--full``/``--quick``, ``--threads``, ``--out`` (``shared_defaults=False`` leaves those two unset) and
    ``--lsqr-iter-limit``."""
    if quick_default:
        parser.add_argument("--full", dest="quick", action="store_false", help="full sizes (T=5000, 64², 100000×500)")
    else:
        parser.add_argument("--quick", action="store_true", help="quick sizes (T=200, 32², 2000×50)")
    parser.set_defaults(quick=quick_default)
    parser.add_argument(
        "--threads", type=int_at_least(1), default=1 if shared_defaults else argparse.SUPPRESS, help="threads (1)"
    )
    parser.add_argument(
        "--out", type=Path, default=out_default if shared_defaults else argparse.SUPPRESS, help="output folder"
    )
    parser.add_argument(
        "--lsqr-iter-limit",
        type=int_at_least(1),
        default=None,
        help="iteration cap of the unpreconditioned LSQR in the least-squares part (default 4 × columns)",
    )


def run_from_args(args: argparse.Namespace, command: str, *, out_default: Path = DEFAULT_OUT) -> dict:
    out = getattr(args, "out", None) or out_default
    stem = "solvers_quick" if args.quick else "solvers"
    writable_folder(out, "--out", (f"{stem}.json", f"{stem}.png"))
    return run_benchmark(
        quick=args.quick,
        out=out,
        command=command,
        threads=getattr(args, "threads", None) or 1,
        lsqr_iter_limit=args.lsqr_iter_limit,
    )


def main(argv: Sequence[str] | None = None, *, out_default: Path = DEFAULT_OUT, prog: str | None = None) -> dict:
    """The full benchmark script (``benchmarks/solvers.py``): ``--quick`` for the quick sizes."""
    import precond.bench.solvers.run as module

    result: dict = script_main(module.__doc__, add_arguments, run_from_args, argv, out_default=out_default, prog=prog)
    return result
