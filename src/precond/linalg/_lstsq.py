"""Least squares ``min ‖A x − b‖₂`` for tall dense or sparse ``A``: sketch-and-precondition LSQR (Rokhlin–Tygert
2008; Blendenpik, Avron–Maymounkov–Toledo 2010; LSRN, Meng–Saunders–Mahoney 2014), plain LSQR, or a direct solve.

``sketch_lsqr``: draw a sketch ``S`` with ``s = γ·n`` rows (Gaussian, sparse-sign/OSNAP, or SRHT: random signs,
a DCT, uniform row sampling), take ``S A = Q R`` and run LSQR (Paige–Saunders 1982) on ``A R⁻¹ y = b``, ``x = R⁻¹
y``.  If ``S`` embeds ``range(A)`` with distortion ``ε`` then ``κ(A R⁻¹) ≤ (1+ε)/(1−ε)`` whatever ``κ(A)`` is, so the
iteration count depends on ``γ`` and the tolerance only (≈ 2 ln(1/tol)/ln γ for a Gaussian sketch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.fft
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from precond.linalg._sparse import as_rhs, from_numpy_like

__all__ = ["LstsqResult", "lstsq", "sketch"]

Method = Literal["sketch_lsqr", "lsqr", "direct"]
Sketch = Literal["gaussian", "sparse_sign", "srht"]
Status = Literal["converged", "max_iter", "ill_conditioned"]


@dataclass(frozen=True)
class LstsqResult:
    """Solution of ``min ‖A x − b‖₂``.

    Attributes:
        solution: ``x [n]`` (torch when ``b`` was a torch tensor).
        iterations: LSQR iterations (0 for ``direct``).
        residual_norm: ``‖A x − b‖₂``.
        status: ``"converged"``, ``"max_iter"`` (LSQR's stopping test not met within the cap) or
            ``"ill_conditioned"`` (LSQR's estimate of ``cond(A)`` reached ``1/eps``: not a reliable solution).
        method: the method used; sketch: the sketch (``None`` unless ``sketch_lsqr``).
    """

    solution: Any
    iterations: int
    residual_norm: float
    status: Status
    method: str
    sketch: str | None = None

    @property
    def converged(self) -> bool:
        return self.status == "converged"


def _as_matrix(A: Any) -> np.ndarray | sp.csr_array:
    if isinstance(A, torch.Tensor):
        A = A.detach().cpu()
        A = A.to_dense().numpy() if A.layout != torch.strided else A.numpy()
    if sp.issparse(A):
        M: np.ndarray | sp.csr_array = sp.csr_array(A, dtype=np.float64)
        data = M.data
    else:
        try:
            M = np.asarray(A, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"`A` must be a NumPy array, SciPy sparse matrix or torch tensor: {err}") from err
        data = M
    if M.ndim != 2 or M.shape[0] == 0 or M.shape[1] == 0:
        raise ValueError(f"`A` must be a non-empty 2-D matrix, got shape {M.shape}")
    if not np.isfinite(data).all():
        raise ValueError("`A` has NaN or infinite entries")
    return M


def _lsqr(op: Any, rhs: np.ndarray, tol: float, cap: int) -> tuple[np.ndarray, int, Status]:
    """SciPy's LSQR stopped by ``atol = btol = tol`` and the cap only: ``conlim = 0`` turns off its default stop at
    ``cond(A) > 1e8`` (SciPy's ``istop = 3``), which would return an unconverged iterate for an ill-conditioned
    ``A``; ``istop = 7`` is the cap, ``6`` a condition estimate of ``1/eps``."""
    x, istop, itn = spla.lsqr(op, rhs, atol=tol, btol=tol, conlim=0.0, iter_lim=cap)[:3]
    status: Status = "max_iter" if istop == 7 else "ill_conditioned" if istop in (3, 6) else "converged"
    return x, int(itn), status


def sketch(A: np.ndarray | sp.csr_array, rows: int, kind: Sketch, rng: np.random.Generator) -> np.ndarray:
    """``S A`` for a ``rows × m`` sketch ``S`` of the given kind (each an oblivious subspace embedding)."""
    m = A.shape[0]
    if kind == "gaussian":
        return np.asarray(rng.standard_normal((rows, m)) @ A) / math.sqrt(rows)
    if kind == "sparse_sign":  # OSNAP with 8 nonzeros per column (Nelson–Nguyễn 2013)
        k = min(8, rows)
        cols = np.repeat(np.arange(m), k)
        buckets = rng.integers(0, rows, m * k)
        signs = rng.choice([-1.0, 1.0], m * k) / math.sqrt(k)
        S = sp.csr_array((signs, (buckets, cols)), shape=(rows, m))
        SA: Any = S @ A
        return np.asarray(SA.toarray() if sp.issparse(SA) else SA)
    if kind == "srht":  # randomized DCT + uniform row sampling (Blendenpik)
        dense = A.toarray() if isinstance(A, sp.csr_array) else A
        mixed = scipy.fft.dct(dense * rng.choice([-1.0, 1.0], m)[:, None], axis=0, norm="ortho")
        pick = rng.choice(m, size=min(rows, m), replace=False)
        return np.asarray(mixed[pick] * math.sqrt(m / pick.size))
    raise ValueError(f"`sketch` must be one of gaussian, sparse_sign, srht, got {kind!r}")


def lstsq(
    A: Any,
    b: Any,
    method: Method = "sketch_lsqr",
    *,
    sketch_kind: Sketch = "sparse_sign",
    oversampling: float = 4.0,
    tol: float = 1e-14,
    max_iter: int | None = None,
    seed: int | None = 0,
) -> LstsqResult:
    """Minimize ``‖A x − b‖₂`` for a tall (``m ≥ n``) dense or sparse ``A`` of full column rank.

    Args:
        A: ``[m, n]`` NumPy, SciPy sparse or torch matrix.
        b: ``[m]`` right-hand side.
        method: ``"sketch_lsqr"`` (sketch-preconditioned LSQR), ``"lsqr"`` (SciPy's LSQR, unpreconditioned) or
            ``"direct"`` (LAPACK QR via :func:`scipy.linalg.lstsq` for dense, a sparse QR-free normal-equations
            route is not offered: sparse ``A`` is densified).
        sketch_kind: ``"gaussian"``, ``"sparse_sign"`` (default; ``O(nnz)``) or ``"srht"`` (dense only sensible).
        oversampling: ``γ > 1``, sketch rows ``⌈γ n⌉`` (capped at ``m``).
        tol: LSQR's ``atol = btol`` (no condition-number stop); max_iter: LSQR cap ``≥ 1`` (default ``4 n`` for
            ``lsqr``, ``200`` with the sketch).
        seed: sketch seed.
    """
    M = _as_matrix(A)
    m, n = M.shape
    if m < n:
        raise ValueError(f"`A` must be tall (rows ≥ columns) for least squares here, got shape {M.shape}")
    rhs = as_rhs(b, m, "b")
    if method not in ("sketch_lsqr", "lsqr", "direct"):
        raise ValueError(f"`method` must be 'sketch_lsqr', 'lsqr' or 'direct', got {method!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"`tol` must be finite and ≥ 0, got {tol}")
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1):
        raise ValueError(f"`max_iter` must be an integer ≥ 1 or None, got {max_iter!r}")
    if not (math.isfinite(oversampling) and oversampling > 1):
        raise ValueError(f"`oversampling` must be > 1 (sketch rows = oversampling · columns), got {oversampling}")
    if method == "direct":
        dense = M.toarray() if isinstance(M, sp.csr_array) else M
        x = sla.lstsq(dense, rhs, lapack_driver="gelsy")[0]
        r = float(np.linalg.norm(dense @ x - rhs))
        return LstsqResult(from_numpy_like(x, b), 0, r, "converged", "direct")
    if method == "lsqr":
        x, its, status = _lsqr(M, rhs, tol, 4 * n if max_iter is None else max_iter)
        return LstsqResult(from_numpy_like(x, b), its, float(np.linalg.norm(M @ x - rhs)), status, "lsqr")
    rng = np.random.default_rng(seed)
    rows = min(m, math.ceil(oversampling * n))
    R = np.linalg.qr(sketch(M, rows, sketch_kind, rng), mode="r")
    diag = np.abs(np.diag(R))
    if diag.min() <= 1e3 * np.finfo(float).eps * diag.max():
        raise ValueError(
            "`A` is numerically rank deficient (its sketch has a singular R factor); lstsq needs full "
            "column rank, use method='direct' for a minimum-norm solution"
        )

    def mv(y: np.ndarray) -> np.ndarray:
        return np.asarray(M @ sla.solve_triangular(R, y, lower=False))

    def rmv(z: np.ndarray) -> np.ndarray:
        return sla.solve_triangular(R, np.asarray(M.T @ z), trans="T", lower=False)

    op = spla.LinearOperator((m, n), matvec=mv, rmatvec=rmv, dtype=np.float64)
    y, its, status = _lsqr(op, rhs, tol, 200 if max_iter is None else max_iter)
    x = sla.solve_triangular(R, y, lower=False)
    return LstsqResult(
        from_numpy_like(x, b), its, float(np.linalg.norm(M @ x - rhs)), status, "sketch_lsqr", sketch_kind
    )
