"""SOR and SSOR-preconditioned CG for sparse SPD systems, single or batched over a family ``s_j K + c_j I``.

* SOR (Young 1950; Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., eq. 4.8 and §4.1):
  ``x ← x + (D/ω + L)⁻¹ (b − A x)`` with ``A = L + D + Lᵀ``.
* SSOR preconditioner (Saad eq. 4.12–4.13, §10.2): ``M = (D + ωL) D⁻¹ (D + ωLᵀ) / (ω (2 − ω))``, applied as
  ``M⁻¹ r = ((2 − ω)/ω) (D/ω + Lᵀ)⁻¹ D (D/ω + L)⁻¹ r`` inside Hestenes–Stiefel PCG.
* Young's optimal ω for consistently ordered matrices: ``ω* = 2 / (1 + √(1 − β²))`` with ``β = ρ(I − D⁻¹A)``
  (Saad Theorem 4.16); Khodak et al. (ICLR 2024) write it ``1 + (β / (1 + √(1 − β²)))²``, the same number.

The batched forms solve many systems ``A_j = s_j K + c_j I`` (one sparse ``K``, a scale and a shift per system:
the shifted Laplacians and Crank–Nicolson steps of the Learning-to-Relax experiments) with one ω per system, all
right-hand sides advanced together: every sweep is a level-scheduled sparse triangular solve
(:class:`~precond.linalg._sparse.LevelSolver`), and converged systems drop out of the working set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from precond.linalg._sparse import LevelSolver, as_csr, as_rhs, check_spd_cheap, from_numpy_like, levels, relative

__all__ = [
    "BatchSolveResult",
    "SolveResult",
    "SolveStatus",
    "SparseFamily",
    "jacobi_radius",
    "sor",
    "sor_batch",
    "ssor_pcg",
    "ssor_pcg_batch",
    "young_omega",
]

#: ``converged``: ``‖b − A x‖ ≤ tol·‖b − A x0‖`` (SOR) or ``≤ tol·‖b‖`` (PCG); ``max_iter``: the cap was hit;
#: ``diverged``: the residual grew past :data:`DIVERGED` times its start (A is not SPD, or ω is outside (0, 2));
#: ``breakdown``: PCG met ``pᵀAp ≤ 0`` (A is not positive definite); ``nonfinite``: NaN/inf appeared.
SolveStatus = Literal["converged", "max_iter", "diverged", "breakdown", "nonfinite"]
STATUSES: tuple[SolveStatus, ...] = ("converged", "max_iter", "diverged", "breakdown", "nonfinite")
#: relative residual at which an iteration is declared divergent
DIVERGED = 1e10


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one iterative solve.

    Attributes:
        solution: ``x`` (NumPy ``[n]``, or a torch tensor when ``b`` was one).
        iterations: iterations run (SOR sweeps or CG steps; one matrix-vector product each).
        residual_norm: final relative residual ``‖b − A x‖₂ / ‖reference‖₂`` (see :data:`SolveStatus`).
        history: relative residual before the first iteration and after each one (``iterations + 1`` values).
        status: why it stopped (:data:`SolveStatus`).
        method: ``"sor"`` or ``"ssor_pcg"``.
        omega: the relaxation used.
    """

    solution: Any
    iterations: int
    residual_norm: float
    history: tuple[float, ...]
    status: SolveStatus
    method: str
    omega: float

    @property
    def converged(self) -> bool:
        return self.status == "converged"


@dataclass(frozen=True)
class BatchSolveResult:
    """Outcome of a batched solve of ``B`` systems: ``solution [B, n]``, and per system ``iterations [B]``
    (int64), ``residual_norm [B]`` (relative, as in :class:`SolveResult`), ``status`` (``B`` strings)."""

    solution: np.ndarray
    iterations: np.ndarray
    residual_norm: np.ndarray
    status: tuple[SolveStatus, ...]
    method: str

    @property
    def converged(self) -> np.ndarray:
        return np.array([s == "converged" for s in self.status])


@dataclass(frozen=True)
class SparseFamily:
    """The systems ``A_j = scale_j · K + shift_j · I`` for a symmetric sparse ``K`` (checked once), with the
    triangular level schedules both sweeps use.

    When the lower triangle's dependency graph is shallow, the unknowns are stored in its level order ``perm``
    (a topological order of the forward sweep, so for symmetric ``K`` the permuted lower triangle is exactly the
    permuted ``L`` and the sweeps are those of the original ordering); the backward sweep then runs the same
    levels in reverse, and no sweep gathers.  ``K``, ``diag`` are in that order; inputs and outputs are not."""

    K: sp.csr_array
    diag: np.ndarray
    lower: LevelSolver
    upper: LevelSolver
    perm: np.ndarray

    @classmethod
    def build(cls, K: Any, name: str = "A") -> SparseFamily:
        M = as_csr(K, name)
        check_spd_cheap(M, name)
        n = M.shape[0]
        lev = levels(sp.csr_array(sp.tril(M, k=-1)))
        if lev is None:
            perm = np.arange(n)
            return cls(
                M,
                np.asarray(M.diagonal()),
                LevelSolver(sp.csr_array(sp.tril(M, k=-1)), lower=True),
                LevelSolver(sp.csr_array(sp.triu(M, k=1)), lower=False),
                perm,
            )
        perm = np.argsort(lev, kind="stable")
        Mp = sp.csr_array(M[perm][:, perm])
        Mp.sort_indices()
        lev_p = lev[perm]
        return cls(
            Mp,
            np.asarray(Mp.diagonal()),
            LevelSolver(sp.csr_array(sp.tril(Mp, k=-1)), lower=True, level_of=lev_p),
            LevelSolver(sp.csr_array(sp.triu(Mp, k=1)), lower=False, level_of=int(lev_p.max()) - lev_p),
            perm,
        )

    @property
    def n(self) -> int:
        return int(self.K.shape[0])


def _check_omega(omega: np.ndarray, name: str = "omega") -> None:
    if not np.isfinite(omega).all() or (omega <= 0).any() or (omega >= 2).any():
        bad = omega[~(np.isfinite(omega) & (omega > 0) & (omega < 2))]
        raise ValueError(f"`{name}` must lie in the open interval (0, 2) for SOR/SSOR to converge, got {bad[:5]}")


def _check_tol(tol: float, max_iter: int) -> None:
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"`tol` must be finite and ≥ 0, got {tol}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 0:
        raise ValueError(f"`max_iter` must be an integer ≥ 0, got {max_iter!r}")


def _per_system(value: Any, B: int, name: str, default: float) -> np.ndarray:
    arr = np.full(B, default) if value is None else np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(B, float(arr))
    if arr.shape != (B,):
        raise ValueError(f"`{name}` must be a scalar or have one value per system ({B}), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` has NaN or infinite entries")
    return arr


class _Work:
    """Per-system parameters of the active set (compacted as systems finish, extended as new ones start)."""

    def __init__(self, fam: SparseFamily, omega: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
        self.fam = fam
        self.omega, self.scale, self.shift = omega, scale, shift
        self.D = fam.diag[:, None] * scale + shift  # [n, B]
        self.Dw = self.D / omega

    def take(self, keep: np.ndarray) -> None:
        self.omega, self.scale, self.shift = self.omega[keep], self.scale[keep], self.shift[keep]
        self.D, self.Dw = self.D[:, keep], self.Dw[:, keep]

    def extend(self, other: _Work) -> None:
        self.omega = np.concatenate([self.omega, other.omega])
        self.scale = np.concatenate([self.scale, other.scale])
        self.shift = np.concatenate([self.shift, other.shift])
        self.D, self.Dw = np.hstack([self.D, other.D]), np.hstack([self.Dw, other.Dw])

    def matvec(self, X: np.ndarray) -> np.ndarray:
        return (self.fam.K @ X) * self.scale + X * self.shift

    def sor_step(self, R: np.ndarray) -> np.ndarray:
        """``(D/ω + L)⁻¹ R`` column by column."""
        return self.fam.lower.solve(R, self.Dw, self.scale)

    def ssor(self, R: np.ndarray) -> np.ndarray:
        """``M_SSOR⁻¹ R = ((2 − ω)/ω) (D/ω + U)⁻¹ D (D/ω + L)⁻¹ R``."""
        Y = self.fam.lower.solve(R, self.Dw, self.scale)
        Z = self.fam.upper.solve(self.D * Y, self.Dw, self.scale)
        return Z * ((2 - self.omega) / self.omega)


def _check_diagonal(fam: SparseFamily, scale: np.ndarray, shift: np.ndarray) -> None:
    """Every ``scale_j·diag(K) + shift_j`` must be positive; it is linear in the diagonal entry, so checking the
    smallest and the largest entry suffices (no ``[n, B]`` array)."""
    lo, hi = float(fam.diag.min()), float(fam.diag.max())
    bad = (scale * lo + shift <= 0) | (scale * hi + shift <= 0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"system {j} (scale={scale[j]:.3g}, shift={shift[j]:.3g}) has a diagonal entry ≤ 0: "
            "scale·K + shift·I is not positive definite"
        )


@dataclass
class _Params:
    """The per-system inputs of a batched solve (all ``B`` systems, in the level order of the family)."""

    fam: SparseFamily
    omega: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    B: np.ndarray  # [n, B]
    X: np.ndarray  # [n, B], overwritten with the solutions

    def work(self, sel: np.ndarray) -> _Work:
        return _Work(self.fam, self.omega[sel], self.scale[sel], self.shift[sel])


def _setup(
    family: SparseFamily | Any,
    b: Any,
    omega: Any,
    scale: Any,
    shift: Any,
    x0: Any,
    tol: float,
    max_iter: int,
) -> _Params:
    fam = family if isinstance(family, SparseFamily) else SparseFamily.build(family)
    _check_tol(tol, max_iter)
    Bm = as_rhs(b, fam.n, "b", batch=True)
    nb = Bm.shape[0]
    if nb == 0:
        raise ValueError("`b` holds no right-hand sides (shape [0, n])")
    om = _per_system(omega, nb, "omega", 1.0)
    _check_omega(om)
    sc, sh = _per_system(scale, nb, "scale", 1.0), _per_system(shift, nb, "shift", 0.0)
    _check_diagonal(fam, sc, sh)
    X = np.zeros_like(Bm) if x0 is None else as_rhs(x0, fam.n, "x0", batch=True)
    if X.shape != Bm.shape:
        raise ValueError(f"`x0` must have the shape of `b` {Bm.shape}, got {X.shape}")
    p = fam.perm
    return _Params(fam, om, sc, sh, np.ascontiguousarray(Bm.T[p]), np.ascontiguousarray(X.T[p]))


#: systems advanced together: the working arrays ``[n, CHUNK]`` stay in cache
CHUNK = 1024
#: the working set is refilled from the queue once this many of its slots are free
REFILL = CHUNK // 8


class _Active:
    """The systems being iterated: their global indices, iteration counts and iterates (columns)."""

    def __init__(self, prm: _Params, sel: np.ndarray, method: str) -> None:
        self.idx = sel
        self.k = np.zeros(sel.size, dtype=np.int64)
        self.work = prm.work(sel)
        self.X, self.B = prm.X[:, sel], prm.B[:, sel]
        self.R = self.B - self.work.matvec(self.X)
        self.rn = np.linalg.norm(self.R, axis=0)
        self.ref = self.rn.copy() if method == "sor" else np.linalg.norm(self.B, axis=0)
        self.breakdown = np.zeros(sel.size, dtype=bool)
        self.alive = np.ones(sel.size, dtype=bool)
        self.pcg = method == "ssor_pcg"
        if self.pcg:
            self.Z = self.work.ssor(self.R)
            self.P = self.Z.copy()
            self.rz = (self.R * self.Z).sum(0)

    _COLUMNS = ("X", "B", "R", "Z", "P")
    _ENTRIES = ("idx", "k", "rn", "ref", "breakdown", "alive", "rz")

    def _fields(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        cols = self._COLUMNS if self.pcg else self._COLUMNS[:3]
        ents = self._ENTRIES if self.pcg else self._ENTRIES[:6]
        return cols, ents

    def take(self, keep: np.ndarray) -> None:
        cols, ents = self._fields()
        for name in cols:
            setattr(self, name, getattr(self, name)[:, keep])
        for name in ents:
            setattr(self, name, getattr(self, name)[keep])
        self.work.take(keep)

    def extend(self, other: _Active) -> None:
        cols, ents = self._fields()
        for name in cols:
            setattr(self, name, np.hstack([getattr(self, name), getattr(other, name)]))
        for name in ents:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))
        self.work.extend(other.work)

    def retire(self, stop: np.ndarray) -> None:
        """Mark stopped systems dead without moving the others: their iterate, right-hand side, residual and
        directions become zero, so further steps keep them at zero (finite) until the next :meth:`take` drops
        them."""
        self.alive = self.alive & ~stop
        self.X[:, stop] = 0.0
        self.B[:, stop] = 0.0
        self.R[:, stop] = 0.0
        self.rn[stop] = 0.0
        if self.pcg:
            self.Z[:, stop] = 0.0
            self.P[:, stop] = 0.0
            self.rz[stop] = 0.0

    @property
    def size(self) -> int:
        return int(self.idx.size)


def _run(
    prm: _Params,
    *,
    method: str,
    tol: float,
    max_iter: int,
    history: list[np.ndarray] | None,
) -> BatchSolveResult:
    """The batched loop of both methods on ``[n, ·]`` columns, results in input order.

    At most :data:`CHUNK` systems are advanced together; a system leaves the working set when it stops and
    queued systems take the free slots (continuous batching), so the sweeps run are about
    ``Σ iterations / CHUNK`` plus the longest single solve, not ``max iterations`` per chunk.  The systems are
    independent: each one's iterates are those of its own solve."""
    nb = prm.B.shape[1]
    iters = np.zeros(nb, dtype=np.int64)
    final = np.zeros(nb)
    status = np.array(["max_iter"] * nb, dtype=object)
    nxt = min(CHUNK, nb)
    act = _Active(prm, np.arange(nxt), method)
    fresh = True  # the working set holds systems not yet checked at their current iterate
    while True:
        rel = relative(act.rn, act.ref)
        if history is not None and fresh:
            row = np.full(nb, np.nan)
            row[act.idx] = rel
            history.append(row)
        done = rel <= tol
        bad = ~np.isfinite(rel)
        div = rel > DIVERGED
        brk = ~done & ~bad & act.breakdown
        stop = act.alive & (done | bad | div | brk | (act.k >= max_iter))
        if stop.any():
            s = act.idx[stop]
            prm.X[:, s] = act.X[:, stop]
            iters[s] = act.k[stop]
            final[s] = rel[stop]
            status[act.idx[stop & done]] = "converged"
            status[act.idx[stop & ~done & div & ~bad]] = "diverged"
            status[act.idx[stop & ~done & brk & ~div & ~bad]] = "breakdown"
            status[act.idx[stop & bad]] = "nonfinite"
            act.retire(stop)
        dead = act.size - int(act.alive.sum())
        if dead and (dead >= REFILL or 2 * dead >= act.size):
            act.take(act.alive)
        free = CHUNK - act.size
        if nxt < nb and (free >= min(REFILL, nb - nxt) or act.size == 0):
            sel = np.arange(nxt, min(nxt + free, nb))
            nxt = int(sel[-1]) + 1
            act.extend(_Active(prm, sel, method))
            fresh = False  # the new systems are checked at the top before they are stepped
            continue
        if act.size == 0:
            break
        fresh = True
        act.k += 1
        work = act.work
        if not act.pcg:
            act.X = act.X + work.sor_step(act.R)
            act.R = act.B - work.matvec(act.X)
        else:
            AP = work.matvec(act.P)
            pap = (act.P * AP).sum(0)
            act.breakdown = ~(pap > 0)
            alpha = np.where(act.breakdown, 0.0, act.rz / np.where(act.breakdown, 1.0, pap))
            act.X = act.X + alpha * act.P
            act.R = act.R - alpha * AP
            act.Z = work.ssor(act.R)
            rz_new = (act.R * act.Z).sum(0)
            beta = np.where(act.rz != 0, rz_new / np.where(act.rz != 0, act.rz, 1.0), 0.0)
            act.P = act.Z + beta * act.P
            act.rz = rz_new
        act.rn = np.linalg.norm(act.R, axis=0)
    out = np.empty_like(prm.X)
    out[prm.fam.perm] = prm.X
    return BatchSolveResult(np.ascontiguousarray(out.T), iters, final, tuple(status.tolist()), method)


def sor_batch(
    A: SparseFamily | Any,
    b: Any,
    omega: Any = 1.0,
    *,
    scale: Any = None,
    shift: Any = None,
    tol: float = 1e-8,
    max_iter: int = 10_000,
    x0: Any = None,
) -> BatchSolveResult:
    """SOR on ``B`` systems ``(scale_j A + shift_j I) x_j = b_j`` at once, each with its own ``omega_j``.

    Stops system ``j`` when ``‖b_j − A_j x_j‖₂ ≤ tol·‖b_j − A_j x0_j‖₂`` (the Learning-to-Relax criterion).

    Args:
        A: sparse symmetric ``[n, n]`` with a positive diagonal (SciPy, NumPy or torch), or a prebuilt
            :class:`SparseFamily` (reuses its level schedules across calls).
        b: ``[B, n]`` right-hand sides (a ``[n]`` vector is one system).
        omega: scalar or ``[B]``, each in ``(0, 2)``.
        scale, shift: scalar or ``[B]`` (defaults 1 and 0: the systems ``A x_j = b_j``).
        tol: relative tolerance ``≥ 0``; max_iter: sweeps per system.
        x0: ``[B, n]`` starting points (default zero).
    """
    prm = _setup(A, b, omega, scale, shift, x0, tol, max_iter)
    return _run(prm, method="sor", tol=tol, max_iter=max_iter, history=None)


def ssor_pcg_batch(
    A: SparseFamily | Any,
    b: Any,
    omega: Any = 1.0,
    *,
    scale: Any = None,
    shift: Any = None,
    tol: float = 1e-8,
    max_iter: int = 10_000,
    x0: Any = None,
) -> BatchSolveResult:
    """SSOR-preconditioned CG on ``B`` systems ``(scale_j A + shift_j I) x_j = b_j`` (arguments as
    :func:`sor_batch`); stops system ``j`` when ``‖b_j − A_j x_j‖₂ ≤ tol·‖b_j‖₂`` (MATLAB ``pcg``'s rule)."""
    prm = _setup(A, b, omega, scale, shift, x0, tol, max_iter)
    return _run(prm, method="ssor_pcg", tol=tol, max_iter=max_iter, history=None)


def _single(method: str, A: Any, b: Any, omega: float, tol: float, max_iter: int, x0: Any) -> SolveResult:
    if isinstance(omega, bool) or not isinstance(omega, int | float | np.floating | np.integer):
        raise TypeError(f"`omega` must be a number in (0, 2), got {type(omega).__name__}")
    fam = A if isinstance(A, SparseFamily) else SparseFamily.build(A)
    if isinstance(b, np.ndarray | list) or hasattr(b, "shape"):
        shape = tuple(b.shape) if hasattr(b, "shape") else np.shape(b)
        if len(shape) != 1:
            raise ValueError(f"`b` must be a vector of length {fam.n}, got shape {shape}; use sor_batch for [B, n]")
    prm = _setup(fam, b, omega, None, None, None if x0 is None else as_rhs(x0, fam.n, "x0"), tol, max_iter)
    hist: list[np.ndarray] = []
    res = _run(prm, method=method, tol=tol, max_iter=max_iter, history=hist)
    return SolveResult(
        solution=from_numpy_like(res.solution[0], b),
        iterations=int(res.iterations[0]),
        residual_norm=float(res.residual_norm[0]),
        history=tuple(float(h[0]) for h in hist),
        status=res.status[0],
        method=method,
        omega=float(omega),
    )


def sor(
    A: Any, b: Any, omega: float = 1.0, *, tol: float = 1e-8, max_iter: int = 10_000, x0: Any = None
) -> SolveResult:
    """Successive over-relaxation for a sparse SPD ``A x = b`` (``omega = 1`` is Gauss–Seidel).

    Each sweep is one vectorized sparse triangular solve ``(D/ω + L)⁻¹ r`` (no Python loop over rows).  Stops when
    ``‖b − A x‖₂ ≤ tol·‖b − A x0‖₂``; ``A`` must be symmetric with a positive diagonal (checked) and is expected
    to be positive definite, for which SOR converges for every ``ω ∈ (0, 2)`` (Ostrowski–Reich).

    Args:
        A: ``[n, n]`` SciPy sparse, NumPy or torch matrix, or a :class:`SparseFamily` (schedules reused).
        b: ``[n]`` right-hand side (NumPy or torch; a torch ``b`` gives a torch solution).
        omega: relaxation in ``(0, 2)``.
        tol: relative tolerance; max_iter: sweep cap; x0: starting point (default zero).
    """
    return _single("sor", A, b, omega, tol, max_iter, x0)


def ssor_pcg(
    A: Any, b: Any, omega: float = 1.0, *, tol: float = 1e-8, max_iter: int = 10_000, x0: Any = None
) -> SolveResult:
    """Conjugate gradients preconditioned by SSOR(ω) for a sparse SPD ``A x = b``; stops when
    ``‖b − A x‖₂ ≤ tol·‖b‖₂``.  Arguments as :func:`sor`; the preconditioner is SPD for every ``ω ∈ (0, 2)``."""
    return _single("ssor_pcg", A, b, omega, tol, max_iter, x0)


def jacobi_radius(A: Any) -> float:
    """``β = ρ(I − D⁻¹A)`` of a symmetric ``A`` with positive diagonal, from the extreme eigenvalues of
    ``D^{-1/2} A D^{-1/2}`` (dense for ``n ≤ 2000``, Lanczos otherwise)."""
    M = as_csr(A)
    d = check_spd_cheap(M)
    s = sp.diags_array(1 / np.sqrt(d))
    S = sp.csr_array(s @ M @ s)
    n = S.shape[0]
    if n <= 2000:
        ev = np.linalg.eigvalsh(S.toarray())
        lo, hi = float(ev[0]), float(ev[-1])
    else:
        hi = float(spla.eigsh(S, k=1, which="LA", return_eigenvectors=False)[0])
        lo = float(spla.eigsh(S, k=1, sigma=0.0, which="LM", return_eigenvectors=False)[0])
    return max(abs(1 - lo), abs(1 - hi))


def young_omega(A: Any) -> float:
    """Young's optimal SOR relaxation ``ω* = 2 / (1 + √(1 − β²))``, ``β = ρ(I − D⁻¹A)`` (optimal for
    consistently ordered matrices, e.g. 5-point grids in natural order; Saad Theorem 4.16).  ``ValueError`` when
    ``β ≥ 1`` (Jacobi does not converge, so the formula does not apply)."""
    beta = jacobi_radius(A)
    if beta >= 1:
        raise ValueError(f"ρ(I − D⁻¹A) = {beta:.6g} ≥ 1: Young's formula needs a convergent Jacobi iteration")
    return 2.0 / (1.0 + math.sqrt(1.0 - beta * beta))
