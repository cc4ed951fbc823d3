"""The Gauss–Newton step ``H δ = b`` of point-to-plane ICP: DCReg's preconditioned CG and the baselines.

Definitions (DCReg's baseline branch ``DCReg/include/dcreg.hpp`` and ``config/icp.yaml``; LOAM: Zhang, Kaess & Singh,
ICRA 2016):

* ``"direct"``: the Gauss–Newton step ``H⁻¹ b``; the minimum-norm ``H⁺ b`` when ``H`` is singular.
* ``"dcreg"``: PCG on ``H δ = b`` with DCReg's block preconditioner (:meth:`DegeneracyReport.preconditioner`),
  stopping at ``‖r‖ ≤ tol · max(1, ‖b‖)``; not converged within ``pcg_max_iter`` → the direct step (DCReg: QR).
  On a 6×6 system PCG run to convergence *is* the Gauss–Newton step whatever the preconditioner (arXiv v2:
  the clamp "preserves the least-squares objective and minimizer"): DCReg does not regularize, it avoids
  distorting the step. Singular ``H``: PCG runs on the range of ``H`` (preconditioner ``Q P Q``, ``Q`` the
  projector onto it), so the step along unobservable directions is exactly zero (minimum norm) — the C++ flags
  all six axes and falls back to QR there.

  Weak directions are therefore *not* damped: the clamp only shapes the PCG iterates, and DCReg's C++ runs at least
  6 iterations (``max(pcg_max_iterations, 6)``) or falls back to QR, so its drift along a weak direction is the
  Gauss–Newton step's. Measured (2k points per cloud, seed 0, the benchmark's scenes and perturbation, drift
  ``‖ξ_deg − ξ₀,deg‖``): corridor 0.20 (SR/TSVD 8.0e-3, LOAM 4.3e-3), noisy corridor 2.0e-2 (LOAM 5.0e-3),
  cylinder 7.5e-2 (SR 7.2e-3), shifted cylinder 0.15 (SR 2.4e-2), with an observable error equal to the direct
  step's (2.4e-3, 1.7e-3, 8.0e-4, 9.4e-3; SR 2.4e-3, 1.6e-3, 7.6e-4, 2.3e-2). Truncating PCG after one iteration
  without the fallback (not DCReg) damps the weak directions somewhat (corridor 5.6e-2, cylinder 1.4e-2) at the
  cost of convergence (30 iterations, larger observable error). So a faithful DCReg cannot have the smallest drift
  against baselines that freeze the flagged directions; what it keeps is the undistorted minimizer.
* ``"sr"`` (solution remapping): ``δ ← V_g V_gᵀ H⁺ b``, projecting the step onto the non-degenerate eigenvectors.
* ``"tsvd"``: ``δ = Σ_good v vᵀ b / λ`` (degenerate and ``λ ≤ 1e-9`` eigenpairs dropped).
* ``"treg"``: ``(H + γ I) δ = b`` (γ = 100) when a direction is degenerate, else the direct step.
* ``"loam"``: LOAM's remapping with its own detector (``λ_i < 100`` counted up from the smallest); with
  :func:`~precond.registration.icp`'s ``analysis="first"`` the projector is fixed at the first iteration, as in LOAM.

With a ``report`` of an earlier ``H`` (``analysis="first"``) only the detection is reused: the direct step, DCReg's
range projection and TSVD's truncated inverse (re-detected with the same thresholds) use the current ``H``.

``sr``, ``tsvd`` and ``treg`` take their degenerate eigen-directions from ``detector``: ``"me"`` (``λ_i < 120``)
or ``"fcn"`` (``cond > 10`` and ``λ_max / λ_i > 10``), i.e. DCReg's ME-SR, ME-TSVD, ME-TReg and FCN-SR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from precond.linalg import pcg
from precond.registration._degeneracy import DegeneracyReport, degeneracy
from precond.registration._validate import check_choice, check_hessian, check_int, check_real, check_vector6

__all__ = ["METHODS", "SolveResult", "solve"]

METHODS = ("dcreg", "direct", "sr", "tsvd", "treg", "loam")
DETECTORS = ("me", "fcn")


@dataclass(frozen=True)
class SolveResult:
    """One Gauss–Newton step.

    Attributes:
        step: ``δ = [ω; v]`` ``[6]`` (apply as ``T ← T · Exp(δ)``).
        method: the method used.
        status: ``"solved"``; ``"fallback"`` (``"dcreg"``: PCG missed its tolerance, the direct step was taken);
            ``"zero_rhs"`` (``‖b‖ < 1e-12``: no step).
        iterations: PCG iterations (0 for the other methods).
        degenerate: ``[6]`` bool over ``report.eigenvalues_full`` (``sr``/``tsvd``/``treg``/``loam``: the
            directions handled) or over :data:`~precond.registration.AXES` (``dcreg``: ``report.mask``).
        report: the :class:`~precond.registration.DegeneracyReport` used.
    """

    step: np.ndarray
    method: str
    status: str
    iterations: int
    degenerate: np.ndarray
    report: DegeneracyReport


def _spectrum(h: np.ndarray, null_rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of *this* ``H`` with eigenvalues ``≤ null_rtol · λ_max`` set to zero. A ``report`` passed in may
    be an earlier iteration's (``analysis="first"``): its detection is reused, never its inverse."""
    lam, vec = np.linalg.eigh(h)
    return np.where(lam > null_rtol * max(float(lam[-1]), 0.0), lam, 0.0), vec


def _direct(h: np.ndarray, b: np.ndarray, null_rtol: float) -> np.ndarray:
    lam, vec = _spectrum(h, null_rtol)
    if (lam > 0).all():
        return np.linalg.solve(h, b)
    keep = lam > 0
    return vec[:, keep] @ ((vec[:, keep].T @ b) / lam[keep])


def _dcreg(
    h: np.ndarray, b: np.ndarray, report: DegeneracyReport, tol: float, max_iter: int
) -> tuple[np.ndarray, int, bool]:
    p = report.preconditioner()
    lam, vec = _spectrum(h, report.null_rtol)
    if not (lam > 0).all():
        rng = vec[:, lam > 0]
        q = rng @ rng.T
        p, b = q @ p @ q, q @ b
    ht, pt, bt = (torch.from_numpy(np.ascontiguousarray(a)) for a in (h, p, b))
    x, info = pcg(lambda v: v @ ht, bt, lambda r: r @ pt, tol=tol, max_iter=max_iter, atol=tol)
    step = x.numpy()
    ok = info.converged and bool(np.isfinite(step).all())
    return step, info.iterations, ok


def solve(
    H: np.ndarray,
    b: np.ndarray,
    *,
    method: str = "dcreg",
    report: DegeneracyReport | None = None,
    threshold: float = 10.0,
    kappa: float = 10.0,
    detector: str = "me",
    pcg_tol: float = 1e-6,
    pcg_max_iter: int = 10,
    gamma: float = 100.0,
    loam_threshold: float = 100.0,
    me_threshold: float = 120.0,
) -> SolveResult:
    """The degeneracy-aware Gauss–Newton step of ``H δ = b`` by ``method`` (see the module docstring).

    Args:
        H: ``[6, 6]`` symmetric PSD Hessian in ``[rot; trans]`` order.
        b: ``[6]`` right-hand side ``−Σ Jᵢᵀ eᵢ``.
        method: one of :data:`METHODS`.
        report: a precomputed :func:`~precond.registration.degeneracy` report to use for the detection (e.g. the
            first iteration's); default: analyse ``H`` (with ``threshold``, ``kappa``, ``loam_threshold``,
            ``me_threshold``).
        threshold, kappa: DCReg's per-axis ratio threshold and clamp target (both 10).
        detector: ``"me"`` or ``"fcn"``, the detection of ``sr``, ``tsvd`` and ``treg``.
        pcg_tol, pcg_max_iter: DCReg's PCG tolerance (1e-6, on ``‖r‖ / max(1, ‖b‖)``) and iteration cap (10).
        gamma: the Tikhonov damping of ``treg`` (100).
        loam_threshold, me_threshold: LOAM's and ME's absolute eigenvalue thresholds (100, 120).

    Returns:
        A :class:`SolveResult`; its ``step`` is finite.
    """
    h = check_hessian(H)
    rhs = check_vector6(b)
    check_choice(method, "method", METHODS)
    check_choice(detector, "detector", DETECTORS)
    pcg_tol = check_real(pcg_tol, "pcg_tol", minimum=0.0, strict=True)
    pcg_max_iter = check_int(pcg_max_iter, "pcg_max_iter", 1)
    gamma = check_real(gamma, "gamma", minimum=0.0)
    if report is None:
        report = degeneracy(
            h, threshold=threshold, kappa=kappa, loam_threshold=loam_threshold, me_threshold=me_threshold
        )
    elif not isinstance(report, DegeneracyReport):
        raise TypeError(f"`report` must be a DegeneracyReport from degeneracy(), got {type(report).__name__}")
    lam, vec = report.eigenvalues_full, report.eigenvectors_full
    flagged = report.me_mask if detector == "me" else report.fcn_mask
    if method == "loam":
        flagged = report.loam_mask
    if method == "dcreg":
        flagged = report.mask
    if float(np.linalg.norm(rhs)) < 1e-12:
        return SolveResult(np.zeros(6), method, "zero_rhs", 0, flagged.copy(), report)
    status, iterations = "solved", 0
    if method == "direct":
        step = _direct(h, rhs, report.null_rtol)
    elif method == "dcreg":
        step, iterations, ok = _dcreg(h, rhs, report, pcg_tol, pcg_max_iter)
        if not ok:
            step, status = _direct(h, rhs, report.null_rtol), "fallback"
    elif method in ("sr", "loam"):
        good = vec[:, ~flagged]
        step = good @ (good.T @ _direct(h, rhs, report.null_rtol))
    elif method == "tsvd":
        if not np.array_equal(report.hessian, h):  # a truncated inverse needs this H's own eigenpairs
            current = degeneracy(
                h,
                threshold=report.threshold,
                kappa=report.kappa,
                loam_threshold=report.loam_threshold,
                me_threshold=report.me_threshold,
                null_rtol=report.null_rtol,
            )
            lam, vec = current.eigenvalues_full, current.eigenvectors_full
            flagged = current.me_mask if detector == "me" else current.fcn_mask
        keep = ~flagged & (lam > 1e-9)
        step = vec[:, keep] @ ((vec[:, keep].T @ rhs) / lam[keep])
    else:  # treg
        step = (
            np.linalg.solve(h + gamma * np.eye(6), rhs)
            if flagged.any() and gamma > 0
            else _direct(h, rhs, report.null_rtol)
        )
    return SolveResult(step, method, status, iterations, flagged.copy(), report)
