"""Shared problem zoo for the tests: small models, fixed data, a training loop that records trajectories."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

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


class ScaledLeastSquares:
    """Least squares ``min_W mean((X Wᵀ − Y)²)`` whose features live on scales spanning ``1e-2…1``.

    ``X = Z·diag(s)`` with ``Z`` standard normal and ``s`` log-spaced from 1 down to ``low``, so the Hessian
    ``∝ XᵀX/n ≈ diag(s²)`` has condition number ``≈ 1/low² = 1e4``.  The true weights are ``W*_ij ∝ s_j^(-1/2)``
    (plus label noise), so at ``W = 0`` direction ``j`` carries a share ``∝ s_j`` of the excess loss: the
    poorly scaled features matter, and plain SGD — whose step in direction ``j`` is ``∝ s_j²`` — has to grind
    through them.  The optimum ``W_opt`` and its loss come from a float64 ``lstsq``.
    """

    def __init__(self, n: int = 256, d: int = 16, k: int = 4, low: float = 1e-2, noise: float = 0.1, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        scales = torch.logspace(0, math.log10(low), d, dtype=torch.float64)
        x = torch.randn(n, d, generator=g, dtype=torch.float64) * scales
        w_true = torch.randn(k, d, generator=g, dtype=torch.float64) * scales.rsqrt()
        y = x @ w_true.T + noise * torch.randn(n, k, generator=g, dtype=torch.float64)
        self.w_opt = torch.linalg.lstsq(x, y).solution.T
        self.loss_opt = float((x @ self.w_opt.T - y).square().mean())
        self.loss_init = float(y.square().mean())  # at W = 0
        hessian_eigs = torch.linalg.eigvalsh(x.T @ x)
        self.condition = float(hessian_eigs[-1] / hessian_eigs[0])
        self.x, self.y = x.float(), y.float()

    def model(self) -> nn.Linear:
        """A zero-initialised ``d → k`` linear map (no bias): the same start for every optimizer."""
        lin = nn.Linear(self.x.shape[1], self.y.shape[1], bias=False)
        nn.init.zeros_(lin.weight)
        return lin

    def loss(self, model: nn.Module) -> torch.Tensor:
        return (model(self.x) - self.y).square().mean()

    def threshold(self, fraction: float) -> float:
        """The loss at which the excess over the optimum is ``fraction`` of the initial excess."""
        return self.loss_opt + fraction * (self.loss_init - self.loss_opt)


def state_tensors(obj: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside a (nested) state_dict, with a readable path."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from state_tensors(value, f"{path}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from state_tensors(value, f"{path}[{i}]")
