"""A/B of Lion, Muon and M-FAC step time between two source trees, on one fixed-gradient MLP.

Run it once per tree, alternating, in separate processes (the other tree through ``PYTHONPATH``)::

    .venv/bin/python benchmarks/step_ab.py new
    PYTHONPATH=/path/to/other/tree/src .venv/bin/python benchmarks/step_ab.py old

Prints the median of 100 timed ``step()`` calls (after 40 warm-up steps) per optimizer. Model: six
``Linear(512, 512)`` and one ``Linear(512, 1024)``; gradients drawn once (seed 0) and kept fixed.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

from precond.optim import MFAC, Lion, Muon


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(6)], torch.nn.Linear(512, 1024))


def _muon(ps: list[torch.Tensor]) -> torch.optim.Optimizer:
    groups = [
        {"params": [p for p in ps if p.ndim == 2], "use_muon": True},
        {"params": [p for p in ps if p.ndim < 2], "use_muon": False},
    ]
    return Muon(groups, lr=0.02)


OPTIMIZERS: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
    "lion": lambda ps: Lion(ps, lr=1e-4),
    "muon": _muon,
    "mfac": lambda ps: MFAC(ps, lr=1e-3, num_grads=32),
}


def median_step_ms(build: Callable[[list[torch.Tensor]], torch.optim.Optimizer]) -> float:
    params = list(_model().parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    opt = build(params)
    for _ in range(40):
        opt.step()
    times = []
    for _ in range(100):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


if __name__ == "__main__":
    label = sys.argv[1] if len(sys.argv) > 1 else "this tree"
    print(label, " ".join(f"{name}={median_step_ms(build):.3f}ms" for name, build in OPTIMIZERS.items()))
