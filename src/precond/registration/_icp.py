"""Point-to-plane ICP with DCReg's degeneracy handling (or a baseline's), robust kernels, batched over points.

Residual and Jacobian (DCReg, ``DCReg/include/dcreg.hpp``): ``rᵢ = nᵢᵀ(R pᵢ + t) + dᵢ`` against the plane
``(nᵢ, dᵢ)`` of the nearest target point, and for the right perturbation ``R ← R Exp(ω)``, ``t ← t + R v``:
``∂rᵢ/∂ω = (pᵢ × Rᵀnᵢ)ᵀ``, ``∂rᵢ/∂v = (Rᵀnᵢ)ᵀ``: the Hessian is in the body (source) frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from precond.registration._degeneracy import DegeneracyReport
from precond.registration._degeneracy import degeneracy as analyse
from precond.registration._lie import apply_increment
from precond.registration._planes import Planes, estimate_planes
from precond.registration._solve import METHODS, solve
from precond.registration._validate import (
    check_choice,
    check_int,
    check_points,
    check_real,
    check_transform,
)

__all__ = ["DEGENERACY", "KERNELS", "ICPResult", "IterationEntry", "icp", "point_to_plane"]

KERNELS = ("dcreg", "huber", "cauchy", "none")
#: ``degeneracy=`` choices: ``"none"`` is the plain (minimum-norm) Gauss–Newton step, the others as in ``solve``.
DEGENERACY = ("none", *METHODS)
#: DCReg's minimum number of correspondences for a step (``kMinCorrespondences``).
MIN_CORRESPONDENCES = 10


@dataclass(frozen=True)
class IterationEntry:
    """One ICP iteration: correspondences used, their weighted RMS residual, the step's rotation and translation
    norms, PCG iterations, and the solve's status (see :class:`~precond.registration.SolveResult`)."""

    iteration: int
    correspondences: int
    rmse: float
    rotation_step: float
    translation_step: float
    pcg_iterations: int
    status: str


@dataclass(frozen=True)
class ICPResult:
    """The outcome of :func:`icp`.

    Attributes:
        transform: ``[4, 4]`` rigid transform mapping source points into the target frame.
        fitness: share of source points with a correspondence (nearest target point within
            ``max_correspondence_distance`` with a valid plane) at ``transform`` (Open3D's ``fitness``).
        inlier_rmse: RMS point-to-plane distance over those correspondences at ``transform``.
        iterations: Gauss–Newton iterations run.
        converged: the last step (its part named by ``convergence``) was below both tolerances.
        status: ``"converged"``, ``"max_iter"`` or ``"too_few_correspondences"`` (fewer than 10; the transform
            is the last one reached).
        reports: the degeneracy report used at each iteration (with ``analysis="first"``, the first one repeated).
        history: an :class:`IterationEntry` per iteration.
        hessian: the last iteration's ``H`` ``[6, 6]`` (``None`` if no step was taken).
    """

    transform: np.ndarray
    fitness: float
    inlier_rmse: float
    iterations: int
    converged: bool
    status: str
    reports: tuple[DegeneracyReport, ...] = field(repr=False)
    history: tuple[IterationEntry, ...] = field(repr=False)
    hessian: np.ndarray | None = field(repr=False)

    @property
    def first_report(self) -> DegeneracyReport | None:
        """The first iteration's degeneracy report (``None`` if no step was taken)."""
        return self.reports[0] if self.reports else None


def point_to_plane(
    points: np.ndarray, normals: np.ndarray, offsets: np.ndarray, transform: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Residuals ``rᵢ = nᵢᵀ(R pᵢ + t) + dᵢ`` ``[N]`` and their Jacobians ``[N, 6]`` for ``T ← T · Exp([ω; v])``.

    ``points`` are source points ``[N, 3]`` (source frame), ``normals``/``offsets`` the planes ``[N, 3]``/``[N]``
    (target frame) they are matched to, ``transform`` the current ``[4, 4]`` estimate.
    """
    rot, trans = transform[:3, :3], transform[:3, 3]
    residuals = np.einsum("ni,ni->n", normals, points @ rot.T + trans) + offsets
    body = normals @ rot  # Rᵀnᵢ as rows
    return residuals, np.concatenate([np.cross(points, body), body], axis=1)


def _weights(r: np.ndarray, kernel: str, scale: float, derivative: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keep, jw, ew)``: correspondences kept, the Jacobian row weight and the residual weight, so that
    ``H = Σ jw² JᵢᵀJᵢ``-style sums are ``Σ hw JᵢᵀJᵢ`` with ``hw = jw·jw_or_w`` (see :func:`_normal_equations`)."""
    a = np.abs(r)
    if kernel == "dcreg":  # DCReg: eᵢ = wᵢ rᵢ, wᵢ = max(0, 1 − 0.9|rᵢ|), dropped if wᵢ ≤ 0.1
        w = np.maximum(0.0, 1.0 - 0.9 * a)
        keep = w > 0.1
        de = 1.0 - 1.8 * a if derivative else w
        return keep, de, w
    if kernel == "huber":
        w = np.where(a <= scale, 1.0, scale / np.maximum(a, 1e-300))
    elif kernel == "cauchy":
        w = 1.0 / (1.0 + (r / scale) ** 2)
    else:
        w = np.ones_like(r)
    return np.ones(r.shape, dtype=bool), w, w


def _normal_equations(
    jac: np.ndarray, r: np.ndarray, kernel: str, scale: float, derivative: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(H, b, count)``: DCReg's kernel is Gauss–Newton on ``eᵢ = wᵢ rᵢ`` (``H = Σ (∂eᵢ)ᵀ∂eᵢ``, ``b = −Σ ∂eᵢᵀ eᵢ``);
    the M-estimators are IRLS (``H = Σ wᵢ JᵢᵀJᵢ``, ``b = −Σ wᵢ Jᵢᵀ rᵢ``)."""
    keep, jw, w = _weights(r, kernel, scale, derivative)
    jac, r, jw, w = jac[keep], r[keep], jw[keep], w[keep]
    if kernel == "dcreg":
        je = jac * jw[:, None]
        return je.T @ je, -je.T @ (w * r), int(keep.sum())
    jwj = jac * w[:, None]
    return jwj.T @ jac, -jwj.T @ r, int(keep.sum())


def _match(
    tree: cKDTree, planes: Planes, source: np.ndarray, transform: np.ndarray, max_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Source rows with a correspondence and the target index of each."""
    moved = source @ transform[:3, :3].T + transform[:3, 3]
    dist, idx = tree.query(moved, k=1, distance_upper_bound=max_distance)
    found = np.isfinite(dist)
    rows = np.flatnonzero(found)
    idx = idx[found]
    ok = planes.valid[idx]
    return rows[ok], idx[ok]


def _given_planes(target: np.ndarray, normals: object) -> Planes:
    n = check_points(normals, "target_normals")
    if n.shape != target.shape:
        raise ValueError(f"`target_normals` must have the shape of `target` {target.shape}, got {n.shape}")
    norm = np.linalg.norm(n, axis=1)
    if (norm < 1e-12).any():
        raise ValueError(f"`target_normals` has {int((norm < 1e-12).sum())} zero row(s); normals must be nonzero")
    n = n / norm[:, None]
    return Planes(n, -np.einsum("mi,mi->m", n, target), np.ones(len(target), dtype=bool))


def icp(
    source: np.ndarray,
    target: np.ndarray,
    init: np.ndarray | None = None,
    *,
    method: str = "point_to_plane",
    degeneracy: str = "dcreg",
    kernel: str = "dcreg",
    kernel_scale: float = 0.1,
    weight_derivative: bool = True,
    max_correspondence_distance: float = 1.0,
    max_iter: int = 30,
    rotation_tol: float = 1e-5,
    translation_tol: float = 1e-3,
    analysis: str = "every",
    convergence: str = "observable",
    k_neighbors: int = 10,
    plane_offset: str = "point",
    plane_radius: float | None = 1.0,
    max_plane_thickness: float | None = 0.2,
    target_normals: np.ndarray | None = None,
    threshold: float = 10.0,
    kappa: float = 10.0,
    **solve_options: object,
) -> ICPResult:
    """Register ``source`` to ``target`` by point-to-plane Gauss–Newton with degeneracy handling.

    Args:
        source: ``[N, 3]`` points to move (N ≥ 6).
        target: ``[M, 3]`` reference points (M ≥ ``k_neighbors``).
        init: initial ``[4, 4]`` rigid transform source → target (default identity).
        method: ``"point_to_plane"`` (the only one for now).
        degeneracy: ``"dcreg"`` (default), ``"none"`` (plain minimum-norm Gauss–Newton), or a baseline of
            :func:`~precond.registration.solve` (``"direct"``, ``"sr"``, ``"tsvd"``, ``"treg"``, ``"loam"``).
        kernel: ``"dcreg"`` (DCReg's ``w = max(0, 1 − 0.9|r|)``, dropped at ``w ≤ 0.1``), ``"huber"``,
            ``"cauchy"`` (IRLS with ``kernel_scale``, metres) or ``"none"``.
        weight_derivative: with ``kernel="dcreg"``, include ``∂w/∂r`` in the Jacobian (DCReg's default).
        max_correspondence_distance: nearest-neighbour gate in metres.
        max_iter: iteration cap (DCReg: 30).
        rotation_tol, translation_tol: converged when ``‖ω‖ < rotation_tol`` and ``‖v‖ < translation_tol``
            (DCReg: 1e-5 rad, 1e-3 m) for the step's part that :data:`convergence` names.
        convergence: ``"observable"`` (default): test the step without its components along the iteration's weak
            modes (:meth:`~precond.registration.DegeneracyReport.observable_part`; the whole step where nothing is
            weak). Along a weak direction the data barely pin the pose, so the step there is noise that never
            settles (a noisy corridor keeps sliding a few mm per iteration): waiting for it costs iterations and
            drifts. ``"full"``: test the whole step (DCReg's C++).
        analysis: ``"every"`` iteration (DCReg's runner) or ``"first"`` only (its SLAM advice, LOAM's scheme): the
            report (and so the detection and projector) of the first iteration is reused.
        k_neighbors, plane_radius, max_plane_thickness: plane fitting on the target (default 10; DCReg: 5, 1 m, 0.2 m;
            ``None`` disables a check); ignored when ``target_normals`` are given.
        plane_offset: ``"point"`` (default; Open3D's and small_gicp's residual ``nᵢᵀ(T p − qᵢ)``, the plane through
            the matched target point) or ``"fit"`` (DCReg: the neighbourhood's least-squares plane, biased at edges;
            see :func:`~precond.registration._planes.estimate_planes`).
        target_normals: ``[M, 3]`` normals of the target points (planes through the points) instead of fitting.
        threshold, kappa: DCReg's detection threshold and clamp target (10, 10).
        **solve_options: passed to :func:`~precond.registration.solve` (``detector``, ``pcg_tol``,
            ``pcg_max_iter``, ``gamma``) and :func:`~precond.registration.degeneracy` (``loam_threshold``,
            ``me_threshold``, ``null_rtol``).

    Returns:
        An :class:`ICPResult`.
    """
    src = check_points(source, "source", minimum=6)
    check_choice(method, "method", ("point_to_plane",))
    check_choice(degeneracy, "degeneracy", DEGENERACY)
    check_choice(kernel, "kernel", KERNELS)
    check_choice(analysis, "analysis", ("every", "first"))
    check_choice(convergence, "convergence", ("observable", "full"))
    check_choice(plane_offset, "plane_offset", ("point", "fit"))
    k_neighbors = check_int(k_neighbors, "k_neighbors", 3)
    tgt = check_points(target, "target", minimum=k_neighbors if target_normals is None else 1)
    transform = np.eye(4) if init is None else check_transform(init, "init")
    kernel_scale = check_real(kernel_scale, "kernel_scale", minimum=0.0, strict=True)
    max_distance = check_real(max_correspondence_distance, "max_correspondence_distance", minimum=0.0, strict=True)
    max_iter = check_int(max_iter, "max_iter", 1)
    rotation_tol = check_real(rotation_tol, "rotation_tol", minimum=0.0)
    translation_tol = check_real(translation_tol, "translation_tol", minimum=0.0)
    if plane_radius is not None:
        plane_radius = check_real(plane_radius, "plane_radius", minimum=0.0, strict=True)
    if max_plane_thickness is not None:
        max_plane_thickness = check_real(max_plane_thickness, "max_plane_thickness", minimum=0.0, strict=True)
    analysis_keys = ("loam_threshold", "me_threshold", "null_rtol")
    unknown = set(solve_options) - {"detector", "pcg_tol", "pcg_max_iter", "gamma", *analysis_keys}
    if unknown:
        raise TypeError(f"icp() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    tree = cKDTree(tgt)
    if target_normals is None:
        planes = estimate_planes(
            tgt, tree, k=k_neighbors, radius=plane_radius, max_thickness=max_plane_thickness, offset=plane_offset
        )
    else:
        planes = _given_planes(tgt, target_normals)
    solve_method = "direct" if degeneracy == "none" else degeneracy
    thresholds = {k: solve_options.pop(k) for k in analysis_keys if k in solve_options}
    reports: list[DegeneracyReport] = []
    history: list[IterationEntry] = []
    hessian: np.ndarray | None = None
    status, converged = "max_iter", False
    for it in range(max_iter):
        rows, idx = _match(tree, planes, src, transform, max_distance)
        r, jac = point_to_plane(src[rows], planes.normals[idx], planes.offsets[idx], transform)
        h, b, count = _normal_equations(jac, r, kernel, kernel_scale, weight_derivative)
        if count < MIN_CORRESPONDENCES:
            status = "too_few_correspondences"
            break
        hessian = h
        if analysis == "every" or not reports:
            report = analyse(h, threshold=threshold, kappa=kappa, **thresholds)  # type: ignore[arg-type]
        else:
            report = reports[0]
        reports.append(report)
        res = solve(h, b, method=solve_method, report=report, **solve_options)  # type: ignore[arg-type]
        step = res.step
        transform = apply_increment(transform, step)
        rot_step, trans_step = float(np.linalg.norm(step[:3])), float(np.linalg.norm(step[3:]))
        tested = report.observable_part(step) if convergence == "observable" else step
        rmse = float(np.sqrt(np.mean(r**2)))
        history.append(IterationEntry(it + 1, count, rmse, rot_step, trans_step, res.iterations, res.status))
        if np.linalg.norm(tested[:3]) < rotation_tol and np.linalg.norm(tested[3:]) < translation_tol:
            status, converged = "converged", True
            break
    rows, idx = _match(tree, planes, src, transform, max_distance)
    r, _ = point_to_plane(src[rows], planes.normals[idx], planes.offsets[idx], transform)
    return ICPResult(
        transform=transform,
        fitness=len(rows) / len(src),
        inlier_rmse=float(np.sqrt(np.mean(r**2))) if len(r) else float("nan"),
        iterations=len(history),
        converged=converged,
        status=status,
        reports=tuple(reports),
        history=tuple(history),
        hessian=hessian,
    )
