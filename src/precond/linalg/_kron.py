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


def accumulate_gram_(
    factor: torch.Tensor,
    x: torch.Tensor,
    dim: int,
    alpha: float,
    *,
    beta: float = 1.0,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """``factor ← beta · factor + alpha · C_i(x)`` in place (one fused ``baddbmm``: no Gram matrix is allocated,
    and the decay ``beta`` is GEMM's own, so the factor is read and written once).

    ``keep`` (0-d bool, optional) selects between the updated and the old factor without a host sync: false
    leaves it bitwise unchanged, true gives bitwise the unmasked update (selected, not computed).  The same sum
    as ``factor.mul_(beta).add_(contract_all_but(x, dim), alpha=alpha)`` up to float rounding.
    """
    if x.dim() == 3:
        a, b = (x, x.mT) if dim == 0 else (x.mT, x)
    else:
        a = x.movedim(dim + 1, 1).reshape(x.shape[0], x.shape[dim + 1], -1)
        b = a.mT
    if keep is not None:
        return factor.copy_(torch.where(keep.bool(), torch.baddbmm(factor, a, b, beta=beta, alpha=alpha), factor))
    # ``out=`` rather than ``baddbmm_``: the same kernel, and FLOP counters see it
    return torch.baddbmm(factor, a, b, beta=beta, alpha=alpha, out=factor)


def change_basis(x: torch.Tensor, old: Factors, new: Factors) -> torch.Tensor:
    """Re-express eigenbasis coordinates ``x`` (w.r.t. ``old``) in the ``new`` bases: ``project(project_back(x,
    old), new)``, mode by mode (``None`` in either list: that mode is left as it is).

    Per mode of side ``d`` (block size ``N``) the cheaper of two exact routes is taken: the rotation
    ``Q_newᵀ Q_old`` (``d³ + N·d`` multiply-adds) when ``d² < N``, else the two projections ``Q_old`` then
    ``Q_newᵀ`` (``2·N·d``).  For the ``[10, 2048]`` head that skips a ``2048³`` rotation.
    """
    numel = x[0].numel()
    for i, (q_old, q_new) in enumerate(zip(old, new, strict=True)):
        if q_old is None or q_new is None:
            continue
        d = q_old.shape[-1]
        rotate = d * d < numel
        if x.dim() == 3 and i == 0:
            x = (q_new.mT @ q_old) @ x if rotate else q_new.mT @ (q_old @ x)
        elif x.dim() == 3:
            x = x @ (q_old.mT @ q_new) if rotate else (x @ q_old.mT) @ q_new
        elif rotate:
            x = _apply_along(x, i, q_old.mT @ q_new)
        else:
            x = _apply_along(_apply_along(x, i, q_old.mT), i, q_new)
    return x
