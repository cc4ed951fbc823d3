"""Kronecker-factor algebra on batches of tensors.

Every function takes ``x`` of shape ``[B, d_0, ..., d_k]`` (a batch of same-shaped blocks) and, per dim ``i``,
either a batch of square matrices ``[B, d_i, d_i]`` or ``None`` (identity on that dim).  The 2-D case, by far
the most common, runs as two batched matmuls with no reshapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Factors = Sequence[torch.Tensor | None]


def _apply_along(x: torch.Tensor, dim: int, mat: torch.Tensor) -> torch.Tensor:
    """``y[..., a, ...] = sum_k x[..., k, ...] mat[k, a]`` along data dim ``dim`` (0-based, after batch)."""
    moved = x.movedim(dim + 1, -1)
    flat = moved.reshape(x.shape[0], -1, moved.shape[-1])
    return (flat @ mat).reshape(moved.shape).movedim(-1, dim + 1)


def project(x: torch.Tensor, bases: Factors) -> torch.Tensor:
    """Express ``x`` in the eigenbasis: contract dim ``i`` with ``Q_i`` (2-D: ``Q_Lᵀ X Q_R``)."""
    if x.dim() == 3:
        left, right = bases
        if left is not None:
            x = left.mT @ x
        if right is not None:
            x = x @ right
        return x
    for i, q in enumerate(bases):
        if q is not None:
            x = _apply_along(x, i, q)
    return x


def project_back(x: torch.Tensor, bases: Factors) -> torch.Tensor:
    """Inverse of :func:`project` for orthogonal ``Q_i`` (2-D: ``Q_L X Q_Rᵀ``)."""
    if x.dim() == 3:
        left, right = bases
        if left is not None:
            x = left @ x
        if right is not None:
            x = x @ right.mT
        return x
    for i, q in enumerate(bases):
        if q is not None:
            x = _apply_along(x, i, q.mT)
    return x


def contract_all_but(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``C_i(X) = X_(i) X_(i)ᵀ``: the Gram matrix of the mode-``i`` unfolding (2-D: ``X Xᵀ`` or ``Xᵀ X``)."""
    if x.dim() == 3:
        return x @ x.mT if dim == 0 else x.mT @ x
    unfolded = x.movedim(dim + 1, 1).reshape(x.shape[0], x.shape[dim + 1], -1)
    return unfolded @ unfolded.mT
