"""Differentiable ``sinkhorn2``: gradients against central finite differences (float64) and POT's torch backend."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import ot
import pytest
import torch

from precond.ot import METHODS, pot, sinkhorn2

OBJECTIVES = ("linear", "entropic")


def _problem(n: int = 6, m: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    M = ot.dist(rng.normal(size=(n, 2)), rng.normal(size=(m, 2)))
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), M / M.max()


def _req(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def _grads(a: np.ndarray, b: np.ndarray, M: np.ndarray, fn: Callable[..., torch.Tensor]) -> list[np.ndarray]:
    ta, tb, tm = _req(a), _req(b), _req(M)
    fn(ta, tb, tm).sum().backward()
    return [t.grad.numpy() for t in (ta, tb, tm)]  # type: ignore[union-attr]


def _central(fn: Callable[[float], float], h: float = 1e-6) -> float:
    return (fn(h) - fn(-h)) / (2 * h)


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean()


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("method", METHODS)
def test_gradients_match_finite_differences(method: str, objective: str) -> None:
    a, b, M = _problem()
    reg = 0.1

    def value(a_: np.ndarray, b_: np.ndarray, M_: np.ndarray) -> float:
        return float(sinkhorn2(a_, b_, M_, reg, method=method, tol=1e-14, objective=objective))

    ga, gb, gm = _grads(a, b, M, lambda x, y, z: sinkhorn2(x, y, z, reg, method=method, tol=1e-13, objective=objective))
    rng = np.random.default_rng(5)
    for _ in range(3):  # directions in M
        dm = rng.normal(size=M.shape)
        fd = _central(lambda h, dm=dm: value(a, b, M + h * dm))
        assert float((gm * dm).sum()) == pytest.approx(fd, rel=1e-6, abs=1e-9)
    # Balanced directions in (a, b): mass-preserving, then scaling both masses (Σda = Σdb ≠ 0).
    da, db = rng.normal(size=a.shape), rng.normal(size=b.shape)
    da, db = _centred(da), _centred(db)
    for da_, db_ in ((da, db), (a, b), (da + 0.3 * a, db + 0.3 * b)):
        fd = _central(lambda h, da_=da_, db_=db_: value(a + h * da_, b + h * db_, M))
        assert float(ga @ da_ + gb @ db_) == pytest.approx(fd, rel=1e-6, abs=1e-9)
    assert ga.mean() == pytest.approx(gb.mean(), abs=1e-12)  # the documented gauge


@pytest.mark.parametrize("pot_method", ["sinkhorn", "sinkhorn_log"])
def test_linear_gradients_equal_pot_autodiff(pot_method: str) -> None:
    """POT differentiates its unrolled iterations; converged, that is the exact gradient of ⟨P, M⟩ too."""
    a, b, M = _problem(8, 6, seed=1)
    reg = 0.1
    pa, pb, pm = _grads(
        a, b, M, lambda x, y, z: ot.sinkhorn2(x, y, z, reg, method=pot_method, numItermax=100_000, stopThr=1e-14)
    )
    qa, qb, qm = _grads(a, b, M, lambda x, y, z: pot.sinkhorn2(x, y, z, reg, numItermax=100_000, stopThr=1e-13))
    np.testing.assert_allclose(qm, pm, atol=1e-9)
    # (a, b) gradients are defined up to (c, −c): compare the gauge-invariant parts.
    np.testing.assert_allclose(_centred(qa), _centred(pa), atol=1e-9)
    np.testing.assert_allclose(_centred(qb), _centred(pb), atol=1e-9)
    assert qa @ a + qb @ b == pytest.approx(pa @ a + pb @ b, abs=1e-9)


def test_entropic_gradients_equal_pot_envelope() -> None:
    a, b, M = _problem(8, 6, seed=2)
    reg = 0.1
    ea, eb, em = _req(a), _req(b), _req(M)
    res = ot.solve(em, ea, eb, reg=reg, reg_type="entropy", grad="envelope", max_iter=100_000, tol=1e-14)
    res.value.backward()
    qa, qb, qm = _grads(a, b, M, lambda x, y, z: sinkhorn2(x, y, z, reg, tol=1e-13, objective="entropic"))
    assert float(sinkhorn2(a, b, M, reg, tol=1e-13, objective="entropic")) == pytest.approx(
        float(res.value.detach()), rel=1e-10
    )
    np.testing.assert_allclose(qm, em.grad.numpy(), atol=1e-9)  # type: ignore[union-attr]
    np.testing.assert_allclose(_centred(qa), ea.grad.numpy(), atol=1e-9)  # type: ignore[union-attr]
    np.testing.assert_allclose(_centred(qb), eb.grad.numpy(), atol=1e-9)  # type: ignore[union-attr]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_multi_column_gradients_are_the_sum_of_single_ones(objective: str) -> None:
    a, b, M = _problem()
    B = np.stack([b, b[::-1], np.full_like(b, 1 / b.size)], 1)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    ta, tb, tm = _req(a), _req(B), _req(M)
    values = sinkhorn2(ta, tb, tm, 0.1, tol=1e-13, objective=objective)
    assert values.shape == (3,)
    (values * w).sum().backward()
    ga, gm = np.zeros_like(a), np.zeros_like(M)
    for k in range(3):
        sa, sb, sm = _grads(a, B[:, k], M, lambda x, y, z: sinkhorn2(x, y, z, 0.1, tol=1e-13, objective=objective))
        ga, gm = ga + float(w[k]) * sa, gm + float(w[k]) * sm
        np.testing.assert_allclose(_centred(tb.grad.numpy()[:, k]), _centred(float(w[k]) * sb), atol=1e-9)  # type: ignore[union-attr]
    np.testing.assert_allclose(tm.grad.numpy(), gm, atol=1e-9)  # type: ignore[union-attr]
    np.testing.assert_allclose(_centred(ta.grad.numpy()), _centred(ga), atol=1e-9)  # type: ignore[union-attr]


def test_linear_gradient_at_zero_weight_is_the_one_sided_derivative() -> None:
    a, b, M = _problem()
    a[2] = 0.0
    a /= a.sum()
    reg = 0.1
    ga, gb, _ = _grads(a, b, M, lambda x, y, z: sinkhorn2(x, y, z, reg, tol=1e-13))
    assert np.isfinite(ga).all() and np.isfinite(gb).all()
    e = np.zeros_like(a)
    e[2] = 1.0

    def value(h: float) -> float:  # a point entering with mass h, taken proportionally from b's side
        return float(sinkhorn2(a + h * e, b + h * b, M, reg, tol=1e-14))

    h = 1e-5  # second-order one-sided difference
    fd = (-3 * value(0.0) + 4 * value(h) - value(2 * h)) / (2 * h)
    assert float(ga @ e + gb @ b) == pytest.approx(fd, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("method", [*METHODS, "batched"])
def test_inf_costs_give_finite_gradients(objective: str, method: str) -> None:
    """Forbidden pairs (+inf), one histogram through every method and several through the batched solver: zero
    gradient there, finite elsewhere, equal to the problem with a cost so large that its kernel is exactly 0."""
    a, b, M = _problem()
    B = np.stack([b, b[::-1]], 1) if method == "batched" else b
    kw = {} if method == "batched" else {"method": method}
    M_inf = M.copy()
    M_inf[0, :2] = np.inf
    M_big = np.where(np.isinf(M_inf), 1e4, M_inf)  # kernel exp(−1e5) = 0 exactly: the same problem
    ga, _, gm = _grads(a, B, M_inf, lambda x, y, z: sinkhorn2(x, y, z, 0.1, tol=1e-13, objective=objective, **kw))
    assert np.isfinite(gm).all() and np.isfinite(ga).all() and (gm[0, :2] == 0).all()
    _, _, gm_big = _grads(a, B, M_big, lambda x, y, z: sinkhorn2(x, y, z, 0.1, tol=1e-13, objective=objective, **kw))
    np.testing.assert_allclose(gm, gm_big, atol=1e-10)


def test_no_graph_without_requires_grad_and_dtypes_follow_inputs() -> None:
    a, b, M = _problem()
    assert isinstance(sinkhorn2(a, b, M, 0.1), float)
    plain = sinkhorn2(torch.tensor(a), torch.tensor(b), torch.tensor(M), 0.1)
    assert isinstance(plain, torch.Tensor) and plain.grad_fn is None and plain.ndim == 0
    m32 = torch.tensor(M, dtype=torch.float32, requires_grad=True)
    value = sinkhorn2(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), m32, 0.1, tol=1e-5)
    assert value.dtype == torch.float32
    value.backward()
    assert m32.grad is not None and m32.grad.dtype == torch.float32
    with torch.no_grad():
        assert sinkhorn2(torch.tensor(a), torch.tensor(b), _req(M), 0.1).grad_fn is None


def test_unknown_objective_is_a_clear_error() -> None:
    a, b, M = _problem()
    with pytest.raises(ValueError, match="`objective` must be one of"):
        sinkhorn2(a, b, M, 0.1, objective="dual")
