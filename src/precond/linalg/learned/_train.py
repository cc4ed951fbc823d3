"""Unsupervised training of the DCDM direction network (Kaneda et al., ICML 2023, §3.4, eq. 6).

Loss for a normalized right-hand side ``r`` and ``f = f_θ(r)``: ``‖r − (rᵀf / fᵀAf) A f‖²``, the residual left
after the exact line search along ``f`` (scale-invariant in ``f``; no solutions needed).

Training right-hand sides (§3.4, the authors' ``datasetcreate.py``): ``m`` Lanczos steps on ``A`` started from
``A·randn`` give Ritz vectors ``v_i`` sorted by Ritz value; a sample is ``Σ c_i v_i`` with ``c_i ~ N(0, 1)``,
the coefficients of the ``m/2 + θ`` lowest vectors multiplied by 9 (low frequencies dominate the error CG
leaves), normalized.  The authors use ``m = 10 000``, ``θ = 500``; here ``m`` is at most the number of unknowns
and ``θ = m/20`` by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from precond.linalg._sparse import as_csr, as_rhs, check_spd_cheap
from precond.linalg.learned._grid import PoissonGrid
from precond.linalg.learned._net import DirectionNet

__all__ = ["TrainReport", "lanczos_ritz", "ritz_rhs", "train_direction_net"]


def lanczos_ritz(A: Any, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``m`` steps of Lanczos with full reorthogonalization from ``A·randn``: Ritz values ``[m]`` (ascending) and
    Ritz vectors ``[n, m]``.  ``A`` must be symmetric with a positive diagonal (checked)."""
    A = as_csr(A)
    check_spd_cheap(A)
    n = A.shape[0]
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or not 1 <= m <= n:
        raise ValueError(f"`m` must be between 1 and the number of unknowns {n}, got {m}")
    rng = np.random.default_rng(seed)
    v = A @ rng.standard_normal(n)
    V = np.zeros((n, m))
    alpha, beta = np.zeros(m), np.zeros(m)
    V[:, 0] = v / np.linalg.norm(v)
    for j in range(m):  # Lanczos is sequential; each step is vectorized
        w = A @ V[:, j]
        alpha[j] = V[:, j] @ w
        w = w - V[:, : j + 1] @ (V[:, : j + 1].T @ w)
        w = w - V[:, : j + 1] @ (V[:, : j + 1].T @ w)  # twice is enough (Kahan–Parlett)
        if j + 1 < m:
            beta[j] = np.linalg.norm(w)
            if beta[j] <= 1e-12 * abs(alpha[j]):  # invariant subspace found
                m = j + 1
                break
            V[:, j + 1] = w / beta[j]
    T = np.diag(alpha[:m]) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    theta, S = np.linalg.eigh(T)
    return theta, V[:, :m] @ S


def ritz_rhs(vectors: np.ndarray, count: int, theta: int | None = None, seed: int = 0) -> np.ndarray:
    """``count`` unit right-hand sides ``[count, n]`` from Ritz ``vectors [n, m]`` (module docstring)."""
    m = vectors.shape[1]
    th = max(m // 20, 1) if theta is None else theta
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((count, m))
    c[:, : min(m // 2 + th, m)] *= 9.0
    B = c @ vectors.T
    out: np.ndarray = B / np.linalg.norm(B, axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class TrainReport:
    """Mean loss per epoch."""

    losses: tuple[float, ...]


def line_search_loss(net: DirectionNet, grid: PoissonGrid, r: torch.Tensor) -> torch.Tensor:
    """Mean over the batch ``r [B, 1, H, W]`` of ``‖r − (rᵀf / fᵀAf) A f‖²`` with ``f = net(r)`` (eq. 6)."""
    mask = torch.from_numpy(grid.mask)[None, None]
    f = net(r, mask)
    Af = grid.apply(f)
    num = (r * f).sum((1, 2, 3), keepdim=True)
    den = (f * Af).sum((1, 2, 3), keepdim=True).clamp_min(1e-30)
    return ((r - num / den * Af) ** 2).sum((1, 2, 3)).mean()


def train_direction_net(
    net: DirectionNet,
    grids: Sequence[PoissonGrid],
    rhs: Sequence[np.ndarray],
    *,
    epochs: int = 10,
    batch: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
) -> TrainReport:
    """Train ``net`` in place with Adam on ``rhs[g] [N_g, n_g]`` of each ``grids[g]``; batches mix no layouts."""
    if len(grids) == 0 or len(grids) != len(rhs):
        raise ValueError("`grids` and `rhs` must be non-empty and of equal length (one sample set per layout)")
    for name, v, least in (("epochs", epochs, 0), ("batch", batch, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ValueError(f"`{name}` must be an integer ≥ {least}, got {v!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be finite and > 0, got {lr}")
    checked = [as_rhs(r, g.n, f"rhs[{i}]", batch=True) for i, (g, r) in enumerate(zip(grids, rhs, strict=True))]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = [g.to_grid(torch.from_numpy(r.astype(np.float32))) for g, r in zip(grids, checked, strict=True)]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    net.train()
    for _ in range(epochs):
        plan = [(g, s) for g, d in enumerate(data) for s in range(0, d.shape[0], batch)]
        total = 0.0
        for j in rng.permutation(len(plan)):
            g, s = plan[j]
            loss = line_search_loss(net, grids[g], data[g][s : s + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total / len(plan))
    net.eval()
    return TrainReport(tuple(losses))
