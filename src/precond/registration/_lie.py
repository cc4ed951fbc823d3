"""SO(3) exponential and logarithm (Rodrigues), batched, and the pose update ``T ← T · Exp([ω; v])``.

The pose update is DCReg's "SO3 + R³" right perturbation: ``R ← R Exp(ω)``, ``t ← t + R v`` (translation increment
in the body frame), so the increment ``[ω; v]`` and the Hessian are expressed in the source (sensor) frame.
"""

from __future__ import annotations

import numpy as np


def hat(w: np.ndarray) -> np.ndarray:
    """Skew matrices ``[w]ₓ`` (``[w]ₓ u = w × u``) of ``w`` ``[..., 3]``, shape ``[..., 3, 3]``."""
    out = np.zeros((*w.shape[:-1], 3, 3))
    out[..., 0, 1], out[..., 0, 2] = -w[..., 2], w[..., 1]
    out[..., 1, 0], out[..., 1, 2] = w[..., 2], -w[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -w[..., 1], w[..., 0]
    return out


def so3_exp(w: np.ndarray) -> np.ndarray:
    """Rotation ``Exp(w) = I + sinθ/θ [w]ₓ + (1 − cosθ)/θ² [w]ₓ²`` (θ = ‖w‖), Taylor series near θ = 0."""
    w = np.asarray(w, dtype=np.float64)
    theta = np.linalg.norm(w, axis=-1)[..., None, None]
    k = hat(w)
    small = theta < 1e-6
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + a * k + b * (k @ k)


def so3_log(r: np.ndarray) -> np.ndarray:
    """Rotation vector ``w`` with ``Exp(w) = r`` (``‖w‖ ≤ π``), stable near 0 and π."""
    r = np.asarray(r, dtype=np.float64)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    vee = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    small = theta < 1e-6
    near_pi = theta > np.pi - 1e-4
    safe = np.where(small | near_pi, 1.0, theta)
    scale = np.where(small, 0.5 + theta**2 / 12.0, safe / (2.0 * np.sin(safe)))
    w = scale[..., None] * vee
    if np.any(near_pi):  # (R + Rᵀ)/2 − cosθ I = (1 − cosθ) a aᵀ: its largest column gives
        # the axis a, the skew part (2 sinθ a) its sign
        sym = (r + np.swapaxes(r, -1, -2)) / 2.0 + np.eye(3) * (0.0 - cos[..., None, None])
        i = np.argmax(np.diagonal(sym, axis1=-2, axis2=-1), axis=-1)
        col = np.take_along_axis(sym, i[..., None, None].repeat(3, -1), -2)[..., 0, :]
        axis = col / np.linalg.norm(col, axis=-1, keepdims=True)
        axis = np.where((np.sum(axis * vee, -1) < 0)[..., None], -axis, axis)
        w = np.where(near_pi[..., None], theta[..., None] * axis, w)
    return w


def apply_increment(transform: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """``T · Exp([ω; v])`` in the SO3 + R³ sense: ``R ← R Exp(ω)``, ``t ← t + R v``."""
    out = transform.copy()
    rot = transform[:3, :3]
    out[:3, :3] = rot @ so3_exp(xi[:3])
    out[:3, 3] = transform[:3, 3] + rot @ xi[3:]
    return out


def pose_error(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``[ω; v]`` with ``truth = estimate · (Exp(ω), v)`` in the SO3 + R³ sense (body frame of ``estimate``)."""
    r_est = estimate[:3, :3]
    w = so3_log(r_est.T @ truth[:3, :3])
    v = r_est.T @ (truth[:3, 3] - estimate[:3, 3])
    return np.concatenate([w, v])
