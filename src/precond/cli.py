"""The ``precond`` command (also ``python -m precond``).

precond bench                          # AdamW vs SOAP vs Muon on the lm workload, quick preset
precond bench --workload mlp --optimizers adamw,soap,shampoo,muon,lion --seeds 3
precond bench report                   # re-render table + plot from the database, nothing is trained
precond bench ot                       # entropic OT: precond.ot vs POT/RegOT to L1 error 1e-8 (quick grid, 3 s)
precond bench ot --full                # 5 problems × 3 ε at n=2000 and more, 10 s hard budget per method
precond bench ot --problems gauss --n 2000 --eps 1e-2 --budget 20 --methods "precond sns,POT sinkhorn_log"
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from precond._args import int_at_least

DEFAULT_OPTIMIZERS = "adamw,soap,muon"
positive_int = int_at_least(1)
DEFAULT_OUT = "precond-bench-results"


def _optimizer_list(text: str) -> tuple[str, ...]:
    from precond.optim.registry import available

    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in available()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(available())}"
        )
    return names


def _common(parser: argparse.ArgumentParser) -> None:
    from precond.bench.workloads import PRESETS, WORKLOADS

    parser.add_argument("--workload", choices=WORKLOADS, default="lm", help="what to train (default: lm)")
    parser.add_argument("--preset", choices=PRESETS, default="quick", help="workload size (default: quick)")
    parser.add_argument(
        "--optimizers",
        type=_optimizer_list,
        default=_optimizer_list(DEFAULT_OPTIMIZERS),
        help=f"comma-separated registry names (default: {DEFAULT_OPTIMIZERS}); the baseline is added if missing",
    )
    parser.add_argument("--baseline", default="adamw", help="optimizer that sets the target loss (default: adamw)")
    parser.add_argument("--lr-points", type=positive_int, default=4, help="learning rates per optimizer (default 4)")
    parser.add_argument("--sweep-wd", action="store_true", help="also sweep weight decay (3 points, full grid)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds of each winner (default 3)")
    parser.add_argument("--db", type=Path, default=Path("precond-bench.sqlite"), help="results database")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="folder for the plot and JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="precond", description="Preconditioned optimization: benchmarks and tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help="compare optimizers fairly (tuned, end of training, seeds)",
        description="Tune every optimizer with the same lr sweep and schedule, rerun the winners with several "
        "seeds, and report speedups to the baseline's final loss. Finished trials are stored in --db and reused.",
    )
    actions = bench.add_subparsers(dest="action", metavar="ACTION")
    run = actions.add_parser("run", help="run the comparison (the default action)")
    report = actions.add_parser("report", help="re-render table and plot from the database (trains nothing)")
    for p in (bench, run, report):
        _common(p)
    for p in (bench, run):
        p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: all cores)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from precond.bench.transport import add_arguments

    ot_parser = actions.add_parser(
        "ot",
        help="entropic OT solvers (precond.ot vs POT, RegOT) to L1 marginal error 1e-8 under a hard time budget",
        description="Entropic OT to L1 marginal error 1e-8: precond.ot's solvers against POT's and RegOT's, every "
        "method and problem in its own process with the same threads and a hard time budget (killed beyond it). "
        "Quick grid by default (n=500; 3 s budget), --full for the full one (n=2000 and more; 10 s).",
    )
    add_arguments(ot_parser, quick_default=True, out_default=Path(DEFAULT_OUT))
    return parser


def _plan(args: argparse.Namespace) -> Any:
    from precond.bench.protocol import Plan

    try:
        return Plan(
            workload=args.workload,
            optimizers=args.optimizers,
            preset=args.preset,
            lr_points=args.lr_points,
            sweep_weight_decay=args.sweep_wd,
            seeds=args.seeds,
            baseline=args.baseline,
        )
    except (ValueError, KeyError) as err:
        raise SystemExit(f"precond bench: error: {err}") from None


class _Bars:
    """One tqdm bar per trial (``progress``) and a line per finished or reused trial (``on_result``)."""

    def __init__(self, total_trials: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total_trials
        self.done = 0
        self.bar: Any = None
        self.spec: Any = None

    def progress(self, spec: Any, step: int, total: int, loss: float) -> None:
        if not self.enabled:
            return
        if spec != self.spec:
            from tqdm import tqdm

            self.close()
            self.spec = spec
            label = f"[{self.done + 1}/{self.total}] {spec.label()}"
            self.bar = tqdm(total=total, desc=label, unit="step", leave=False, dynamic_ncols=True)
        self.bar.update(step - self.bar.n)
        if step % 10 == 0 or step == total:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.spec = None

    def on_result(self, result: Any, reused: bool) -> None:
        self.close()
        self.done += 1
        if result.status == "ok":
            outcome = f"final val {result.final_val:.4f}, {result.train_seconds:.1f} s"
        else:
            outcome = f"{result.status.upper()}: {result.message.splitlines()[0] if result.message else ''}"
        print(f"[{self.done}/{self.total}] {result.spec.label()}: {outcome}{' (reused)' if reused else ''}", flush=True)


def _planned_trials(plan: Any) -> int:
    return sum(len(plan.sweep_specs(name)) + plan.seeds - 1 for name in plan.optimizers)


def _render(summary: Any, args: argparse.Namespace) -> None:
    from precond.bench.report import format_table, headline, plot, write_json

    print()
    print(format_table(summary))
    print()
    print(headline(summary))
    stem = f"{summary.plan.workload}-{summary.plan.preset}"
    png = plot(summary, args.out / f"{stem}.png")
    record = write_json(summary, args.out / f"{stem}.json")
    print(f"\nplot: {png}\nrecord: {record}\ndatabase: {args.db} (rerun the same command to reuse its trials)")


def bench_run(args: argparse.Namespace) -> int:
    import torch

    from precond.bench.protocol import run_plan
    from precond.bench.store import Store
    from precond.bench.workloads import get_workload

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = _plan(args)
    workload = get_workload(plan.workload, plan.preset)
    print(f"workload {workload.name}/{workload.preset}: {workload.description}")
    print(f"data: {workload.data}")
    print(
        f"protocol: {plan.lr_points} learning rates per optimizer over the registry's range, {workload.steps} steps "
        f"each (warmup {workload.warmup}, cosine decay), best by final validation loss, winners rerun with "
        f"{plan.seeds} seeds; target = {plan.baseline}'s mean final loss"
    )
    bars = _Bars(_planned_trials(plan), enabled=not args.no_progress and sys.stderr.isatty())
    with Store(args.db) as store:
        try:
            summary = run_plan(plan, store, workload=workload, progress=bars.progress, on_result=bars.on_result)
        except KeyboardInterrupt:
            bars.close()
            print(
                f"\ninterrupted: the {len(store)} finished trials are safe in {args.db}; "
                "rerun the same command to continue where it stopped",
                file=sys.stderr,
            )
            return 130
    _render(summary, args)
    return 0


def bench_report(args: argparse.Namespace) -> int:
    from precond.bench.protocol import summarize
    from precond.bench.store import Store
    from precond.bench.trial import code_version

    if not args.db.exists():
        raise SystemExit(f"precond bench report: error: --db {args.db} does not exist; run `precond bench` first")
    plan = _plan(args)
    version = code_version()
    with Store(args.db) as store:
        results = store.results(workload=plan.workload, preset=plan.preset, code_version=version)
        if not results:
            others = store.code_versions()
            hint = f" (it holds trials of other code versions: {', '.join(others)})" if others else ""
            raise SystemExit(f"precond bench report: no trials for {plan.workload}/{plan.preset} in {args.db}{hint}")
    _render(summarize(plan, results, code_version=version), args)
    return 0


def bench_ot(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    import shlex

    from precond.bench.transport import run_from_args

    try:
        run_from_args(args, shlex.join(["precond", *(sys.argv[1:] if argv is None else argv)]))
    except KeyboardInterrupt:
        print("\ninterrupted: the running method's process was stopped; nothing was written", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if args.action == "ot":
        return bench_ot(args, argv)
    if args.action == "report":
        return bench_report(args)
    return bench_run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
