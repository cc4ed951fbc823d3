"""Time optimizer ``step()`` of precond's SOAP against AdamW and the PyPI SOAPs, side by side in one process.

    python benchmarks/optimizer_step.py                # full run (2 CPU cores: ~10 minutes)
    python benchmarks/optimizer_step.py --quick        # smoke run
    python benchmarks/optimizer_step.py --profile 20   # also profile 20 steps of our SOAP per model

Models (seeded): a 4-layer decoder-only transformer (d_model 256, 4 heads, MLP 4×, vocab 256, context 128,
*untied* LM head, batch 16) and a conv net for 32×32×3 inputs (3×3 convs with 32/64/128 channels, each followed
by ReLU and 2×2 max-pooling, linear head to 10 classes, batch 32).

What is timed: ``opt.step()`` only.  One fixed set of gradients per model is computed once (fixed random
inputs/targets) and copied into preallocated ``p.grad`` buffers before every step, outside the timed region.
Optimizers run interleaved in one process, in rounds of ``--block`` steps each (the starting optimizer rotates
every round), so machine noise hits all of them alike; ``--block`` is a multiple of the refresh period, so every
block holds the same number of basis refreshes.

Same hyperparameters everywhere: lr 3e-3, betas (0.95, 0.95), shampoo_beta 0.95, eps 1e-8, weight decay 0.01,
basis refresh every 10 steps, max_precond_dim 4096 (larger than every matrix side: every matrix is
preconditioned on both sides, no blocking), 1-D parameters plain Adam, conv kernels as [out, in·kh·kw].

The *floor* is the matrix work any SOAP must do, timed in the same round-robin as a pseudo-optimizer: per matrix
m×n and step, the factor update (G Gᵀ, Gᵀ G), the projection (Q_Lᵀ G Q_R) and the projection back (Q_L U Q_Rᵀ),
3 units of m·n·(m+n) multiply-adds; every 10th step additionally, per factor of side d, A @ Q (d³), a QR of the
d×d result and the rotation Q_newᵀ Q_old (d³), plus one unit of momentum transport.  Plain ``torch.matmul`` /
``torch.linalg.qr`` calls, one per matrix, on preallocated fp32 tensors of the real shapes, so its mean step is
``per-step matmuls + refresh / 10``.  A second floor row transports the momentum directly,
Q_L,newᵀ (Q_L,old M Q_R,oldᵀ) Q_R,new (2 units, no Q_newᵀ Q_old formed), which is never more work.

Peer settings that could not be matched one-to-one are explained where each peer is built (optimizer_specs).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FREQ = 10  # basis refresh period of every SOAP here
MAX_DIM = 4096  # > every matrix side of both models: full two-sided preconditioning, no blocking
HP: dict[str, Any] = dict(lr=3e-3, betas=(0.95, 0.95), eps=1e-8, weight_decay=0.01)
OURS = "precond SOAP"
ADAMW = "torch AdamW"
FLOOR = "floor (bare matmul+QR)"
FLOOR_DIRECT = "floor, direct transport"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "optimizer_step.json"


# ---------------------------------------------------------------------------------------------- models
class DecoderBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_attn = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(self.norm_attn(x)).view(batch, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attn.transpose(1, 2).reshape(batch, length, width))
        return x + self.down(F.gelu(self.up(self.norm_mlp(x))))


class CharTransformer(nn.Module):
    """Decoder-only, learned positions, untied input embedding and LM head."""

    def __init__(self, vocab: int = 256, width: int = 256, depth: int = 4, heads: int = 4, context: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(DecoderBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class SmallConvNet(nn.Module):
    """Three 3×3 conv + ReLU + 2×2 max-pool stages (32/64/128 channels), then a linear head.

    ``flat_kernels=True`` stores each kernel as the [out, in·kh·kw] matrix it is reshaped from (same numbers,
    same gradients up to that reshape), for optimizers that cannot merge conv kernels that way themselves.
    """

    CHANNELS = (3, 32, 64, 128)

    def __init__(self, flat_kernels: bool = False, classes: int = 10) -> None:
        super().__init__()
        self.kernel_shapes = [
            (c_out, c_in, 3, 3) for c_in, c_out in zip(self.CHANNELS, self.CHANNELS[1:], strict=False)
        ]
        self.kernels = nn.ParameterList()
        self.biases = nn.ParameterList()
        for shape in self.kernel_shapes:
            fan_in = shape[1] * shape[2] * shape[3]
            kernel = torch.randn(shape) * (2.0 / fan_in) ** 0.5
            self.kernels.append(nn.Parameter(kernel.flatten(1) if flat_kernels else kernel))
            self.biases.append(nn.Parameter(torch.zeros(shape[0])))
        self.head = nn.Linear(self.CHANNELS[-1] * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kernel, bias, shape in zip(self.kernels, self.biases, self.kernel_shapes, strict=True):
            x = F.max_pool2d(F.relu(F.conv2d(x, kernel.view(shape), bias, padding=1)), 2)
        return self.head(x.flatten(1))


def build_model(workload: str, seed: int, flat_kernels: bool = False) -> tuple[nn.Module, list[torch.Tensor]]:
    """The seeded model and its gradients for one fixed random batch."""
    torch.manual_seed(seed)
    if workload == "transformer":
        model: nn.Module = CharTransformer()
        tokens = torch.randint(0, 256, (16, 128))
        targets = torch.randint(0, 256, (16, 128))
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
    elif workload == "conv":
        model = SmallConvNet(flat_kernels=flat_kernels)
        images = torch.randn(32, 3, 32, 32)
        labels = torch.randint(0, 10, (32,))
        loss = F.cross_entropy(model(images), labels)
    else:
        raise ValueError(f"unknown workload {workload!r}")
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return model, grads


def matrix_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """Every parameter with 2+ dims as the [shape[0], prod(rest)] matrix SOAP preconditions."""
    return [(p.shape[0], p[0].numel()) for p in model.parameters() if p.dim() >= 2]


# ---------------------------------------------------------------------------------------------- optimizers
@dataclass
class Spec:
    label: str
    make: Callable[[list[nn.Parameter]], Any]
    flat_kernels: bool = False  # run on the [out, in·kh·kw]-kernel twin of the conv net
    warmup_floor: int = 0  # minimum warm-up steps on top of --warmup (compile)
    note: str = ""
    refreshes: Callable[[Any], int] = lambda opt: 0  # basis refreshes done so far
    refreshes_ahead: Callable[[Any, int], int] | None = None  # refreshes in the next n steps, if irregular


def _refreshes_ours(opt: Any) -> int:
    return max(st["calls"] for st in opt.state.values()) // FREQ  # refresh when calls % FREQ == 0


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


def optimizer_specs(hb_warmup: int) -> list[Spec]:
    from precond.optim import SOAP

    specs = [
        Spec(ADAMW, lambda ps: torch.optim.AdamW(ps, **HP), note="foreach (default) implementation"),
        Spec(
            OURS,
            lambda ps: SOAP(ps, shampoo_beta=0.95, precondition_frequency=FREQ, max_precond_dim=MAX_DIM, **HP),
            note="defaults otherwise: merge_dims='fan_in', blocking=True, compile=False",
            refreshes=_refreshes_ours,
        ),
    ]
    try:
        import heavyball
    except ImportError:
        print("heavyball is not installed: skipped", file=sys.stderr)
    else:
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
                    shampoo_beta=0.95,
                    precondition_frequency=FREQ,
                    max_precond_dim=MAX_DIM,
                    merge_dims=True,
                    precondition_1d=False,
                    use_precond_schedule=False,
                    **HP,
                ),
                warmup_floor=hb_warmup,
                note="use_precond_schedule=False (refresh every 10th step), merge_dims=True (fan-in), "
                "torch.compile'd kernels; its factor EMA is bias-corrected (same cost)",
                refreshes=_refreshes_heavyball,
                refreshes_ahead=_heavyball_refreshes_ahead,
            )
        )
    try:
        import pytorch_optimizer
    except ImportError:
        print("pytorch_optimizer is not installed: skipped", file=sys.stderr)
    else:
        # pytorch_optimizer 4.1.0 has no fan-in merge: its merge_dims=True is the reference's greedy rule and
        # raises on small tensors ("shape '[1]' is invalid ..."), and merge_dims=False would give a 4-D kernel
        # one small factor per dim (cheaper, different math).  So on the conv net it gets the twin whose kernels
        # are stored as [out, in·kh·kw] matrices: identical numbers and preconditioner shapes as ours.
        specs.append(
            Spec(
                "pytorch_optimizer SOAP",
                lambda ps: pytorch_optimizer.SOAP(
                    ps,
                    shampoo_beta=0.95,
                    precondition_frequency=FREQ,
                    max_precondition_dim=MAX_DIM,
                    merge_dims=False,
                    precondition_1d=False,
                    **HP,
                ),
                flat_kernels=True,
                note="conv kernels stored as [out, in·kh·kw] (its merge_dims=True crashes); keeps momentum in "
                "parameter space and projects it every step (4 matmul units instead of 3)",
                refreshes=_refreshes_pytorch_optimizer,
            )
        )
    return specs


class FloorOptimizer:
    """Bare matrix work of SOAP on the real shapes: 3 units per step, plus the refresh every ``FREQ`` steps.

    ``direct=False`` is the floor as specified: per factor A @ Q, QR and the rotation Q_newᵀ Q_old (d³), then
    one unit of momentum transport with the two rotations.  ``direct=True`` drops the rotations and transports
    the momentum as Q_L,newᵀ (Q_L,old M Q_R,oldᵀ) Q_R,new: two units, which is never more work, since
    m³ + n³ + m·n·(m+n) − 2·m·n·(m+n) = (m+n)(m−n)² ≥ 0 multiply-adds per matrix.
    """

    def __init__(self, shapes: list[tuple[int, int]], seed: int, direct: bool = False) -> None:
        self.direct = direct
        gen = torch.Generator().manual_seed(seed)

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen)

        def orthogonal(d: int) -> torch.Tensor:
            return torch.linalg.qr(rand(d, d)).Q.contiguous()

        self.mats = []
        for m, n in shapes:
            self.mats.append(
                dict(
                    g=rand(m, n),
                    factors=(rand(m, m), rand(n, n)),
                    bases=(orthogonal(m), orthogonal(n)),
                    power=(torch.empty(m, m), torch.empty(n, n)),
                    qr=((torch.empty(m, m), torch.empty(m, m)), (torch.empty(n, n), torch.empty(n, n))),
                    rot=(torch.empty(m, m), torch.empty(n, n)),
                    half=torch.empty(m, n),
                    out=torch.empty(m, n),
                )
            )
        self.calls = 0
        self.state: dict = {}

    def step(self) -> None:
        self.calls += 1
        for mat in self.mats:
            g, (ql, qr), half, out = mat["g"], mat["bases"], mat["half"], mat["out"]
            mat["factors"][0].addmm_(g, g.T, beta=0.95, alpha=0.05)  # L ← β L + (1-β) G Gᵀ
            mat["factors"][1].addmm_(g.T, g, beta=0.95, alpha=0.05)  # R ← β R + (1-β) Gᵀ G
            torch.matmul(torch.matmul(ql.T, g, out=half), qr, out=out)  # Q_Lᵀ G Q_R
            torch.matmul(torch.matmul(ql, out, out=half), qr.T, out=out)  # Q_L U Q_Rᵀ
        if self.calls % FREQ == 0:
            self.refresh()

    def refresh(self) -> None:
        for mat in self.mats:
            for factor, basis, power, (q, r), rot in zip(
                mat["factors"], mat["bases"], mat["power"], mat["qr"], mat["rot"], strict=True
            ):
                torch.matmul(factor, basis, out=power)  # A Q
                torch.linalg.qr(power, out=(q, r))
                if not self.direct:
                    torch.matmul(q.T, basis, out=rot)  # Q_newᵀ Q_old
            g, half, out = mat["g"], mat["half"], mat["out"]
            if self.direct:  # Q_L,newᵀ (Q_L,old M Q_R,oldᵀ) Q_R,new: 2 units
                (ql, qr), (ql_new, qr_new) = mat["bases"], (mat["qr"][0][0], mat["qr"][1][0])
                torch.matmul(ql_new.T, torch.matmul(ql, g, out=half), out=out)
                torch.matmul(torch.matmul(out, qr.T, out=half), qr_new, out=out)
            else:  # R_L M R_Rᵀ with the rotations: 1 unit
                (rl, rr) = mat["rot"]
                torch.matmul(torch.matmul(rl, g, out=half), rr.T, out=out)


# ---------------------------------------------------------------------------------------------- timing
def state_bytes(opt: Any) -> int:
    """Bytes of every tensor reachable from ``opt.state``; each storage counted once (views share it)."""
    storages: dict[int, int] = {}

    def visit(obj: object) -> None:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            ptr = storage.data_ptr()
            storages[ptr] = max(storages.get(ptr, 0), storage.nbytes())
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value)

    for value in opt.state.values():
        visit(value)
    return sum(storages.values())


@dataclass
class Runner:
    label: str
    opt: Any
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    note: str = ""
    min_warmup: int = 0
    refreshes: Callable[[Any], int] = lambda opt: 0
    refreshes_ahead: Callable[[Any, int], int] | None = None
    buffers: list[torch.Tensor] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    warmup_times: list[float] = field(default_factory=list)
    state_peak: int = 0

    def __post_init__(self) -> None:
        self.buffers = [g.clone() for g in self.grads]

    def step(self) -> float:
        # Untimed: fresh gradients in preallocated buffers (HeavyBall drops p.grad after using it).
        for p, buf, g in zip(self.params, self.buffers, self.grads, strict=True):
            buf.copy_(g)
            p.grad = buf
        start = time.perf_counter()
        self.opt.step()
        return time.perf_counter() - start

    def warm_up(self, min_steps: int, max_steps: int, timed_steps: int, tolerance: float = 0.15) -> None:
        """Run blocks of ``FREQ`` steps until ``min_steps`` are done and two consecutive block means agree.

        Then, for a refresh schedule that drifts (HeavyBall's float running sum), up to ``FREQ - 1`` more steps
        so that the ``timed_steps`` to come hold exactly ``timed_steps // FREQ`` refreshes, like the others.
        """
        while len(self.warmup_times) < max_steps:
            self.warmup_times += [self.step() for _ in range(FREQ)]
            if len(self.warmup_times) < max(min_steps, 2 * FREQ):
                continue
            last = statistics.mean(self.warmup_times[-FREQ:])
            previous = statistics.mean(self.warmup_times[-2 * FREQ : -FREQ])
            if abs(last - previous) <= tolerance * previous:
                break
        if self.refreshes_ahead is not None:
            for _ in range(FREQ - 1):
                if self.refreshes_ahead(self.opt, timed_steps) == timed_steps // FREQ:
                    break
                self.warmup_times.append(self.step())
        self.state_peak = state_bytes(self.opt)


def make_runners(workload: str, args: argparse.Namespace) -> list[Runner]:
    runners = []
    for spec in optimizer_specs(args.hb_warmup):
        model, grads = build_model(workload, args.seed, flat_kernels=spec.flat_kernels)
        params = list(model.parameters())
        opt = spec.make(params)
        runners.append(
            Runner(spec.label, opt, params, grads, spec.note, spec.warmup_floor, spec.refreshes, spec.refreshes_ahead)
        )
    model, grads = build_model(workload, args.seed)
    shapes = matrix_shapes(model)
    floors = [
        (FLOOR, False, "3 units + (A@Q, QR, QᵀQ per factor, 1 unit)/10"),
        (FLOOR_DIRECT, True, "3 units + (A@Q, QR per factor, 2 units)/10: no Q_newᵀ Q_old formed"),
    ]
    for label, direct, note in floors:
        floor = FloorOptimizer(shapes, args.seed, direct=direct)
        runners.append(Runner(label, floor, [], [], note, refreshes=lambda opt: opt.calls // FREQ))
    return runners


def summarize(times: list[float]) -> dict[str, float]:
    """Mean/median/spread, and the split into ordinary steps and the slowest 1/FREQ (the refresh steps)."""
    ms = sorted(1e3 * t for t in times)
    slow = max(1, len(ms) // FREQ)
    return dict(
        mean_ms=statistics.mean(ms),
        median_ms=statistics.median(ms),
        min_ms=ms[0],
        max_ms=ms[-1],
        stdev_ms=statistics.stdev(ms) if len(ms) > 1 else 0.0,
        plain_median_ms=statistics.median(ms[:-slow]) if len(ms) > slow else ms[0],
        slowest_tenth_median_ms=statistics.median(ms[-slow:]),
    )


def run_workload(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    runners = make_runners(workload, args)
    rounds = -(-args.steps // args.block)
    for runner in runners:
        start = time.perf_counter()
        min_steps = max(args.warmup, runner.min_warmup)
        runner.warm_up(min_steps, max(args.max_warmup, min_steps), rounds * args.block)
        first = 1e3 * runner.warmup_times[0]
        print(
            f"  [{workload}] {runner.label}: warm-up {len(runner.warmup_times)} steps in "
            f"{time.perf_counter() - start:.1f} s (first step {first:.0f} ms, "
            f"last {FREQ} mean {1e3 * statistics.mean(runner.warmup_times[-FREQ:]):.1f} ms)",
            flush=True,
        )
    load_before = os.getloadavg()
    refreshes_before = [runner.refreshes(runner.opt) for runner in runners]
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            shift = r % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                runner.times += [runner.step() for _ in range(args.block)]
                runner.state_peak = max(runner.state_peak, state_bytes(runner.opt))
    finally:
        gc.enable()

    refreshes = {r.label: r.refreshes(r.opt) - before for r, before in zip(runners, refreshes_before, strict=True)}
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
        "loadavg_1_5_15min": {"before_timing": list(load_before), "after_timing": list(os.getloadavg())},
    }
    for runner in runners:
        row = dict(stats[runner.label])
        row.update(
            x_adamw=row["mean_ms"] / adamw,
            x_floor=row["mean_ms"] / floor,
            state_mib=runner.state_peak / 2**20,
            refreshes_timed=refreshes[runner.label],
            warmup_steps=len(runner.warmup_times),
            first_step_ms=1e3 * runner.warmup_times[0],
            note=runner.note,
            step_times_ms=[1e3 * t for t in runner.times],
        )
        out["optimizers"][runner.label] = row
    ours = stats[OURS]
    peers = [r.label for r in runners if "SOAP" in r.label and r.label != OURS]
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
            ours_x_floor_target=1.2,
            ours_x_floor_direct_transport=ours["mean_ms"] / stats[FLOOR_DIRECT]["mean_ms"],
            fastest_peer=fastest,
            ours_x_fastest_peer=ours["mean_ms"] / stats[fastest]["mean_ms"],
            ours_x_fastest_peer_target=0.65,
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


# ---------------------------------------------------------------------------------------------- report
def print_workload(workload: str, res: dict[str, Any]) -> None:
    floor = res["floor"]
    print(
        f"\n{workload}: {len(res['matrices'])} matrices; floor {floor['mean_ms']:.2f} ms/step "
        f"(per-step matmuls {floor['per_step_median_ms']:.2f} ms + refresh "
        f"{floor['refresh_extra_median_ms']:.2f} ms / {FREQ})"
    )
    load = res["loadavg_1_5_15min"]
    print(f"  load average (1 min) before/after timing: {load['before_timing'][0]:.2f} / {load['after_timing'][0]:.2f}")
    print(
        f"| {'optimizer':<24} | {'mean ms':>8} | {'median ms':>9} | {'×AdamW':>7} | {'×floor':>7} | state MiB "
        f"| {'plain ms':>8} | {'refresh ms':>10} | refreshes |"
    )
    print("|" + "-" * 26 + "|" + "|".join("-" * w + ":" for w in (9, 10, 8, 8, 10, 9, 11, 10)) + "|")
    for label, row in res["optimizers"].items():
        print(
            f"| {label:<24} | {row['mean_ms']:8.2f} | {row['median_ms']:9.2f} | {row['x_adamw']:7.2f} | "
            f"{row['x_floor']:7.2f} | {row['state_mib']:9.2f} | {row['plain_median_ms']:8.2f} | "
            f"{row['slowest_tenth_median_ms']:10.2f} | {row['refreshes_timed']:9d} |"
        )
    print(
        f"  plain ms: median of all but the slowest 1/{FREQ} of the steps; refresh ms: median of that slowest "
        f"1/{FREQ} (the steps that refresh the eigenbases); refreshes: basis refreshes in the timed steps"
    )
    for label, ratio in res["ours_vs_peers"].items():
        print(f"  {OURS} / {label}: {ratio['mean']:.2f}× mean, {ratio['median']:.2f}× median step time")
    if "targets" in res:
        t = res["targets"]
        ok_floor = "met" if t["ours_x_floor"] <= t["ours_x_floor_target"] else "MISSED"
        ok_peer = "met" if t["ours_x_fastest_peer"] <= t["ours_x_fastest_peer_target"] else "MISSED"
        print(
            f"  targets: ours/floor {t['ours_x_floor']:.2f} (≤ 1.2: {ok_floor}); ours/fastest peer "
            f"({t['fastest_peer']}) {t['ours_x_fastest_peer']:.2f} (≤ 0.65: {ok_peer}); "
            f"ours/floor with direct transport {t['ours_x_floor_direct_transport']:.2f}"
        )
    if "profile_ours" in res:
        print("\n" + res["profile_ours"])


def environment(args: argparse.Namespace) -> dict[str, Any]:
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
        "command": shlex.join(["python", *sys.argv]),
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
            "hyperparameters": {**HP, "shampoo_beta": 0.95, "precondition_frequency": FREQ, "max_dim": MAX_DIM},
            "timed": "opt.step() only; one fixed set of gradients per model, copied into p.grad before each step",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per optimizer (default 100)")
    parser.add_argument("--warmup", type=int, default=20, help="minimum untimed warm-up steps (default 20)")
    parser.add_argument("--hb-warmup", type=int, default=30, help="minimum warm-up for HeavyBall (compile)")
    parser.add_argument("--max-warmup", type=int, default=200, help="warm-up cap while step times settle")
    parser.add_argument("--block", type=int, default=10, help="steps per optimizer per interleaved round")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all usable cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workloads", default="transformer,conv", help="comma-separated: transformer,conv")
    parser.add_argument("--profile", type=int, default=0, help="also profile this many steps of our SOAP")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test): 20 steps, short warm-up")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.hb_warmup, args.max_warmup = 20, 10, 20, 40
    if args.block % FREQ:
        parser.error(f"--block must be a multiple of the refresh period {FREQ}")
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    # torch 2.13's inductor calls a deprecated helper while compiling HeavyBall's kernels; not ours to fix.
    warnings.filterwarnings("ignore", message=r".*torch\._prims_common\.check.*", category=FutureWarning)

    meta = environment(args)
    print(json.dumps({k: v for k, v in meta.items() if k != "settings"}))
    results: dict[str, Any] = {"meta": meta}
    for workload in args.workloads.split(","):
        results[workload] = run_workload(workload, args)
        print_workload(workload, results[workload])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
