"""Bring your own model: a plain PyTorch regression MLP fed by a ``DataLoader``, as a ``precond bench`` workload.

    precond bench --workload examples/plain_torch.py:workload --optimizers adamw,soap --seeds 2

The batch of step ``t`` must depend only on ``(seed, t)``: each epoch's order comes from a ``DataLoader`` whose
generator is seeded with ``(seed, epoch)``, so a trial that is resumed or repeated sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from precond.bench import Task


def _data(n: int = 512, d: int = 16) -> tuple[TensorDataset, TensorDataset]:
    """A fixed (seed-independent) nonlinear regression problem, 80/20 split."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen)
    w = torch.randn(d, 1, generator=gen)
    y = torch.tanh(x @ w) + 0.05 * torch.randn(n, 1, generator=gen)
    cut = int(0.8 * n)
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


@dataclass(frozen=True)
class PlainTorchWorkload:
    """The attributes ``precond.bench.Workload`` asks for, and ``build(seed)``."""

    name: str = "plain-mlp"
    preset: str = "v1"  # change it when the workload changes: stored trials are keyed by name and preset
    steps: int = 60
    warmup: int = 6
    eval_every: int = 10
    batch_size: int = 32

    def build(self, seed: int) -> Task:
        train, val = _data()
        torch.manual_seed(seed)  # the model's initialisation (run_trial seeds inside fork_rng, so this is safe)
        model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 1))
        cache: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        per_epoch = len(train) // self.batch_size

        def batches(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
            if epoch not in cache:
                cache.clear()
                gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
                loader = DataLoader(train, batch_size=self.batch_size, shuffle=True, drop_last=True, generator=gen)
                cache[epoch] = list(loader)
            return cache[epoch]

        def train_loss(step: int) -> torch.Tensor:
            x, y = batches(step // per_epoch)[step % per_epoch]
            return nn.functional.mse_loss(model(x), y)

        def validate() -> float:
            x, y = val.tensors
            with torch.no_grad():
                return float(nn.functional.mse_loss(model(x), y))

        return Task(model=model, train_loss=train_loss, validate=validate)


def workload() -> PlainTorchWorkload:
    """The factory ``--workload examples/plain_torch.py:workload`` calls."""
    return PlainTorchWorkload()
