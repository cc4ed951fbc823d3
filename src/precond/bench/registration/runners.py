"""One runner per method, run inside the benchmark's child process: rebuild the scene, start the clock, register.

Timed: everything from the raw clouds to the transform (k-d tree, normals or covariances, iterations), single
threaded, for every library alike. Settings: 30 iterations at most, correspondences within 1 m, ours with
``k_neighbors=10`` and DCReg's kernel; Open3D with 10-neighbour normals; small_gicp without downsampling.
Stopping rule: ours and ``small_gicp gicp`` stop when the rotation step is below :data:`ROTATION_TOL` and the
translation step below :data:`TRANSLATION_TOL` (DCReg's 1e-5 rad and 1e-3 m; ours tests the step's observable part,
its default); ``small_gicp gicp 0.1deg`` is small_gicp at its own default rotation tolerance, 0.1° = 1.7e-3 rad
(looser: fewer iterations, for reference); Open3D has only relative-fitness/RMSE criteria (1e-6 here).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from precond.bench.registration.scenes import PERTURBATION, SceneSpec, make_scene

__all__ = ["METHODS", "PEERS", "available_methods", "register"]

OURS = tuple(f"precond {m}" for m in ("dcreg", "none", "sr", "tsvd", "treg", "loam"))
PEERS = ("open3d point_to_plane", "open3d gicp", "small_gicp gicp", "small_gicp gicp 0.1deg")
METHODS = OURS + PEERS
MAX_ITER = 30
MAX_DISTANCE = 1.0
#: the stopping rule shared by ours and small_gicp (DCReg's tolerances): rotation step (rad), translation step (m)
ROTATION_TOL, TRANSLATION_TOL = 1e-5, 1e-3
#: small_gicp's own default rotation tolerance (0.1°), for its reference row
SMALL_GICP_DEFAULT_ROTATION_TOL = 0.1 * 3.141592653589793 / 180
_MODULE = {"open3d": "open3d", "small_gicp": "small_gicp"}


def _import_error(module: str) -> str | None:
    """Why ``module`` does not import here (``None`` if it does), probed in a fresh interpreter so that a missing
    system library (``open3d-cpu`` needs libusb-1.0-0) or a crash in its import cannot take the benchmark down."""
    if importlib.util.find_spec(module) is None:
        return "not installed"
    probe = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120, check=False
    )
    if probe.returncode == 0:
        return None
    lines = [ln for ln in probe.stderr.strip().splitlines() if ln.strip()]
    return f"does not import ({lines[-1] if lines else f'exit status {probe.returncode}'})"


def available_methods(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The subset of ``names`` that can run here and a note for each skipped one (a peer that is not installed
    or does not import: see ``requirements/peers.txt``)."""
    keep, notes = [], []
    reasons: dict[str, str | None] = {}
    for name in names:
        lib = name.split()[0]
        if lib in _MODULE and lib not in reasons:
            reasons[lib] = _import_error(_MODULE[lib])
        why = reasons.get(lib)
        if why is not None:
            notes.append(
                f"skipping {name}: {lib} {why}; install the peers with `pip install -r requirements/peers.txt`"
                + (" and `apt-get install libusb-1.0-0`" if lib == "open3d" else "")
            )
        else:
            keep.append(name)
    return keep, notes


def _ours(method: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]:
    from precond.registration import icp

    def run(source: np.ndarray, target: np.ndarray, init: np.ndarray) -> dict[str, Any]:
        res = icp(
            source,
            target,
            init,
            degeneracy=method,
            max_iter=MAX_ITER,
            max_correspondence_distance=MAX_DISTANCE,
            k_neighbors=10,
            rotation_tol=ROTATION_TOL,
            translation_tol=TRANSLATION_TOL,
        )
        rep = res.first_report
        return {
            "transform": res.transform,
            "iterations": res.iterations,
            "converged": res.converged,
            "mask": rep.as_dict()["mask"] if rep is not None else None,
            "report": rep.as_dict() if rep is not None else None,
        }

    return run


def _open3d(kind: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]:
    import open3d as o3d

    reg = o3d.pipelines.registration
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)

    def run(source: np.ndarray, target: np.ndarray, init: np.ndarray) -> dict[str, Any]:
        src, tgt = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
        src.points, tgt.points = o3d.utility.Vector3dVector(source), o3d.utility.Vector3dVector(target)
        criteria = reg.ICPConvergenceCriteria(relative_fitness=1e-6, relative_rmse=1e-6, max_iteration=MAX_ITER)
        if kind == "gicp":
            out = reg.registration_generalized_icp(
                src, tgt, MAX_DISTANCE, init, reg.TransformationEstimationForGeneralizedICP(), criteria
            )
        else:
            tgt.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(10))
            out = reg.registration_icp(
                src, tgt, MAX_DISTANCE, init, reg.TransformationEstimationPointToPlane(), criteria
            )
        return {"transform": np.asarray(out.transformation), "iterations": None, "converged": None, "mask": None}

    return run


def _small_gicp(rotation_tol: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]:
    import small_gicp

    def run(source: np.ndarray, target: np.ndarray, init: np.ndarray) -> dict[str, Any]:
        out = small_gicp.align(
            target,
            source,
            init,
            registration_type="GICP",
            downsampling_resolution=1e-3,
            max_correspondence_distance=MAX_DISTANCE,
            num_threads=1,
            max_iterations=MAX_ITER,
            rotation_epsilon=rotation_tol,
            translation_epsilon=TRANSLATION_TOL,
        )
        return {
            "transform": np.asarray(out.T_target_source),
            "iterations": int(out.iterations),
            "converged": bool(out.converged),
            "mask": None,
        }

    return run


def _runner(name: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]:
    if name in OURS:
        return _ours(name.split()[1])
    if name == "open3d point_to_plane":
        return _open3d("point_to_plane")
    if name == "open3d gicp":
        return _open3d("gicp")
    if name == "small_gicp gicp":
        return _small_gicp(ROTATION_TOL)
    if name == "small_gicp gicp 0.1deg":
        return _small_gicp(SMALL_GICP_DEFAULT_ROTATION_TOL)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def register(name: str, spec: tuple, *, started: Callable[[], None]) -> dict[str, Any]:
    """The child's job: build scene ``spec`` and the runner (untimed), then time one registration."""
    from precond.registration import apply_increment

    scene = make_scene(SceneSpec(*spec))
    run = _runner(name)
    init = apply_increment(np.eye(4), PERTURBATION)
    started()
    t0 = time.perf_counter()
    out = run(scene.source, scene.target, init)
    out["seconds"] = time.perf_counter() - t0
    out["transform"] = np.asarray(out["transform"]).tolist()
    return out
