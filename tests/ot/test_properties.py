"""Hypothesis property tests of precond.ot.sinkhorn: permutation invariance, symmetry, mass conservation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from precond.ot import sinkhorn

METHOD = st.sampled_from(["sinkhorn", "sinkhorn_log", "sns"])
REG = st.sampled_from([0.1, 0.3, 1.0])


@st.composite
def problems(draw: st.DrawFn, square: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 9))
    m = n if square else draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    a = rng.random(n) + 0.05
    b = rng.random(m) + 0.05
    return a / a.sum(), b / b.sum(), rng.random((n, m))


@settings(max_examples=25, deadline=None)
@given(problems(), REG, METHOD)
def test_permutation_invariance(prob: tuple, reg: float, method: str) -> None:
    a, b, M = prob
    p = np.random.default_rng(len(a)).permutation(len(a))
    q = np.random.default_rng(len(b) + 1).permutation(len(b))
    res = sinkhorn(a, b, M, reg, method=method, tol=1e-10, max_iter=20_000)
    perm = sinkhorn(a[p], b[q], M[np.ix_(p, q)], reg, method=method, tol=1e-10, max_iter=20_000)
    assert res.converged and perm.converged
    torch.testing.assert_close(perm.plan, res.plan[p][:, q], atol=1e-9, rtol=0)
    assert perm.cost == pytest.approx(res.cost, abs=1e-10)


@settings(max_examples=25, deadline=None)
@given(problems(square=True), REG, METHOD)
def test_symmetric_cost_gives_symmetric_plan(prob: tuple, reg: float, method: str) -> None:
    a, _, M = prob
    M = (M + M.T) / 2
    res = sinkhorn(a, a, M, reg, method=method, tol=1e-10, max_iter=20_000)
    assert res.converged
    torch.testing.assert_close(res.plan, res.plan.T, atol=1e-9, rtol=0)


@settings(max_examples=25, deadline=None)
@given(problems(), REG, METHOD, st.floats(0.1, 10.0))
def test_mass_conservation(prob: tuple, reg: float, method: str, mass: float) -> None:
    a, b, M = prob
    res = sinkhorn(mass * a, mass * b, M, reg, method=method, tol=1e-10 * mass, max_iter=20_000)
    assert res.converged
    assert bool((res.plan >= 0).all())
    assert float(res.plan.sum()) == pytest.approx(mass, rel=1e-9)
    np.testing.assert_allclose(res.plan.sum(1).numpy(), mass * a, atol=2e-10 * mass)
    np.testing.assert_allclose(res.plan.sum(0).numpy(), mass * b, atol=2e-10 * mass)
