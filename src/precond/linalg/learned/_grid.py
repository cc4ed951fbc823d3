"""The 2-D pressure-Poisson operator on a cell grid with solid obstacles, as a sparse matrix (for the solvers)
and as a torch stencil on ``[B, 1, H, W]`` grids (for training the direction network).

Cells are fluid (``mask = True``) or solid.  Faces between two fluid cells couple them (``−1``); a face to a
solid cell is a wall (zero normal flux, Neumann: no term); a face on the outer boundary of the domain is open
(``p = 0`` outside, Dirichlet: ``+1`` on the diagonal).  The diagonal is the number of non-wall faces.  The
unknowns are the fluid cells in row-major order; a fluid cell must reach the boundary through fluid (checked),
so the matrix is symmetric positive definite (Kaneda et al., ICML 2023, §4 use the same discretization in 3-D
with solid Neumann walls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["PoissonGrid"]

_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _neighbour(mask: np.ndarray, di: int, dj: int) -> np.ndarray:
    """``out[i, j] = mask[i + di, j + dj]`` (``False`` outside the domain)."""
    H, W = mask.shape
    out = np.zeros_like(mask)
    out[max(-di, 0) : H - max(di, 0), max(-dj, 0) : W - max(dj, 0)] = mask[
        max(di, 0) : H - max(-di, 0), max(dj, 0) : W - max(-dj, 0)
    ]
    return out


def _inside(shape: tuple[int, int], di: int, dj: int) -> np.ndarray:
    return _neighbour(np.ones(shape, dtype=bool), di, dj)


@dataclass(frozen=True)
class PoissonGrid:
    """The Poisson operator of a fluid ``mask [H, W]`` (see the module docstring)."""

    mask: np.ndarray
    diag: np.ndarray  # [H, W], zero on solid cells
    links: np.ndarray  # [4, H, W]: the cell and its neighbour in direction k are both fluid

    @classmethod
    def build(cls, mask: Any) -> PoissonGrid:
        m = np.asarray(mask)
        if m.ndim != 2 or m.dtype != bool:
            raise ValueError(f"`mask` must be a 2-D boolean array (True = fluid), got {m.dtype} of shape {m.shape}")
        if not m.any():
            raise ValueError("`mask` has no fluid cell")
        from scipy import ndimage

        labels, _ = ndimage.label(m)
        edge = np.zeros_like(m)
        edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
        open_labels = np.unique(labels[edge & m])
        trapped = m & ~np.isin(labels, open_labels)
        if trapped.any():
            raise ValueError(
                f"{int(trapped.sum())} fluid cells of `mask` do not reach the domain boundary through fluid (the "
                "Neumann problem there is singular); make them solid first, e.g. with fill_pockets"
            )
        links = np.stack([m & _neighbour(m, di, dj) for di, dj in _SHIFTS])
        open_faces = np.stack([~_inside(m.shape, di, dj) for di, dj in _SHIFTS]).sum(0)
        diag = np.where(m, links.sum(0) + open_faces, 0).astype(np.float64)
        return cls(m, diag, links)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @property
    def n(self) -> int:
        return int(self.mask.sum())

    def matrix(self) -> sp.csr_array:
        """The ``[n, n]`` SPD matrix on the fluid cells (row-major order)."""
        H, W = self.shape
        index = np.full((H, W), -1, dtype=np.int64)
        index[self.mask] = np.arange(self.n)
        rows, cols = [index[self.mask]], [index[self.mask]]
        vals = [self.diag[self.mask]]
        for k, (di, dj) in enumerate(_SHIFTS):
            src = self.links[k]
            dst = np.roll(np.roll(index, -di, 0), -dj, 1)  # neighbour index (valid where links)
            rows.append(index[src])
            cols.append(dst[src])
            vals.append(-np.ones(int(src.sum())))
        return sp.csr_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(self.n, self.n)
        )

    def to_grid(self, v: Any) -> torch.Tensor:
        """Vectors ``[n]`` or ``[B, n]`` (NumPy or torch) as grids ``[B, 1, H, W]`` (zero on solid cells)."""
        t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
        if t.ndim not in (1, 2) or t.shape[-1] != self.n:
            raise ValueError(
                f"vectors must have shape [{self.n}] or [B, {self.n}] (the fluid cells), got {tuple(t.shape)}"
            )
        t = t.reshape(-1, self.n)
        out = t.new_zeros((t.shape[0], *self.shape))
        out[:, torch.from_numpy(self.mask)] = t
        return out[:, None]

    def from_grid(self, g: torch.Tensor) -> torch.Tensor:
        """Grids ``[B, 1, H, W]`` as vectors ``[B, n]`` (the fluid cells)."""
        return g[:, 0][:, torch.from_numpy(self.mask)]

    def stencil(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(diag [1, 1, H, W], links [4, H, W])`` as tensors for :meth:`apply`."""
        return (
            torch.from_numpy(self.diag).to(dtype)[None, None],
            torch.from_numpy(self.links).to(dtype),
        )

    def apply(self, x: torch.Tensor, stencil: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``A x`` on grids ``[B, 1, H, W]`` (differentiable; solid cells give zero)."""
        diag, links = stencil if stencil is not None else self.stencil(x.dtype)
        out = diag * x
        for k, (di, dj) in enumerate(_SHIFTS):
            shifted = torch.roll(x, shifts=(-di, -dj), dims=(2, 3))  # value of the neighbour in direction k
            out = out - links[k] * shifted
        return out
