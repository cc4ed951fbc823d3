"""precond.linalg.newton_schulz against a float64 SVD oracle."""

from __future__ import annotations

import pytest
import torch

from precond.linalg import newton_schulz

A, B, C = 3.4445, -4.7750, 2.0315


def _with_spectrum(m: int, n: int, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U diag(s) Vᵀ`` (float64) with random orthonormal ``U`` ``[m, k]``, ``V`` ``[n, k]``."""
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(m, k, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64)).Q
    return u @ torch.diag(s) @ v.T, u, v


def _log_spectrum(k: int, cond: float) -> torch.Tensor:
    return torch.logspace(0.0, -torch.log10(torch.tensor(cond)).item(), k, dtype=torch.float64)


def _scalar_map(s: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The polynomial NS applies to each normalised singular value."""
    for _ in range(steps):
        s = A * s + B * s**3 + C * s**5
    return s


@pytest.mark.parametrize("shape", [(24, 24), (48, 16), (16, 40)])
def test_keeps_singular_vectors(shape):
    m, n = shape
    x, u, v = _with_spectrum(m, n, _log_spectrum(min(m, n), 100.0))
    y = newton_schulz(x.float()).double()
    core = u.T @ y @ v  # diagonal iff NS(X) = U S' Vᵀ
    off = core - torch.diag(core.diagonal())
    assert off.abs().max() < 1e-5 * core.diagonal().abs().max()
    # nothing outside the span of U / V either (tall/wide case)
    assert (y - u @ core @ v.T).norm() < 1e-5 * y.norm()


# The band.  NS maps each normalised singular value σ/‖X‖_F through the quintic p(s) = a s + b s³ + c s⁵,
# five times.  On [2e-3, 1] the range of p⁵ is [0.6818, 1.2024] (checked in float64 below); near zero p⁵ rises
# like a⁵·s ≈ 485·s, so values below ~1.5e-3 cannot reach 0.68 in 5 steps.  The matrices below (condition
# number ≤ 100, up to 32 singular values) all have σ_min/‖X‖_F ≥ 2e-3 (asserted), and their measured output
# singular values lie in [0.682, 1.202] — Keller Jordan's "roughly Uniform(0.5, 1.5)", made precise.  The
# asserted band [0.6, 1.25] is that exact range plus float32 slack.  Condition number 1e3 is *not* covered: with
# 128 log-spaced values the smallest output is ~0.15 (pinned below through the scalar map).
def test_scalar_map_range():
    s = torch.logspace(-3, 0, 200_001, dtype=torch.float64)
    y = _scalar_map(s)
    in_band = y[s >= 2e-3]
    assert 0.68 < in_band.min() < 0.685
    assert 1.20 < in_band.max() < 1.21
    assert y[s <= 1.2e-3].max() < 0.6  # too small to reach the band in 5 steps


@pytest.mark.parametrize("shape", [(16, 16), (64, 32), (32, 64), (64, 64)])
@pytest.mark.parametrize("cond", [1.0, 10.0, 100.0])
@pytest.mark.parametrize("spacing", ["log", "linear"])
def test_singular_values_in_band(shape, cond, spacing):
    m, n = shape
    k = min(m, n)
    s = _log_spectrum(k, cond) if spacing == "log" else torch.linspace(1.0, 1.0 / cond, k, dtype=torch.float64)
    x, _, _ = _with_spectrum(m, n, s)
    assert (s.min() / s.norm()) >= 2e-3  # the precondition of the band
    sv = torch.linalg.svdvals(newton_schulz(x.float()).double())
    assert sv.min() > 0.6, sv.min()
    assert sv.max() < 1.25, sv.max()


def test_ill_conditioned_follows_scalar_map():
    # cond 1e3: NS(X)'s singular values are exactly p⁵(σ/‖X‖_F) — the tail stays below the band.
    s = _log_spectrum(128, 1e3)
    x, _, _ = _with_spectrum(128, 128, s)
    sv = torch.linalg.svdvals(newton_schulz(x.float()).double())
    expected = _scalar_map(s / s.norm())
    torch.testing.assert_close(sv, expected.sort(descending=True).values, atol=2e-4, rtol=1e-3)
    assert 0.1 < sv.min() < 0.2


def test_batched_equals_loop_with_leading_dims():
    x = torch.randn(2, 3, 12, 20)
    out = newton_schulz(x)
    assert out.shape == x.shape
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], newton_schulz(x[i, j]), atol=1e-6, rtol=1e-5)


def test_tall_is_transpose_of_wide():
    x = torch.randn(40, 12)
    tall = newton_schulz(x)
    wide = newton_schulz(x.T.contiguous())
    assert tall.shape == (40, 12)
    torch.testing.assert_close(tall, wide.T, atol=1e-6, rtol=1e-5)


def test_zero_matrix_gives_zeros():
    out = newton_schulz(torch.zeros(3, 5, 7))
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros(3, 5, 7))


def test_float64_matches_float32_and_keeps_dtype():
    x = torch.randn(20, 30, dtype=torch.float64)
    y64 = newton_schulz(x)
    assert y64.dtype == torch.float64
    y32 = newton_schulz(x.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, atol=1e-5, rtol=1e-4)
    # float64 follows the scalar map to float64 precision
    sv = torch.linalg.svdvals(y64)
    s = torch.linalg.svdvals(x)
    expected = _scalar_map(s / (s.norm() + 1e-7)).sort(descending=True).values
    torch.testing.assert_close(sv, expected, atol=1e-12, rtol=1e-10)


def test_more_steps_approach_orthogonal_with_classic_coefficients():
    # (1.5, -0.5, 0) is the cubic Newton–Schulz iteration, which converges to U Vᵀ exactly.
    x, u, v = _with_spectrum(20, 20, _log_spectrum(20, 10.0))
    y = newton_schulz(x, steps=40, coefficients=(1.5, -0.5, 0.0))
    torch.testing.assert_close(y, u @ v.T, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"x": torch.randn(5)}, "at least 2 dims"), ({"steps": -1}, "steps"), ({"coefficients": (1.0, 2.0)}, "coeff")],
)
def test_bad_arguments(kwargs, match):
    args = {"x": torch.randn(4, 4), **kwargs}
    with pytest.raises(ValueError, match=match):
        newton_schulz(**args)
