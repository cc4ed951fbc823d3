"""Degeneracy-aware point-to-plane registration: DCReg (Hu et al., "DCReg: Decoupled Characterization for
Efficient Degenerate LiDAR Registration", arXiv 2509.06285) and its baselines (ME/FCN × SR/TSVD/TReg, LOAM).

>>> from precond.registration import degeneracy, icp, solve
>>> res = icp(source, target, init, degeneracy="dcreg")                # doctest: +SKIP
>>> res.transform, res.first_report.weak_axes, res.first_report.contribution_trans   # doctest: +SKIP
>>> step = solve(H, b, method="dcreg").step                           # doctest: +SKIP

Conventions: state ``[rx, ry, rz, tx, ty, tz]`` (rotation first), right perturbation ``T ← T · Exp([ω; v])`` with
``R ← R Exp(ω)``, ``t ← t + R v``: Hessians, masks and steps are in the source (body) frame. NumPy + SciPy
(``cKDTree``); the PCG is :func:`precond.linalg.pcg`.
"""

from precond.registration._degeneracy import AXES, NULL_RTOL, DegeneracyReport, degeneracy
from precond.registration._icp import DEGENERACY, KERNELS, ICPResult, IterationEntry, icp, point_to_plane
from precond.registration._lie import apply_increment, pose_error, so3_exp, so3_log
from precond.registration._solve import METHODS, SolveResult, solve

__all__ = [
    "AXES",
    "DEGENERACY",
    "KERNELS",
    "METHODS",
    "NULL_RTOL",
    "DegeneracyReport",
    "ICPResult",
    "IterationEntry",
    "SolveResult",
    "apply_increment",
    "degeneracy",
    "icp",
    "point_to_plane",
    "pose_error",
    "so3_exp",
    "so3_log",
    "solve",
]
