"""Synthetic registration scenes (DCReg's protocol, research notes §B.7): surfaces sampled at random, source and
target sampled independently (sensor noise σ per point), ground truth the identity, a fixed initial perturbation.

Each scene lists the basis of its degenerate motions (6-vectors ``[ω; v]`` at the identity, body frame), used to
split the final error into its observable and degenerate parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["FULL", "KINDS", "PERTURBATION", "QUICK", "Scene", "SceneSpec", "make_scene"]

KINDS = ("plane", "parallel_planes", "corridor", "noisy_corridor", "cylinder", "shifted_cylinder", "room")
#: the initial guess ``T₀ = Exp(PERTURBATION)`` (3°-ish rotation, 0.3 m translation), the truth being the identity
PERTURBATION = np.array([0.03, -0.04, 0.05, 0.3, -0.2, 0.15])
#: noise σ (metres) of the noisy variants; the others are noise-free
NOISE = 0.01


class SceneSpec(NamedTuple):
    """What a child process needs to rebuild a scene: kind, points per cloud, seed."""

    kind: str
    points: int
    seed: int


@dataclass(frozen=True)
class Scene:
    """Source and target clouds ``[N, 3]`` and the degenerate motions ``[k, 6]`` (orthonormal rows)."""

    spec: SceneSpec
    source: np.ndarray
    target: np.ndarray
    degenerate: np.ndarray


QUICK = tuple(SceneSpec(k, 2000, 0) for k in KINDS)
FULL = tuple(SceneSpec(k, 10000, 0) for k in KINDS)


def _plane(rng: np.random.Generator, n: int, origin: list[float], u: list[float], v: list[float]) -> np.ndarray:
    a, b = rng.uniform(0, 1, (2, n, 1))
    return np.asarray(origin) + a * np.asarray(u) + b * np.asarray(v)


def _split(n: int, weights: list[float]) -> list[int]:
    counts = [int(n * w / sum(weights)) for w in weights]
    counts[0] += n - sum(counts)
    return counts


def _sample(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "plane":
        return _plane(rng, n, [-10, -10, 0], [20, 0, 0], [0, 20, 0])
    if kind == "parallel_planes":
        c = _split(n, [1, 1])
        return np.vstack(
            [
                _plane(rng, c[0], [-10, -10, -1.5], [20, 0, 0], [0, 20, 0]),
                _plane(rng, c[1], [-10, -10, 1.5], [20, 0, 0], [0, 20, 0]),
            ]
        )
    if kind in ("corridor", "noisy_corridor"):
        c = _split(n, [3, 3, 2])
        return np.vstack(
            [
                _plane(rng, c[0], [-10, -1.5, 0], [20, 0, 0], [0, 0, 3]),
                _plane(rng, c[1], [-10, 1.5, 0], [20, 0, 0], [0, 0, 3]),
                _plane(rng, c[2], [-10, -1.5, 0], [20, 0, 0], [0, 3, 0]),
            ]
        )
    if kind in ("cylinder", "shifted_cylinder"):
        shifted = kind == "shifted_cylinder"
        c = _split(n, [97, 3]) if shifted else [n, 0]
        th, z = rng.uniform(0, 2 * np.pi, c[0]), rng.uniform(-8, 8, c[0])
        centre = np.array([1.0, 0.5, 0.0]) if shifted else np.zeros(3)
        wall = centre + np.stack([3 * np.cos(th), 3 * np.sin(th), z], 1)
        # DCReg's shifted cylinder: off the sensor axis, with a few points on an end cap (tz weakly observable)
        r, phi = 3 * np.sqrt(rng.uniform(0, 1, c[1])), rng.uniform(0, 2 * np.pi, c[1])
        cap = centre + np.stack([r * np.cos(phi), r * np.sin(phi), np.full(c[1], 8.0)], 1)
        return np.vstack([wall, cap])
    c = _split(n, [2, 2, 2, 2, 3, 3])  # room [−6, 8] × [−4, 5] × [0, 3]
    return np.vstack(
        [
            _plane(rng, c[0], [-6, -4, 0], [0, 9, 0], [0, 0, 3]),
            _plane(rng, c[1], [8, -4, 0], [0, 9, 0], [0, 0, 3]),
            _plane(rng, c[2], [-6, -4, 0], [14, 0, 0], [0, 0, 3]),
            _plane(rng, c[3], [-6, 5, 0], [14, 0, 0], [0, 0, 3]),
            _plane(rng, c[4], [-6, -4, 0], [14, 0, 0], [0, 9, 0]),
            _plane(rng, c[5], [-6, -4, 3], [14, 0, 0], [0, 9, 0]),
        ]
    )


def _degenerate(kind: str) -> np.ndarray:
    e = np.eye(6)
    if kind in ("plane", "parallel_planes"):
        return e[[2, 3, 4]]
    if kind in ("corridor", "noisy_corridor"):
        return e[[3]]
    if kind == "cylinder":
        return e[[2, 5]]
    if kind == "shifted_cylinder":  # rotation about the axis through c (ω = e_z, v = c × e_z) and tz (weak: cap)
        axis = np.array([0, 0, 1.0, 0.5, -1.0, 0])
        return np.stack([axis / np.linalg.norm(axis), e[5]])
    return np.zeros((0, 6))


def make_scene(spec: SceneSpec) -> Scene:
    """Rebuild the scene ``spec`` (deterministic in its seed)."""
    if spec.kind not in KINDS:
        raise ValueError(f"unknown scene {spec.kind!r}; choose from {', '.join(KINDS)}")
    rng = np.random.default_rng(spec.seed)
    source, target = _sample(spec.kind, spec.points, rng), _sample(spec.kind, spec.points, rng)
    if spec.kind == "noisy_corridor" or spec.kind == "shifted_cylinder":
        source = source + rng.normal(0, NOISE, source.shape)
        target = target + rng.normal(0, NOISE, target.shape)
    return Scene(spec, source, target, _degenerate(spec.kind))
