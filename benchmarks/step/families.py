"""Family mode (``--family``): each newer optimizer of ours (Shampoo, Muon, Lion, M-FAC) against its PyPI peers and
torch AdamW, timed like SOAP mode (same models, fixed gradients, one round-robin per family).  Peer settings that
could not be matched one-to-one are explained where each family is built."""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .models import hidden_matrices
from .output import print_family
from .settings import ADAMW, FREQ, HP, MAX_DIM
from .timing import Spec, build_runner, refreshes_ours, summarize, time_round_robin


@dataclass(frozen=True)
class Plan:
    """Timed steps and warm-up bounds of one family (``--steps``/``--warmup``/``--max-warmup`` override)."""

    steps: int
    warmup: int
    max_warmup: int


@dataclass
class Family:
    ours: str  # label of our optimizer: the ×ours column divides by its mean step time
    specs: list[Spec]
    note: str = ""
    refreshing: bool = False  # has a root/basis refresh schedule worth a column


FAMILIES = ("shampoo", "muon", "lion", "mfac")
# (full, --quick).  Shampoo: every 10th step recomputes roots (seconds on the transformer), so few steps, all
# timed ones preconditioned; warm-up in blocks of 10 keeps the refresh in the same slot of every timed block.
# M-FAC: warm-up >= num_grads = 32, so the window is full when timing starts.
PLANS: dict[str, tuple[Plan, Plan]] = {
    "shampoo": (Plan(30, 20, 40), Plan(10, 10, 10)),
    "muon": (Plan(50, 20, 60), Plan(20, 10, 20)),
    "lion": (Plan(100, 20, 200), Plan(20, 10, 40)),
    "mfac": (Plan(100, 40, 200), Plan(20, 40, 60)),
}


class SplitOptimizer:
    """A matrix-only optimizer for the params with 2+ dims and ``torch.optim.AdamW`` (foreach=True) for the rest,
    stepped as one (state and step counters as the matrix optimizer's, state memory of both)."""

    def __init__(self, params: list[nn.Parameter], make_matrix_opt: Callable[[list[nn.Parameter]], Any]) -> None:
        self.matrix_opt = make_matrix_opt([p for p in params if p.dim() >= 2])
        self.rest = torch.optim.AdamW([p for p in params if p.dim() < 2], foreach=True, **HP)

    @property
    def state(self) -> dict:
        return {**self.matrix_opt.state, **self.rest.state}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.matrix_opt.param_groups

    def step(self) -> None:
        self.matrix_opt.step()
        self.rest.step()


def _group_step_refreshes(opt: Any) -> int:
    return opt.param_groups[0].get("step", 0) // FREQ  # pytorch_optimizer's Shampoos: roots when step % 10 == 0


def adamw_spec(select: Callable[[nn.Module], list[str]] | None = None) -> Spec:
    # foreach=True explicitly: on CPU tensors torch's default is the per-tensor loop (foreach only defaults on CUDA)
    return Spec(ADAMW, lambda ps: torch.optim.AdamW(ps, foreach=True, **HP), select=select, note="foreach=True")


def shampoo_family() -> Family:
    import pytorch_optimizer
    from pytorch_optimizer.optimizer.utils.graft import LayerWiseGrafting

    from precond.optim import Shampoo

    ours = "precond Shampoo"
    hp = dict(lr=3e-3, weight_decay=0.01)
    specs = [
        adamw_spec(),
        Spec(
            ours,
            lambda ps: Shampoo(
                ps, betas=(0.9, 0.95), precondition_frequency=FREQ, max_precond_dim=MAX_DIM, grafting="adam", **hp
            ),
            note="batched eigh roots at steps 10, 20, ... (start_preconditioning_step = 10); Adam grafting; "
            "1-D params: grafted Adam; conv kernels merged to [out, in·kh·kw]",
            refreshes=refreshes_ours,
        ),
        # The nearest to pytorch_optimizer's math (no grafting; the rest as ours): its plain steps are the
        # like-for-like comparison with the peer's, which grafts nothing.
        Spec(
            f"{ours} grafting=none",
            lambda ps: Shampoo(
                ps, betas=(0.9, 0.95), precondition_frequency=FREQ, max_precond_dim=MAX_DIM, grafting="none", **hp
            ),
            note="as ours, without grafting (pytorch_optimizer's Shampoo grafts nothing)",
            refreshes=refreshes_ours,
        ),
        # pytorch_optimizer 4.1.0 Shampoo: factors are running *sums* (AdaGrad-style, from eps·I), each inverse
        # root an SVD of one factor at a time (fp32, not batched), no grafting.  momentum=0 (its default): its
        # momentum mixes the last *preconditioned* step into the gradient the factors are built from, which on
        # these fixed gradients blows the factors up to inf within 20 steps (the SVD then raises).
        # It gives every dim of every tensor a dense factor -- a 1-D bias of 1024 a 1024×1024 SVD, a 4-D kernel
        # four factors -- so it gets the params with 2+ dims only (conv kernels as [out, in·kh·kw], the twin) and
        # torch AdamW the rest, as ours grafts Adam there.  Roots when group step % 10 == 0: steps 10, 20, ...
        Spec(
            "pytorch_optimizer Shampoo",
            lambda ps: SplitOptimizer(
                ps,
                lambda mats: pytorch_optimizer.Shampoo(
                    mats, momentum=0.0, weight_decouple=True, preconditioning_compute_steps=FREQ, **hp
                ),
            ),
            flat_kernels=True,
            note="SVD roots, one factor at a time; summed factors, no grafting, momentum 0 (see code); 1-D "
            "params via torch AdamW (its own would be dense d×d factors); kernels as [out, in·kh·kw]",
            refreshes=_group_step_refreshes,
        ),
        # ScalableShampoo (the Google reference's design): roots by coupled Schur–Newton iteration per factor
        # (up to 100 iterations, each ending in a host sync; use_svd=True would take SVDs instead), factor EMA
        # with beta2, grafting from LayerWiseGrafting: NONE, SGD, ADAGRAD, RMSPROP (EMA of g², no bias correction:
        # the nearest to Adam, used here) or SQRTN (sign).  block_size = 4096 > every matrix side: no blocking.
        # shape_interpretation=False: its merge_small_dims would fold a whole matrix of <= block_size entries
        # (the first conv's 32×27) into one dim and leave it unpreconditioned; the [out, in·kh·kw] twin gives it
        # our matrices instead.  1-D params get the graft only, as ours.  Roots when step % 10 == 0 (10, 20, ...),
        # preconditioned steps from start_preconditioning_step = 10, as ours.
        Spec(
            "pytorch_optimizer ScalableShampoo",
            lambda ps: pytorch_optimizer.ScalableShampoo(
                ps,
                betas=(0.9, 0.95),
                moving_average_for_momentum=True,
                decoupled_weight_decay=True,
                start_preconditioning_step=FREQ,
                preconditioning_compute_steps=FREQ,
                block_size=MAX_DIM,
                shape_interpretation=False,
                graft_type=LayerWiseGrafting.RMSPROP,
                **hp,
            ),
            flat_kernels=True,
            note="coupled Schur–Newton roots per factor (host sync per iteration); RMSProp grafting; "
            "kernels as [out, in·kh·kw]",
            refreshes=_group_step_refreshes,
        ),
    ]
    return Family(ours, specs, note="all params; roots recomputed every 10th step by all three", refreshing=True)


def muon_family(workload: str, quick: bool, hb_warmup: int) -> Family:
    import heavyball
    import pytorch_optimizer

    from precond.optim import Muon

    ours = "precond Muon"
    # torch's, pytorch_optimizer's and HeavyBall's Newton–Schulz run in bf16: tens of seconds a step for the
    # transformer's 16 matrices on a CPU without bf16 units, so there they get a few timed steps each.
    slow = workload == "transformer"
    timed_cap = (1 if quick else 4) if slow else None
    warm_cap = (1 if quick else 2) if slow else None
    hb_warm_cap = (1 if quick else 3) if slow else None  # its first step compiles (~35 s), the next ones settle
    specs = [
        adamw_spec(hidden_matrices),
        Spec(
            ours,
            lambda ps: Muon([{"params": ps, "use_muon": True}], lr=0.02),
            select=hidden_matrices,
            note="fp32 Newton–Schulz, same-shaped matrices batched; 4-D kernels viewed as [out, in·kh·kw]",
        ),
        Spec(
            "torch Muon",
            lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.0),
            select=hidden_matrices,
            flat_kernels=True,
            max_timed=timed_cap,
            max_warmup=warm_cap,
            note="bf16 Newton–Schulz, one matrix at a time; weight_decay=0 as ours (its default 0.1); 2-D only: "
            "kernels as [out, in·kh·kw]",
        ),
        Spec(
            "pytorch_optimizer Muon",
            lambda ps: pytorch_optimizer.Muon([{"params": ps, "use_muon": True}], lr=0.02, foreach=True),
            select=hidden_matrices,
            max_timed=timed_cap,
            max_warmup=warm_cap,
            note="use_muon=True group (routing is per group, explicit); foreach batches same-shaped matrices; "
            "bf16 Newton–Schulz; flattens 4-D kernels itself",
        ),
        Spec(
            "HeavyBall Muon",
            lambda ps: heavyball.Muon(ps, lr=0.02, betas=(0.95, 0.99)),
            select=hidden_matrices,
            warmup_floor=hb_warmup,
            max_timed=timed_cap,
            max_warmup=hb_warm_cap,
            note="betas[0] = 0.95 is its (Nesterov EMA) momentum; Newton–Schulz on a stochastically rounded bf16 "
            "copy, torch.compile'd; flattens 4-D kernels itself",
        ),
    ]
    note = "2-D hidden matrices (4-D conv kernels) only, for every row; no embeddings, head or 1-D params"
    if slow:
        note += (
            f"; bf16 peers capped at {timed_cap} timed steps after {warm_cap} warm-up steps "
            f"(HeavyBall {hb_warm_cap}: compile)"
        )
    return Family(ours, specs, note=note)


def lion_family() -> Family:
    import pytorch_optimizer

    from precond.optim import Lion

    ours = "precond Lion"
    specs = [
        adamw_spec(),
        Spec(ours, lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1), note="foreach, non-finite skip (the default)"),
        Spec(
            "precond Lion nonfinite=off",
            lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1, nonfinite="off"),
            note="foreach, no non-finite check (the peer's semantics)",
        ),
        Spec(
            "pytorch_optimizer Lion",
            lambda ps: pytorch_optimizer.Lion(ps, lr=1e-4, weight_decay=0.1, foreach=True),
            note="foreach=True; decoupled weight decay (its default)",
        ),
    ]
    return Family(ours, specs, note="all params; betas (0.9, 0.99) everywhere")


def mfac_family() -> Family:
    from precond.optim import MFAC

    ours = "precond MFAC"
    specs = [
        adamw_spec(),
        Spec(ours, lambda ps: MFAC(ps, num_grads=32), note="one window over all params (block_size=None), m = 32"),
        Spec(
            "torch SGD",
            lambda ps: torch.optim.SGD(ps, lr=1e-3, foreach=True),
            note="foreach=True, no momentum (as M-FAC's default): what M-FAC preconditions",
        ),
    ]
    return Family(ours, specs, note="no PyPI peer: against torch AdamW and SGD only")


def make_family(name: str, workload: str, args: argparse.Namespace) -> Family:
    if name == "shampoo":
        return shampoo_family()
    if name == "muon":
        return muon_family(workload, args.quick, args.hb_warmup)
    if name == "lion":
        return lion_family()
    if name == "mfac":
        return mfac_family()
    raise ValueError(f"unknown family {name!r}")


def family_args(name: str, args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the family's plan filled in where ``--steps``/``--warmup``/``--max-warmup`` were not given."""
    plan = PLANS[name][1 if args.quick else 0]
    return argparse.Namespace(
        **{
            **vars(args),
            "steps": args.steps or plan.steps,
            "warmup": args.warmup or plan.warmup,
            "max_warmup": args.max_warmup or plan.max_warmup,
        }
    )


def run_family(name: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    fargs = family_args(name, args)
    family = make_family(name, workload, fargs)
    runners = [build_runner(spec, workload, fargs.seed) for spec in family.specs]
    timing = time_round_robin(runners, f"{workload}/{name}", fargs)
    stats = {runner.label: summarize(runner.times) for runner in runners}
    by_label = {runner.label: runner for runner in runners}
    ours, adamw = stats[family.ours], stats[ADAMW]
    ours_state = by_label[family.ours].state_peak
    out: dict[str, Any] = {
        "ours": family.ours,
        "note": family.note,
        "refreshing": family.refreshing,
        "plan": {"steps": fargs.steps, "warmup": fargs.warmup, "max_warmup": fargs.max_warmup, "block": fargs.block},
        "params": {r.label: sum(p.numel() for p in r.params) for r in runners},
        "loadavg_1_5_15min": timing["loadavg_1_5_15min"],
        "optimizers": {},
    }
    for runner in runners:
        row = dict(stats[runner.label])
        row.update(
            x_ours=row["mean_ms"] / ours["mean_ms"],
            x_ours_median=row["median_ms"] / ours["median_ms"],
            x_adamw=row["mean_ms"] / adamw["mean_ms"],
            state_mib=runner.state_peak / 2**20,
            state_x_ours=runner.state_peak / ours_state if ours_state else float("nan"),
            timed_steps=len(runner.times),
            refreshes_timed=timing["refreshes"][runner.label],
            warmup_steps=len(runner.warmup_times),
            first_step_ms=1e3 * runner.warmup_times[0],
            note=runner.note,
            step_times_ms=[1e3 * t for t in runner.times],
        )
        out["optimizers"][runner.label] = row
    return out


def run_families(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": meta}
    for workload in args.workloads.split(","):
        results[workload] = {}
        for name in args.families.split(","):
            start = time.perf_counter()
            results[workload][name] = run_family(name, workload, args)
            results[workload][name]["wall_s"] = time.perf_counter() - start
            print_family(workload, name, results[workload][name])
            gc.collect()
    return results
