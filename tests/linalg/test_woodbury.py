"""Sliding-window Woodbury kernel (M-FAC) against the dense float64 inverse of the damped empirical Fisher."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from precond.linalg import (
    damped_cholesky,
    window_filled,
    window_ihvp,
    window_ihvp_newest,
    window_new,
    window_update_,
)


def _dense_ihvp(rows: torch.Tensor, damping: float, vec: torch.Tensor) -> torch.Tensor:
    """``(λI + (1/k) Σ g gᵀ)⁻¹ v`` over the ``k`` given rows, float64, dense solve."""
    rows = rows.double()
    d = rows.shape[-1]
    fisher = damping * torch.eye(d, dtype=torch.float64) + rows.T @ rows / rows.shape[0]
    return torch.linalg.solve(fisher, vec.double())


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected).norm() / expected.norm())


def _fill(window, grads, damping):
    for g in grads:
        window_update_(window, g, damping)


# (number of gradients added, window size m): partly filled, exactly full, wrapped around several times.
_FILLS = [(3, 8), (8, 8), (29, 8), (1, 1), (5, 1)]


@pytest.mark.parametrize("solve_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("added", "m"), _FILLS)
def test_ihvp_matches_dense_inverse(added, m, solve_dtype):
    d, damping = 12, 0.05
    grads = torch.randn(added, d)
    window = window_new(m, d, solve_dtype=solve_dtype)
    _fill(window, grads, damping)
    live = grads[-m:]  # the ring buffer holds the last m gradients (order does not matter for F̂)
    assert window_filled(window) == len(live)
    tol = 1e-12 if solve_dtype == torch.float64 else 2e-5
    # the buffer holds exactly those rows, and the Gram matrix is exactly G Gᵀ of what is stored
    assert sorted(map(tuple, window.grads[: len(live)].tolist())) == sorted(map(tuple, live.tolist()))
    torch.testing.assert_close(
        window.gram.double(), (window.grads.double() @ window.grads.double().T), rtol=1e-6, atol=1e-6
    )
    vec = torch.randn(d)
    assert _rel(window_ihvp(window, vec, damping), _dense_ihvp(live, damping, vec)) < tol
    newest = _dense_ihvp(live, damping, grads[-1])
    assert _rel(window_ihvp_newest(window), newest) < tol
    assert _rel(window_ihvp(window, grads[-1], damping), newest) < tol


def test_empty_window_is_identity_over_damping():
    window = window_new(4, 5)
    vec = torch.randn(5)
    torch.testing.assert_close(window_ihvp(window, vec, 0.25), vec / 0.25)
    with pytest.raises(ValueError, match="empty"):
        window_ihvp_newest(window)


def test_warmup_averages_over_filled_rows_only():
    """Before the window is full F̂ = λI + (1/m_eff) Σ, not (1/m) Σ: one gradient g gives g/(λ + |g|²)."""
    g = torch.randn(7)
    window = window_new(16, 7, solve_dtype=torch.float64)
    window_update_(window, g, 0.1)
    expected = g.double() / (0.1 + g.double().square().sum())
    assert _rel(window_ihvp_newest(window), expected) < 1e-12


def test_batched_equals_per_block_loop():
    b, m, d, damping = 3, 5, 9, 0.02
    grads = torch.randn(11, b, d)
    batched = window_new(m, d, (b,), solve_dtype=torch.float64)
    _fill(batched, grads, damping)
    vec = torch.randn(b, d)
    out, newest = window_ihvp(batched, vec, damping), window_ihvp_newest(batched)
    for i in range(b):
        single = window_new(m, d, solve_dtype=torch.float64)
        _fill(single, grads[:, i], damping)
        torch.testing.assert_close(out[i], window_ihvp(single, vec[i], damping), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(newest[i], window_ihvp_newest(single), rtol=1e-12, atol=1e-12)
        assert _rel(newest[i], _dense_ihvp(grads[-m:, i], damping, grads[-1, i])) < 1e-12


@pytest.mark.parametrize("solve_dtype", [torch.float32, torch.float64])
def test_rank_deficient_window_is_finite_and_correct(solve_dtype):
    """Duplicated and collinear gradients: G Gᵀ is singular, the damped system still solves."""
    d, damping = 10, 1e-3
    g, h = torch.randn(d), torch.randn(d)
    grads = torch.stack([g, g, 2 * g, -g, g + h, h, g + h, 3 * h])
    window = window_new(8, d, solve_dtype=solve_dtype)
    _fill(window, grads, damping)
    assert torch.linalg.matrix_rank(window.gram.double(), rtol=1e-4) == 2
    vec = torch.randn(d)
    tol = 1e-9 if solve_dtype == torch.float64 else 1e-3
    for out, expected in [
        (window_ihvp(window, vec, damping), _dense_ihvp(grads, damping, vec)),
        (window_ihvp_newest(window), _dense_ihvp(grads, damping, grads[-1])),
    ]:
        assert torch.isfinite(out).all()
        assert _rel(out, expected) < tol


def test_damped_cholesky_falls_back_instead_of_nan():
    """float32 cannot factor K + tiny·I for an ill-conditioned K; the fallback returns a usable factor."""
    base = torch.randn(6, 3, dtype=torch.float64) * 1e4
    gram = (base @ base.T).to(torch.float32)  # rank 3, entries ~1e8: float32 rounding makes it indefinite
    gram = torch.stack([gram, torch.eye(6)])
    factor, fallbacks = damped_cholesky(gram, 1e-6)
    assert fallbacks.tolist() == [True, False]
    assert torch.isfinite(factor).all()
    recon = (factor.double() @ factor.double().mT)[0]
    assert float((recon - gram[0].double()).norm() / gram[0].double().norm()) < 1e-6
    with pytest.raises(ValueError, match="non-finite"):
        damped_cholesky(torch.full((2, 2), float("nan")), 1.0)


def test_float64_solve_recovers_accuracy_where_float32_cannot():
    """Nearly collinear gradients, |g|²/(m·λ) ~ 1e6: float32 keeps only ~2 digits, float64 ~11 (documented)."""
    d, m, damping = 32, 8, 1e-4
    grads = torch.randn(m, 3) @ torch.randn(3, d) + 1e-3 * torch.randn(m, d)  # rank 3 plus a little noise
    errors = {}
    for dtype in (torch.float32, torch.float64):
        window = window_new(m, d, solve_dtype=dtype)
        _fill(window, grads, damping)
        errors[dtype] = _rel(window_ihvp_newest(window), _dense_ihvp(grads, damping, grads[-1]))
    assert errors[torch.float64] < 1e-9
    assert 1e-4 < errors[torch.float32] < 0.1


def test_ihvp_cost_is_linear_in_d():
    """IHVP flops are O(d·m + m²) — never O(d²) — and the update's Gram work is O(d·m)."""
    m, d, damping = 8, 4096, 0.1
    window = window_new(m, d)
    _fill(window, torch.randn(m + 3, d), damping)
    vec = torch.randn(d)
    for fn in (lambda: window_ihvp(window, vec, damping), lambda: window_ihvp_newest(window)):
        with FlopCounterMode(display=False) as counter:
            fn()
        flops = counter.get_total_flops()
        assert 0 < flops <= 4 * d * m + 4 * m * m, flops
    with FlopCounterMode(display=False) as counter:
        window_update_(window, torch.randn(d), damping)
    assert counter.get_total_flops() <= 2 * d * m + 4 * m**3
