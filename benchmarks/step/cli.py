"""The command line: ``python benchmarks/optimizer_step.py [options]`` (or ``python -m benchmarks.step``)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __doc__ as DESCRIPTION
from .families import FAMILIES, family_args, run_families
from .models import WORKLOADS
from .output import print_workload
from .settings import DEFAULT_OUT, FAMILY_OUT, FREQ, HP, MAX_DIM
from .soap import run_workload


def environment(args: argparse.Namespace, command: Sequence[str]) -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    blas = re.findall(r"(?:BLAS|LAPACK)_INFO=[^,\s]+", torch.__config__.show())
    return {
        "command": shlex.join(["python", *command]),
        "torch": torch.__version__,
        "heavyball": version("heavyball"),
        "pytorch_optimizer": version("pytorch_optimizer"),
        "precond": version("precond"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "blas": blas,
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "hb_warmup": args.hb_warmup,
            "max_warmup": args.max_warmup,
            "block": args.block,
            "seed": args.seed,
            "soap_options": args.soap_options,
            "hyperparameters": {**HP, "shampoo_beta": 0.95, "precondition_frequency": FREQ, "max_dim": MAX_DIM},
            "timed": "opt.step() only; one fixed set of gradients per model, copied into p.grad before each step",
        }
        if not args.family
        else {
            "families": args.families,
            "plans": {
                name: {k: vars(family_args(name, args))[k] for k in ("steps", "warmup", "max_warmup")}
                for name in args.families.split(",")
            },
            "hb_warmup": args.hb_warmup,
            "block": args.block,
            "seed": args.seed,
            "adamw_hyperparameters": HP,
            "timed": "opt.step() only; one fixed set of gradients per model, copied into p.grad before each step",
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks/optimizer_step.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--family", action="store_true", help="time each new optimizer of ours against its peers (not SOAP)"
    )
    parser.add_argument("--families", default=",".join(FAMILIES), help="with --family: comma-separated subset")
    parser.add_argument("--steps", type=int, help="timed steps per optimizer (default 100; --family: per family)")
    parser.add_argument("--warmup", type=int, help="minimum untimed warm-up steps (default 20; --family: per family)")
    parser.add_argument("--hb-warmup", type=int, default=30, help="minimum warm-up for HeavyBall (compile)")
    parser.add_argument("--max-warmup", type=int, help="warm-up cap while step times settle (default 200)")
    parser.add_argument("--block", type=int, default=10, help="steps per optimizer per interleaved round")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all usable cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workloads", default="transformer,conv", help="comma-separated: transformer,conv")
    parser.add_argument(
        "--soap-options",
        action="store_true",
        help="SOAP mode: also time our SOAP with each opt-in refresh option (cholesky_qr, drift_tolerance=0.1, "
        "stagger_refresh, all three); adds p50/p99 and ×default columns",
    )
    parser.add_argument("--profile", type=int, default=0, help="also profile this many steps of our SOAP")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test): 20 steps, short warm-up")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"JSON results file (default {DEFAULT_OUT}, --family: {FAMILY_OUT}; a relative path is taken from the "
        "working directory, like any shell path)",
    )
    args = parser.parse_args(argv)
    if args.family:
        if args.quick:
            args.hb_warmup = 20
        unknown = set(args.families.split(",")) - set(FAMILIES)
        if unknown:
            parser.error(f"unknown families {sorted(unknown)}: choose from {','.join(FAMILIES)}")
        if args.profile:
            parser.error("--profile profiles our SOAP: not with --family")
        if args.soap_options:
            parser.error("--soap-options adds rows to SOAP mode: not with --family")
    elif args.quick:
        args.steps, args.warmup, args.hb_warmup, args.max_warmup = 20, 10, 20, 40
    else:
        args.steps, args.warmup, args.max_warmup = args.steps or 100, args.warmup or 20, args.max_warmup or 200
    args.out = args.out or (FAMILY_OUT if args.family else DEFAULT_OUT)
    try:  # before any timing: a run of minutes must not end on an unwritable path
        args.out.parent.mkdir(parents=True, exist_ok=True)
        existed = args.out.exists()
        with args.out.open("a"):
            pass
        if not existed:
            args.out.unlink()
    except OSError as err:
        parser.error(f"--out {args.out}: cannot write the results there ({err}); pass a writable file path")
    unknown_workloads = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown_workloads:
        parser.error(f"unknown workloads {sorted(unknown_workloads)}: choose from {','.join(WORKLOADS)}")
    if args.block % FREQ:
        parser.error(f"--block must be a multiple of the refresh period {FREQ}")
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    # torch 2.13's inductor calls a deprecated helper while compiling HeavyBall's kernels; not ours to fix.
    warnings.filterwarnings("ignore", message=r".*torch\._prims_common\.check.*", category=FutureWarning)

    meta = environment(args, sys.argv if argv is None else ["benchmarks/optimizer_step.py", *argv])
    print(json.dumps({k: v for k, v in meta.items() if k != "settings"}))
    if args.family:
        results = run_families(args, meta)
    else:
        results = {"meta": meta}
        for workload in args.workloads.split(","):
            results[workload] = run_workload(workload, args)
            print_workload(workload, results[workload])
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.out}")
