"""DCReg's degeneracy analysis of a 6×6 point-to-plane Gauss–Newton Hessian (Hu et al., arXiv 2509.06285, §IV).

Module 1 (detection): Schur complements ``S_R = H_RR − H_Rt H_tt⁺ H_tR`` (rotation information after the translation
has absorbed what it can) and ``S_t = H_tt − H_tR H_RR⁺ H_Rt``, their eigen-decompositions and condition numbers.
Module 2 (characterization): each subspace's eigenvectors are assigned to the physical axes x, y, z, with the
per-axis contribution ratios ``Ṽ ∘ Ṽ``. Module 3 (mitigation, the preconditioner): an axis is weak when
``λ_max / λ_axis > threshold`` inside its subspace; its eigenvalue is clamped to ``λ_max / κ`` in
``P = blkdiag(Ṽ_R Λ̂_R⁻¹ Ṽ_Rᵀ, Ṽ_t Λ̂_t⁻¹ Ṽ_tᵀ)``.

Differences from the C++ (``DCReg/include/dcreg.hpp``): the Schur complements use pseudo-inverses, so an exactly
singular block (a noise-free corridor has no normal with an x component: ``H_tt`` is singular) flags exactly the
unobservable axes instead of all six; the axis assignment is the best of the 6 permutations (``"optimal"``) rather
than DCReg's greedy x-then-y-then-z pass (``assignment="greedy"`` reproduces it); an assigned mode whose own axis
holds under half of it is reported ``ambiguous``.

Frame: ``H`` is in the body (source) frame of the right perturbation ``T ← T · Exp([ω; v])`` (see
:func:`precond.registration.point_to_plane`), so the report does not change when the target (world) frame moves
rigidly, and the masks permute with the axes when the scene is rotated in the sensor frame.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from precond.registration._validate import check_choice, check_hessian, check_real

__all__ = ["AXES", "NULL_RTOL", "DegeneracyReport", "degeneracy"]

#: The state order of the Hessian, the masks and the increments: rotation then translation (DCReg's, Open3D's).
AXES = ("rx", "ry", "rz", "tx", "ty", "tz")
#: Eigenvalues at or below ``NULL_RTOL · λ_max(H)`` count as zero (the numerical null space of a float64 6×6 JᵀJ).
NULL_RTOL = 1e-9
#: DCReg's floors: ``λ_axis`` in the ratio test, and the clamped eigenvalue in the preconditioner.
_RATIO_FLOOR = 1e-12
_CLAMP_FLOOR = 1e-9
_PERMUTATIONS = np.array(list(itertools.permutations(range(3))))


@dataclass(frozen=True)
class DegeneracyReport:
    """Everything :func:`degeneracy` found; arrays are float64 NumPy, masks bool, axes in :data:`AXES` order.

    Attributes:
        hessian: the analysed (symmetrized) ``H`` ``[6, 6]``.
        schur_rot, schur_trans: ``S_R``, ``S_t`` ``[3, 3]``.
        eigenvalues_rot, eigenvalues_trans: ``[3]``; entry ``a`` is the eigenvalue of the mode assigned to axis
            ``a`` (x, y, z), not sorted.
        eigenvectors_rot, eigenvectors_trans: ``[3, 3]``; column ``a`` is the unit mode assigned to axis ``a``,
            signed so that its ``a`` component is ≥ 0.
        contribution_rot, contribution_trans: ``[3, 3]`` squared eigenvector entries: ``[i, a]`` is the share of
            physical axis ``i`` in the mode assigned to axis ``a`` (each column sums to 1).
        ambiguous: ``[6]`` the assigned mode holds less than half of its own axis (a diagonal weak mode: read
            the contribution ratios, not the label).
        cond_full: ``λ_max(H) / λ_min(H)`` (``inf`` when ``H`` is singular).
        cond_rot, cond_trans: ``λ_max / λ_min`` of ``S_R``, ``S_t`` (``inf`` when singular).
        mask: ``[6]`` weak axes, DCReg's test ``λ_max / λ_axis > threshold`` within each subspace (or unobservable).
        unobservable: ``[6]`` axes whose assigned eigenvalue is numerically zero (``≤ null_rtol · λ_max(H)``):
            motions the data do not see at all.
        rank: numerical rank of ``H``.
        clamped_rot, clamped_trans: ``[3]`` the eigenvalues used in the preconditioner (weak ones raised to
            ``λ_max / κ``).
        eigenvalues_full: ``[6]`` ascending eigenvalues of ``H``; eigenvectors_full ``[6, 6]`` their columns.
        loam_factor: LOAM's degeneracy factor ``λ_min(H)`` (Zhang, Kaess & Singh, ICRA 2016).
        loam_mask: ``[6]`` over ``eigenvalues_full``: LOAM's test, ``λ_i < loam_threshold`` counted up from the
            smallest and stopping at the first that passes.
        me_mask: ``[6]`` over ``eigenvalues_full``: minimum-eigenvalue test ``λ_i < me_threshold``.
        fcn_mask: ``[6]`` over ``eigenvalues_full``: full-condition test, ``cond_full > threshold`` and
            ``λ_max / λ_i > threshold``.
        threshold, kappa, loam_threshold, me_threshold, null_rtol: the parameters used.
    """

    hessian: np.ndarray = field(repr=False)
    schur_rot: np.ndarray = field(repr=False)
    schur_trans: np.ndarray = field(repr=False)
    eigenvalues_rot: np.ndarray
    eigenvalues_trans: np.ndarray
    eigenvectors_rot: np.ndarray = field(repr=False)
    eigenvectors_trans: np.ndarray = field(repr=False)
    contribution_rot: np.ndarray = field(repr=False)
    contribution_trans: np.ndarray = field(repr=False)
    ambiguous: np.ndarray
    cond_full: float
    cond_rot: float
    cond_trans: float
    mask: np.ndarray
    unobservable: np.ndarray
    rank: int
    clamped_rot: np.ndarray = field(repr=False)
    clamped_trans: np.ndarray = field(repr=False)
    eigenvalues_full: np.ndarray = field(repr=False)
    eigenvectors_full: np.ndarray = field(repr=False)
    loam_factor: float
    loam_mask: np.ndarray = field(repr=False)
    me_mask: np.ndarray = field(repr=False)
    fcn_mask: np.ndarray = field(repr=False)
    threshold: float = 10.0
    kappa: float = 10.0
    loam_threshold: float = 100.0
    me_threshold: float = 120.0
    null_rtol: float = NULL_RTOL

    @property
    def degenerate(self) -> bool:
        """Some axis is weak (DCReg's test)."""
        return bool(self.mask.any())

    @property
    def weak_axes(self) -> tuple[str, ...]:
        """Names (:data:`AXES`) of the weak axes."""
        return tuple(a for a, m in zip(AXES, self.mask, strict=True) if m)

    def observable_part(self, step: np.ndarray) -> np.ndarray:
        """``step`` ``[6]`` ([ω; v]) without its components along the weak modes: in each subspace the step minus its
        projection on the eigenvectors of the weak axes (``Ṽ_w Ṽ_wᵀ``); the step itself when nothing is weak."""
        out = np.array(step, dtype=np.float64, copy=True)
        for s, vec in enumerate((self.eigenvectors_rot, self.eigenvectors_trans)):
            weak = vec[:, self.mask[3 * s : 3 * s + 3]]
            if weak.size:
                part = out[3 * s : 3 * s + 3]
                part -= weak @ (weak.T @ part)
        return out

    def preconditioner(self) -> np.ndarray:
        """DCReg's block preconditioner ``P ≈ H⁻¹`` ``[6, 6]`` (cross terms dropped, weak eigenvalues clamped)."""
        p = np.zeros((6, 6))
        for s, (vec, lam) in enumerate(
            ((self.eigenvectors_rot, self.clamped_rot), (self.eigenvectors_trans, self.clamped_trans))
        ):
            p[3 * s : 3 * s + 3, 3 * s : 3 * s + 3] = (vec / np.maximum(lam, _CLAMP_FLOOR)) @ vec.T
        return p

    def as_dict(self) -> dict[str, object]:
        """The scalar summary (for JSON records): masks as 0/1 strings in :data:`AXES` order, conditions, rank."""

        def bits(m: np.ndarray) -> str:
            return "".join("1" if x else "0" for x in m)

        return {
            "mask": bits(self.mask),
            "unobservable": bits(self.unobservable),
            "weak_axes": list(self.weak_axes),
            "cond_full": self.cond_full,
            "cond_rot": self.cond_rot,
            "cond_trans": self.cond_trans,
            "rank": self.rank,
            "loam_factor": self.loam_factor,
            "loam_count": int(self.loam_mask.sum()),
            "me_count": int(self.me_mask.sum()),
            "fcn_count": int(self.fcn_mask.sum()),
        }


def _pinv_psd(a: np.ndarray, cutoff: float) -> np.ndarray:
    """Pseudo-inverse of a symmetric PSD matrix, eigenvalues ``≤ cutoff`` treated as zero."""
    lam, vec = np.linalg.eigh(a)
    inv = np.where(lam > cutoff, 1.0 / np.where(lam > cutoff, lam, 1.0), 0.0)
    return (vec * inv) @ vec.T


def _assign(vec: np.ndarray, how: str) -> np.ndarray:
    """Column order ``perm`` with mode ``perm[a]`` assigned to axis ``a``."""
    sq = vec**2
    if how == "greedy":  # DCReg: x, then y, then z, each taking its best unused mode
        perm: list[int] = []
        for a in range(3):
            scores = [sq[a, j] if j not in perm else -1.0 for j in range(3)]
            perm.append(int(np.argmax(scores)))
        return np.array(perm)
    totals = sq[np.arange(3), _PERMUTATIONS].sum(axis=1)  # [6]: Σ_a (e_aᵀ v_perm[a])²
    return _PERMUTATIONS[int(np.argmax(totals))]


def _subspace(
    s: np.ndarray, zero: float, threshold: float, kappa: float, how: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Aligned eigenpairs, weak and null masks, clamped eigenvalues and condition number of one 3×3 block."""
    lam, vec = np.linalg.eigh(0.5 * (s + s.T))
    lam = np.where(lam > zero, lam, 0.0)  # the rank-revealing cut: rounding noise below `zero` is no information
    perm = _assign(vec, how)
    lam, vec = lam[perm], vec[:, perm]
    signs = np.where(np.diagonal(vec) < 0, -1.0, 1.0)
    vec = vec * signs
    top = float(lam.max())
    null = lam <= 0.0
    weak = null | (top / np.maximum(lam, _RATIO_FLOOR) > threshold)
    clamped = np.where(weak, max(top / kappa, _CLAMP_FLOOR), lam)
    cond = float("inf") if null.any() else top / float(lam.min())
    return lam, vec, weak, null, clamped, cond


def degeneracy(
    H: np.ndarray,
    *,
    threshold: float = 10.0,
    kappa: float = 10.0,
    assignment: str = "optimal",
    loam_threshold: float = 100.0,
    me_threshold: float = 120.0,
    null_rtol: float = NULL_RTOL,
) -> DegeneracyReport:
    """DCReg's degeneracy report of a point-to-plane Gauss–Newton Hessian (see the module docstring).

    Args:
        H: ``[6, 6]`` symmetric PSD Hessian ``Σ JᵢᵀJᵢ`` in ``[rx, ry, rz, tx, ty, tz]`` order.
        threshold: per-subspace ratio ``λ_max / λ_axis`` above which an axis is weak (DCReg's
            ``degeneracy_condition_threshold`` = 10); also FCN's threshold.
        kappa: target condition number of the clamped preconditioner (DCReg's ``kappa_target`` = 10).
        assignment: ``"optimal"`` (the best of the 6 eigenvector-to-axis permutations) or ``"greedy"`` (DCReg).
        loam_threshold: LOAM's absolute eigenvalue threshold (100; unit- and point-count-dependent).
        me_threshold: the minimum-eigenvalue (ME) baseline's absolute threshold (DCReg's baseline: 120).
        null_rtol: eigenvalues ``≤ null_rtol · λ_max(H)`` are zero (unobservable; the solves take no step along
            them). The default :data:`NULL_RTOL` is float64 rounding; a larger value (e.g. ``1e-4``) also freezes
            near-symmetries such as a sampled cylinder's rotation about its axis.

    Returns:
        A :class:`DegeneracyReport`.
    """
    h = check_hessian(H)
    threshold = check_real(threshold, "threshold", minimum=1.0, strict=True)
    kappa = check_real(kappa, "kappa", minimum=1.0)
    check_choice(assignment, "assignment", ("optimal", "greedy"))
    loam_threshold = check_real(loam_threshold, "loam_threshold", minimum=0.0)
    me_threshold = check_real(me_threshold, "me_threshold", minimum=0.0)
    null_rtol = check_real(null_rtol, "null_rtol", minimum=0.0)
    if null_rtol >= 1.0:
        raise ValueError(f"`null_rtol` must be < 1 (a relative eigenvalue cutoff), got {null_rtol!r}")
    lam_full, vec_full = np.linalg.eigh(h)
    top = max(float(lam_full[-1]), 0.0)
    zero = null_rtol * top
    lam_full = np.where(lam_full > zero, lam_full, 0.0)
    rank = int((lam_full > 0).sum())
    hrr, hrt, htt = h[:3, :3], h[:3, 3:], h[3:, 3:]
    s_rot = hrr - hrt @ _pinv_psd(htt, null_rtol * max(float(np.linalg.eigvalsh(htt)[-1]), 0.0)) @ hrt.T
    s_trans = htt - hrt.T @ _pinv_psd(hrr, null_rtol * max(float(np.linalg.eigvalsh(hrr)[-1]), 0.0)) @ hrt
    rot = _subspace(s_rot, zero, threshold, kappa, assignment)
    trans = _subspace(s_trans, zero, threshold, kappa, assignment)
    lam_rot, vec_rot, weak_rot, null_rot, clamp_rot, cond_rot = rot
    lam_trans, vec_trans, weak_trans, null_trans, clamp_trans, cond_trans = trans
    contribution_rot, contribution_trans = vec_rot**2, vec_trans**2
    ambiguous = np.concatenate([np.diagonal(contribution_rot), np.diagonal(contribution_trans)]) < 0.5
    floored = np.maximum(lam_full, _RATIO_FLOOR)
    loam_mask = np.zeros(6, dtype=bool)
    below = lam_full < loam_threshold
    loam_mask[: int(np.argmin(below)) if not below.all() else 6] = True
    cond_full = float("inf") if lam_full[0] <= 0 else top / float(lam_full[0])
    return DegeneracyReport(
        hessian=h,
        schur_rot=s_rot,
        schur_trans=s_trans,
        eigenvalues_rot=lam_rot,
        eigenvalues_trans=lam_trans,
        eigenvectors_rot=vec_rot,
        eigenvectors_trans=vec_trans,
        contribution_rot=contribution_rot,
        contribution_trans=contribution_trans,
        ambiguous=ambiguous,
        cond_full=cond_full,
        cond_rot=cond_rot,
        cond_trans=cond_trans,
        mask=np.concatenate([weak_rot, weak_trans]),
        unobservable=np.concatenate([null_rot, null_trans]),
        rank=rank,
        clamped_rot=clamp_rot,
        clamped_trans=clamp_trans,
        eigenvalues_full=lam_full,
        eigenvectors_full=vec_full,
        loam_factor=float(lam_full[0]),
        loam_mask=loam_mask,
        me_mask=lam_full < me_threshold,
        fcn_mask=(cond_full > threshold) & (top / floored > threshold),
        threshold=threshold,
        kappa=kappa,
        loam_threshold=loam_threshold,
        me_threshold=me_threshold,
        null_rtol=null_rtol,
    )
