"""The timing loop: what one optimizer under test is (:class:`Spec`, :class:`Runner`), its warm-up, and the
interleaved round-robin that times ``opt.step()`` alone for every runner of a comparison."""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from precond.bench.trial import optimizer_state_bytes as state_bytes

from .models import build_model
from .settings import FREQ


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


def refreshes_ours(opt: Any) -> int:
    """Basis/root refreshes so far of precond's SOAP and Shampoo: one whenever a tensor's ``calls`` reaches a
    multiple of ``FREQ``."""
    return max(st["calls"] for st in opt.state.values()) // FREQ


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


def summarize(times: list[float]) -> dict[str, float]:
    """Mean/median (= p50)/p99/spread, and the split into ordinary steps and the slowest 1/FREQ (the refresh
    steps)."""
    ms = sorted(1e3 * t for t in times)
    slow = max(1, len(ms) // FREQ)
    return dict(
        mean_ms=statistics.mean(ms),
        median_ms=statistics.median(ms),
        p50_ms=statistics.median(ms),
        p99_ms=statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0],
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
