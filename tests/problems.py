"""Shared problem zoo for the tests: small models, fixed data, a training loop that records trajectories."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn


def mlp(widths: tuple[int, ...] = (12, 12, 12, 6), seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def convnet(seed: int = 0, channels: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(channels * 6 * 6, 5),
    )


def batches(model: nn.Module, steps: int, batch: int = 32, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """Deterministic regression data shaped for ``model`` (MLP: flat inputs; conv net: 3×6×6 images)."""
    g = torch.Generator().manual_seed(seed)
    first = next(model.parameters())
    if first.dim() == 4:
        x_shape: tuple[int, ...] = (batch, 3, 6, 6)
        out = 5
    else:
        x_shape = (batch, first.shape[1])
        out = [p for p in model.parameters() if p.dim() == 2][-1].shape[0]
    return [(torch.randn(x_shape, generator=g), torch.randn(batch, out, generator=g)) for _ in range(steps)]


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: list[tuple[torch.Tensor, ...]],
    after_step: Callable[[int], None] | None = None,
) -> list[list[torch.Tensor]]:
    """Run one step per batch; return the parameters after every step."""
    trajectory = []
    for i, (x, y) in enumerate(data):
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(i)
        trajectory.append([p.detach().clone() for p in model.parameters()])
    return trajectory


def ill_conditioned_quadratic(dim: int = 20, cond: float = 1e3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``A = U diag(s) Vᵀ`` target for ``min_W ||A W - B||²`` with known condition number."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    s = torch.logspace(0, -torch.log10(torch.tensor(cond)).item() / 2, dim)
    a = (u * s) @ u.T
    b = torch.randn(dim, dim, generator=g)
    return a, b
