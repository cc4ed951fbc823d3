"""Shared fixtures and problem generators of the precond.completion tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """The problems are small: intra-op threads only add contention on a shared box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def low_rank(m: int, n: int, k: int, seed: int) -> np.ndarray:
    """A random incoherent rank-``k`` matrix ``A Bᵀ`` (Gaussian factors), scaled to unit RMS."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((m, k)) @ rng.standard_normal((n, k)).T
    return M / np.sqrt(np.mean(M**2))


def sample(m: int, n: int, count: int, seed: int, min_per_line: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct entries drawn uniformly; asserts every row and column has ``min_per_line`` of them."""
    rng = np.random.default_rng(seed + 1000)
    flat = rng.choice(m * n, size=count, replace=False)
    rows, cols = flat // n, flat % n
    assert np.bincount(rows, minlength=m).min() >= min_per_line
    assert np.bincount(cols, minlength=n).min() >= min_per_line
    return rows.astype(np.int64), cols.astype(np.int64)


def n_samples(m: int, n: int, k: int, c: float = 1.0) -> int:
    """``c · max(m, n) · k · log(max(m, n))`` samples, the O(n k log n) regime."""
    size = max(m, n)
    return min(m * n, math.ceil(c * size * k * math.log(size)))
