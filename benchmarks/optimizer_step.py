"""Time optimizer ``step()`` of precond's optimizers against AdamW and their PyPI peers, side by side in one process.

    python benchmarks/optimizer_step.py                # SOAP mode, full run (2 CPU cores: ~10 minutes)
    python benchmarks/optimizer_step.py --quick        # smoke run
    python benchmarks/optimizer_step.py --profile 20   # also profile 20 steps of our SOAP per model
    python benchmarks/optimizer_step.py --family       # family mode: Shampoo, Muon, Lion, M-FAC vs their peers
    python benchmarks/optimizer_step.py --family --quick --families muon --workloads conv   # a smoke run

SOAP mode (the default) writes ``results/optimizer_step.json``; family mode ``results/optimizer_family.json``.

Models (seeded): a 4-layer decoder-only transformer (d_model 256, 4 heads, MLP 4×, vocab 256, context 128,
*untied* LM head, batch 16) and a conv net for 32×32×3 inputs (3×3 convs with 32/64/128 channels, each followed
by ReLU and 2×2 max-pooling, linear head to 10 classes, batch 32).

What is timed: ``opt.step()`` only.  One fixed set of gradients per model is computed once (fixed random
inputs/targets) and copied into preallocated ``p.grad`` buffers before every step, outside the timed region.
Optimizers run interleaved in one process, in rounds of ``--block`` steps each (the starting optimizer rotates
every round), so machine noise hits all of them alike; ``--block`` is a multiple of the refresh period, so every
block holds the same number of basis refreshes.

SOAP mode, same hyperparameters everywhere: lr 3e-3, betas (0.95, 0.95), shampoo_beta 0.95, eps 1e-8, weight decay 0.01,
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

Family mode (``--family``): per workload and family, our optimizer, its peers and torch AdamW (foreach=True, the
hyperparameters above) as the yardstick, timed the same way (same models, fixed gradients, one round-robin per
family).  Each row has mean/median step time (the mean over every timed step, refresh steps included), ×ours
(its mean over ours), ×AdamW, the peak state memory (every tensor reachable from ``opt.state``) and its ratio
to ours.  Steps per family (full / ``--quick``; ``--steps``/``--warmup``/``--max-warmup`` override) are in
PLANS; the full run is sized for about 12 minutes on 2 quiet cores.

* shampoo -- all params.  ``precond.optim.Shampoo(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.01,
  precondition_frequency=10, max_precond_dim=4096, grafting="adam")`` (batched eigh roots) vs
  ``pytorch_optimizer.Shampoo`` (SVD roots one factor at a time, summed factors, no grafting; given the 2+-dim
  params, torch AdamW the 1-D ones) and ``pytorch_optimizer.ScalableShampoo`` (coupled Schur–Newton roots,
  RMSProp grafting, block_size 4096, start_preconditioning_step 10).  All three recompute the roots at steps 10,
  20, 30, ...: warm-up and timed blocks are multiples of 10 steps, so each timed block holds one recomputation
  per optimizer (counted in the "refreshes" column).  Peers get the [out, in·kh·kw]-kernel twin of the conv net.
* muon -- the 2-D hidden matrices only (the blocks' weights; the conv kernels, 4-D) for every row, AdamW
  included: ``torch.optim.Muon`` accepts nothing else, so embeddings, heads and 1-D params are left out.
  ``precond.optim.Muon([{"params": mats, "use_muon": True}], lr=0.02)`` (fp32 Newton–Schulz) vs
  ``torch.optim.Muon`` (2-D only: the kernel twin; weight_decay=0 like the others), ``pytorch_optimizer.Muon``
  (a ``use_muon=True`` group, foreach) and ``heavyball.Muon`` (torch.compile'd: longer warm-up).  The three peers
  run Newton–Schulz in bf16, ~0.5 s per transformer matrix on CPUs without bf16 units: on the transformer they
  are capped at 4 timed steps after 2 warm-up steps (HeavyBall 3), spread over the rounds (--quick: 1 and 1).
* lion -- all params.  ``precond.optim.Lion(lr=1e-4, weight_decay=0.1)`` vs ``pytorch_optimizer.Lion`` (same,
  foreach=True).
* mfac -- all params.  ``precond.optim.MFAC(num_grads=32)`` (one window over the whole model: 32 × 3.3 M floats
  for the transformer) has no PyPI peer: it runs against torch AdamW and torch SGD (foreach, no momentum).
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
FAMILY_OUT = Path(__file__).resolve().parent / "results" / "optimizer_family.json"


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
    select: Callable[[nn.Module], list[str]] | None = None  # names of the params it optimizes (default: all)
    max_timed: int | None = None  # cap on timed steps (very slow peers without a refresh schedule)
    max_warmup: int | None = None  # exact warm-up steps instead of --warmup/--max-warmup (very slow peers)


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
    """Bytes of every tensor reachable from ``opt.state``; each storage counted once (views share it).

    Reachable includes the attributes of plain objects kept in the state (pytorch_optimizer's ScalableShampoo
    keeps its factors and roots in ``PreConditioner`` and its graft statistics in ``Graft`` objects).
    """
    storages: dict[int, int] = {}
    seen: set[int] = set()

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
        elif hasattr(obj, "__dict__") and not type(obj).__module__.startswith("torch") and id(obj) not in seen:
            seen.add(id(obj))
            for value in vars(obj).values():
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
    max_timed: int | None = None
    max_warmup: int | None = None
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

    def quota(self, round_index: int, rounds: int, block: int) -> int:
        """Steps to time in round ``round_index``: ``block``, or a capped total spread evenly over the rounds."""
        if self.max_timed is None:
            return block
        return self.max_timed * (round_index + 1) // rounds - self.max_timed * round_index // rounds

    def warm_up(self, min_steps: int, max_steps: int, timed_steps: int, tolerance: float = 0.15) -> None:
        """Run blocks of ``FREQ`` steps until ``min_steps`` are done and two consecutive block means agree.

        ``max_steps < FREQ`` (a capped slow peer) runs exactly ``max_steps``.  Then, for a refresh schedule
        that drifts (HeavyBall's float running sum), up to ``FREQ - 1`` more steps so that the ``timed_steps``
        to come hold exactly ``timed_steps // FREQ`` refreshes, like the others.
        """
        chunk = min(FREQ, max_steps)
        while len(self.warmup_times) < max_steps:
            self.warmup_times += [self.step() for _ in range(chunk)]
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


def build_runner(spec: Spec, workload: str, seed: int) -> Runner:
    """A fresh seeded model for ``spec`` (its own copy: no optimizer sees another's updates) and its optimizer."""
    model, grads = build_model(workload, seed, flat_kernels=spec.flat_kernels)
    keep = None if spec.select is None else set(spec.select(model))
    named = zip(model.named_parameters(), grads, strict=True)
    pairs = [(p, g) for (name, p), g in named if keep is None or name in keep]
    params, grads = [p for p, _ in pairs], [g for _, g in pairs]
    return Runner(
        spec.label,
        spec.make(params),
        params,
        grads,
        spec.note,
        spec.warmup_floor,
        spec.refreshes,
        spec.refreshes_ahead,
        max_timed=spec.max_timed,
        max_warmup=spec.max_warmup,
    )


def make_runners(workload: str, args: argparse.Namespace) -> list[Runner]:
    runners = [build_runner(spec, workload, args.seed) for spec in optimizer_specs(args.hb_warmup)]
    shapes = matrix_shapes(build_model(workload, args.seed)[0])
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


def time_round_robin(runners: list[Runner], tag: str, args: argparse.Namespace) -> dict[str, Any]:
    """Warm every runner up, then time them interleaved: ``ceil(args.steps / args.block)`` rounds, each runner
    ``args.block`` steps a round (a capped runner its ``quota``), the starting runner rotating every round.

    Returns the load averages around the timed part and each runner's refreshes during it.
    """
    rounds = -(-args.steps // args.block)
    for runner in runners:
        start = time.perf_counter()
        min_steps = max(args.warmup, runner.min_warmup)
        max_steps = max(args.max_warmup, min_steps)
        if runner.max_warmup is not None:
            min_steps = max_steps = runner.max_warmup
        runner.warm_up(min_steps, max_steps, rounds * args.block)
        first = 1e3 * runner.warmup_times[0]
        last = runner.warmup_times[-FREQ:]
        print(
            f"  [{tag}] {runner.label}: warm-up {len(runner.warmup_times)} steps in "
            f"{time.perf_counter() - start:.1f} s (first step {first:.0f} ms, "
            f"last {len(last)} mean {1e3 * statistics.mean(last):.1f} ms)",
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
                runner.times += [runner.step() for _ in range(runner.quota(r, rounds, args.block))]
                runner.state_peak = max(runner.state_peak, state_bytes(runner.opt))
    finally:
        gc.enable()
    return {
        "loadavg_1_5_15min": {"before_timing": list(load_before), "after_timing": list(os.getloadavg())},
        "refreshes": {r.label: r.refreshes(r.opt) - n for r, n in zip(runners, refreshes_before, strict=True)},
    }


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


# ---------------------------------------------------------------------------------------------- families
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


def hidden_matrices(model: nn.Module) -> list[str]:
    """Names of the hidden weight matrices: the blocks' 2-D weights, or the conv kernels (4-D, or their 2-D twins).

    Not the embeddings, the LM/classifier head, or any 1-D parameter: the params Muon is meant for, and the
    only ones ``torch.optim.Muon`` accepts.
    """
    return [n for n, p in model.named_parameters() if p.dim() >= 2 and n.startswith(("blocks.", "kernels."))]


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
            refreshes=_refreshes_ours,
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

    try:
        from precond.optim import Muon
    except ImportError:  # not exported from precond.optim yet
        from precond.optim.muon import Muon

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
        Spec(ours, lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1), note="foreach, sync-free non-finite skip"),
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


def print_family(workload: str, name: str, res: dict[str, Any]) -> None:
    load = res["loadavg_1_5_15min"]
    print(
        f"\n{workload} / {name} ({res['note']}); load average (1 min) before/after timing: "
        f"{load['before_timing'][0]:.2f} / {load['after_timing'][0]:.2f}"
    )
    extra = " refreshes |" if res["refreshing"] else ""
    print(
        f"| {'optimizer':<33} | {'mean ms':>8} | {'median ms':>9} | {'×ours':>6} | {'×AdamW':>7} | state MiB "
        f"| {'state ×ours':>11} | steps |{extra}"
    )
    widths = (9, 10, 7, 8, 10, 12, 6) + ((10,) if res["refreshing"] else ())
    print("|" + "-" * 35 + "|" + "|".join("-" * w + ":" for w in widths) + "|")
    for label, row in res["optimizers"].items():
        refreshes = f" {row['refreshes_timed']:9d} |" if res["refreshing"] else ""
        print(
            f"| {label:<33} | {row['mean_ms']:8.2f} | {row['median_ms']:9.2f} | {row['x_ours']:6.2f} | "
            f"{row['x_adamw']:7.2f} | {row['state_mib']:9.2f} | {row['state_x_ours']:11.2f} | "
            f"{row['timed_steps']:5d} |{refreshes}"
        )
    print(
        f"  ×ours: mean step time / {res['ours']}'s; state ×ours: state memory / {res['ours']}'s; "
        f"{res['wall_s']:.0f} s for this family, warm-up included"
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--profile", type=int, default=0, help="also profile this many steps of our SOAP")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test): 20 steps, short warm-up")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"JSON results file (default {DEFAULT_OUT.name}, --family: {FAMILY_OUT.name}, in {DEFAULT_OUT.parent})",
    )
    args = parser.parse_args()
    if args.family:
        if args.quick:
            args.hb_warmup = 20
        unknown = set(args.families.split(",")) - set(FAMILIES)
        if unknown:
            parser.error(f"unknown families {sorted(unknown)}: choose from {','.join(FAMILIES)}")
        if args.profile:
            parser.error("--profile profiles our SOAP: not with --family")
    elif args.quick:
        args.steps, args.warmup, args.hb_warmup, args.max_warmup = 20, 10, 20, 40
    else:
        args.steps, args.warmup, args.max_warmup = args.steps or 100, args.warmup or 20, args.max_warmup or 200
    args.out = args.out or (FAMILY_OUT if args.family else DEFAULT_OUT)
    if args.block % FREQ:
        parser.error(f"--block must be a multiple of the refresh period {FREQ}")
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    # torch 2.13's inductor calls a deprecated helper while compiling HeavyBall's kernels; not ours to fix.
    warnings.filterwarnings("ignore", message=r".*torch\._prims_common\.check.*", category=FutureWarning)

    meta = environment(args)
    print(json.dumps({k: v for k, v in meta.items() if k != "settings"}))
    if args.family:
        results = run_families(args, meta)
    else:
        results = {"meta": meta}
        for workload in args.workloads.split(","):
            results[workload] = run_workload(workload, args)
            print_workload(workload, results[workload])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
