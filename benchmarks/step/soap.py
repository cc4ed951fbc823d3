"""SOAP mode: precond's SOAP against AdamW, HeavyBall's and pytorch_optimizer's SOAP and the matmul floor, on the
same hyperparameters (:data:`~.settings.SOAP_HP`); peer settings that could not be matched one-to-one are explained
where each peer is built (:func:`optimizer_specs`)."""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
from typing import Any

import torch

from .floor import FloorOptimizer
from .models import build_model, matrix_shapes
from .settings import ADAMW, FLOOR, FLOOR_DIRECT, FREQ, HP, MAX_DIM, OURS, SOAP_HP
from .timing import Runner, Spec, build_runner, refreshes_ours, summarize, time_round_robin


def _refreshes_heavyball(opt: Any) -> int:
    return int(opt.inner_group.get("cumulative_prob", 0.0))  # refresh when this running sum passes an integer


def _heavyball_refreshes_ahead(opt: Any, n: int) -> int:
    total, count = opt.inner_group.get("cumulative_prob", 0.0), 0
    for _ in range(n):
        count += int(total + opt.precond_schedule) > int(total)
        total += opt.precond_schedule
    return count


def _refreshes_pytorch_optimizer(opt: Any) -> int:
    return max(0, (opt.param_groups[0].get("step", 0) - 1) // FREQ)  # refresh when (step - 1) % FREQ == 0


def _optional(package: str) -> Any:
    """The peer package, or ``None`` (with a note on stderr) when it is not installed: its rows are skipped."""
    try:
        return importlib.import_module(package)
    except ImportError:
        print(f"{package} is not installed: skipped", file=sys.stderr)
        return None


#: ``--soap-options``: our SOAP with each opt-in refresh option of issue 18 (and all three), same settings otherwise.
SOAP_OPTIONS: dict[str, dict[str, Any]] = {
    "cholesky_qr": dict(cholesky_qr=True),
    "drift 0.1": dict(drift_tolerance=0.1),
    "stagger": dict(stagger_refresh=True),
    "all three": dict(cholesky_qr=True, drift_tolerance=0.1, stagger_refresh=True),
}


def option_specs() -> list[Spec]:
    from precond.optim import SOAP

    return [
        Spec(
            f"{OURS} ({name})",
            lambda ps, kw=kw: SOAP(ps, max_precond_dim=MAX_DIM, **SOAP_HP, **kw),
            note=f"as {OURS}, plus {kw}",
            refreshes=refreshes_ours,
        )
        for name, kw in SOAP_OPTIONS.items()
    ]


def optimizer_specs(hb_warmup: int, soap_options: bool = False) -> list[Spec]:
    from precond.optim import SOAP

    specs = [
        Spec(ADAMW, lambda ps: torch.optim.AdamW(ps, **HP), note="foreach (default) implementation"),
        Spec(
            OURS,
            lambda ps: SOAP(ps, max_precond_dim=MAX_DIM, **SOAP_HP),
            note="defaults otherwise: merge_dims='fan_in', blocking=True, compile=False",
            refreshes=refreshes_ours,
        ),
        *(option_specs() if soap_options else []),
    ]
    heavyball = _optional("heavyball")
    if heavyball is not None:
        # HeavyBall 3.2.1 refreshes when a running sum of `precond_schedule` crosses an integer.  With
        # use_precond_schedule=False (set explicitly; it is also SOAP's class default in 3.2.1) that increment is
        # the constant 1/precondition_frequency, so the refresh is deterministic: every 10th step, except that
        # the float sum of 0.1s now and then puts one a step late (steps 11, 20, 30, 40, 51, ...).  The warm-up
        # is stretched by up to 9 steps so the timed steps hold exactly steps/10 refreshes, as for the others.
        # use_precond_schedule=True would use the stretching schedule `precond_scheduler`.  merge_dims=True is its
        # fan-in-preserving merge, [128, 64, 3, 3] -> [128, 576], the same matrices as ours.  Its elementwise
        # kernels are torch.compile'd on first use (and again for each new shape), hence the longer warm-up.
        specs.append(
            Spec(
                "HeavyBall SOAP",
                lambda ps: heavyball.SOAP(
                    ps,
                    max_precond_dim=MAX_DIM,
                    merge_dims=True,
                    precondition_1d=False,
                    use_precond_schedule=False,
                    **SOAP_HP,
                ),
                warmup_floor=hb_warmup,
                note="use_precond_schedule=False (refresh every 10th step), merge_dims=True (fan-in), "
                "torch.compile'd kernels; its factor EMA is bias-corrected (same cost)",
                refreshes=_refreshes_heavyball,
                refreshes_ahead=_heavyball_refreshes_ahead,
            )
        )
    pytorch_optimizer = _optional("pytorch_optimizer")
    if pytorch_optimizer is not None:
        # pytorch_optimizer 4.1.0 has no fan-in merge: its merge_dims=True is the reference's greedy rule and
        # raises on small tensors ("shape '[1]' is invalid ..."), and merge_dims=False would give a 4-D kernel
        # one small factor per dim (cheaper, different math).  So on the conv net it gets the twin whose kernels
        # are stored as [out, in·kh·kw] matrices: identical numbers and preconditioner shapes as ours.
        specs.append(
            Spec(
                "pytorch_optimizer SOAP",
                lambda ps: pytorch_optimizer.SOAP(
                    ps, max_precondition_dim=MAX_DIM, merge_dims=False, precondition_1d=False, **SOAP_HP
                ),
                flat_kernels=True,
                note="conv kernels stored as [out, in·kh·kw] (its merge_dims=True crashes); keeps momentum in "
                "parameter space and projects it every step (4 matmul units instead of 3)",
                refreshes=_refreshes_pytorch_optimizer,
            )
        )
    return specs


def make_runners(workload: str, args: argparse.Namespace) -> list[Runner]:
    specs = optimizer_specs(args.hb_warmup, getattr(args, "soap_options", False))
    runners = [build_runner(spec, workload, args.seed) for spec in specs]
    shapes = matrix_shapes(build_model(workload, args.seed)[0])
    floors = [
        (FLOOR, False, "3 units + (A@Q, QR, QᵀQ per factor, 1 unit)/10"),
        (FLOOR_DIRECT, True, "3 units + (A@Q, QR per factor, 2 units)/10: no Q_newᵀ Q_old formed"),
    ]
    for label, direct, note in floors:
        floor = FloorOptimizer(shapes, args.seed, direct=direct)
        runners.append(Runner(label, floor, [], [], note, refreshes=lambda opt: opt.calls // FREQ))
    return runners


def _param_bytes(runner: Runner) -> int:
    return sum(p.numel() * p.element_size() for p in runner.params)


def run_workload(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    runners = make_runners(workload, args)
    timing = time_round_robin(runners, workload, args)
    refreshes = timing["refreshes"]
    stats = {runner.label: summarize(runner.times) for runner in runners}
    adamw, floor = stats[ADAMW]["mean_ms"], stats[FLOOR]["mean_ms"]
    floor_times = next(r.times for r in runners if r.label == FLOOR)
    refresh_steps = [t for i, t in enumerate(floor_times) if (i + 1) % FREQ == 0]
    plain_steps = [t for i, t in enumerate(floor_times) if (i + 1) % FREQ != 0]
    out: dict[str, Any] = {
        "matrices": [list(s) for s in matrix_shapes(build_model(workload, args.seed)[0])],
        "floor": {
            "mean_ms": floor,
            "per_step_median_ms": 1e3 * statistics.median(plain_steps),
            "refresh_extra_median_ms": 1e3 * (statistics.median(refresh_steps) - statistics.median(plain_steps)),
            "direct_transport_mean_ms": stats[FLOOR_DIRECT]["mean_ms"],
        },
        "optimizers": {},
        "loadavg_1_5_15min": timing["loadavg_1_5_15min"],
    }
    for runner in runners:
        row = dict(stats[runner.label])
        row.update(
            x_adamw=row["mean_ms"] / adamw,
            x_floor=row["mean_ms"] / floor,
            state_mib=runner.state_peak / 2**20,
            # optimizer-state bytes per parameter byte (the params it steps; None for the floor, which has none)
            state_per_param_byte=runner.state_peak / param_bytes if (param_bytes := _param_bytes(runner)) else None,
            refreshes_timed=refreshes[runner.label],
            warmup_steps=len(runner.warmup_times),
            first_step_ms=1e3 * runner.warmup_times[0],
            note=runner.note,
            step_times_ms=[1e3 * t for t in runner.times],
        )
        out["optimizers"][runner.label] = row
    ours = stats[OURS]
    peers = [r.label for r in runners if "SOAP" in r.label and not r.label.startswith(OURS)]
    out["options_vs_default"] = {
        r.label: dict(
            mean=stats[r.label]["mean_ms"] / ours["mean_ms"],
            p50=stats[r.label]["p50_ms"] / ours["p50_ms"],
            p99=stats[r.label]["p99_ms"] / ours["p99_ms"],
        )
        for r in runners
        if r.label.startswith(OURS) and r.label != OURS
    }
    out["ours_vs_peers"] = {
        label: dict(
            mean=ours["mean_ms"] / stats[label]["mean_ms"],
            median=ours["median_ms"] / stats[label]["median_ms"],
        )
        for label in peers
    }
    if peers:
        fastest = min(peers, key=lambda label: stats[label]["mean_ms"])
        out["targets"] = dict(
            ours_x_floor=ours["mean_ms"] / floor,
            ours_x_floor_target=1.1,  # issue 18
            ours_x_floor_direct_transport=ours["mean_ms"] / stats[FLOOR_DIRECT]["mean_ms"],
            fastest_peer=fastest,
            ours_x_fastest_peer=ours["mean_ms"] / stats[fastest]["mean_ms"],
            ours_x_fastest_peer_target=0.9,  # issue 18
        )
    if args.profile:
        out["profile_ours"] = profile_ours(workload, args)
    return out


def profile_ours(workload: str, args: argparse.Namespace) -> str:
    """torch.profiler table (top ops by self CPU time) of ``args.profile`` steps of our SOAP, after warm-up."""
    from torch.profiler import ProfilerActivity, profile

    spec = next(s for s in optimizer_specs(args.hb_warmup) if s.label == OURS)
    model, grads = build_model(workload, args.seed)
    params = list(model.parameters())
    runner = Runner(OURS, spec.make(params), params, grads)
    runner.warm_up(args.warmup, args.warmup, args.profile)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = sum(runner.step() for _ in range(args.profile))
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40)
    return f"{args.profile} steps of {OURS} on {workload}, wall {1e3 * wall:.1f} ms under the profiler\n{table}"
