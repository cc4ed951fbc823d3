"""inverse_root against a float64 eigendecomposition oracle."""

from __future__ import annotations

import pytest
import torch

from precond.linalg import inverse_root


def _spd(n: int, d: int, cond: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, d, d, generator=g, dtype=torch.float64))
    values = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), d, dtype=torch.float64)
    return (q * values) @ q.mT


def _oracle(a: torch.Tensor, exponent: float, eps: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(a.double())
    values = values.clamp_min(0)
    damped = values + eps * values.amax(-1, keepdim=True) + 1e-30
    return (vectors * damped.pow(-exponent)[..., None, :]) @ vectors.mT


@pytest.mark.parametrize("exponent", [0.25, 0.5, 1 / 6])
def test_batched_roots_match_float64_oracle(exponent):
    a = _spd(4, 16, 1e4, seed=0)
    roots, failed = inverse_root(a.float(), exponent, 1e-6, torch.zeros(4, 16, 16))
    assert not failed.any()
    expected = _oracle(a, exponent, 1e-6)
    rel = (roots.double() - expected).norm() / expected.norm()
    assert rel < 1e-4, rel


def test_root_times_matrix_power_is_identity_on_a_well_conditioned_matrix():
    a = _spd(2, 10, 10.0, seed=1).float()
    roots, _ = inverse_root(a, 0.25, 0.0, torch.zeros(2, 10, 10))
    fourth = roots @ roots @ roots @ roots
    torch.testing.assert_close(fourth @ a, torch.eye(10).expand(2, 10, 10), rtol=0, atol=2e-4)


def test_damping_is_relative_to_the_largest_eigenvalue():
    """Scaling A by c scales its root by c^(-e) exactly (an absolute epsilon would break this)."""
    a = _spd(1, 8, 1e8, seed=2).float()
    r1, _ = inverse_root(a, 0.25, 1e-4, torch.zeros(1, 8, 8))
    r2, _ = inverse_root(1e-6 * a, 0.25, 1e-4, torch.zeros(1, 8, 8))
    assert (r2 - r1 * 1e-6**-0.25).norm() / r2.norm() < 1e-3  # float32 round-off; an absolute eps: O(1)
    # ... and the damping matters: it caps the root's largest eigenvalue at (1e-4·λ_max)^(-1/4)
    assert torch.linalg.eigvalsh(r1.double()).max() < 1.001 * (1e-4) ** -0.25


def test_rank_deficient_and_zero_matrices_give_finite_roots():
    g = torch.Generator().manual_seed(3)
    v = torch.randn(1, 6, 2, generator=g)
    low_rank = v @ v.mT
    zero = torch.zeros(1, 6, 6)
    # null-space eigenvalues come out of float32 eigh as noise of ~1e-7·λ_max, so the damping must sit above it
    roots, failed = inverse_root(torch.cat([low_rank, zero]), 0.25, 1e-4, torch.zeros(2, 6, 6))
    assert torch.isfinite(roots).all() and not failed.any()
    rel = (roots[:1].double() - _oracle(low_rank, 0.25, 1e-4)).norm() / _oracle(low_rank, 0.25, 1e-4).norm()
    assert rel < 1e-3, rel


def test_non_finite_input_keeps_previous():
    a = _spd(2, 5, 10.0, seed=4).float()
    a[1, 0, 0] = float("nan")
    previous = torch.full((2, 5, 5), 7.0)
    roots, failed = inverse_root(a, 0.25, 1e-6, previous)
    assert failed.tolist() == [False, True]
    assert torch.equal(roots[1], previous[1])
    assert torch.isfinite(roots[0]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("exponent", [0.5, 0.25, 1 / 6])
def test_a_members_root_is_bitwise_the_same_alone_or_in_any_batch(exponent: float, dtype: torch.dtype) -> None:
    """The sharded optimizers split batches by owner and promise the single-process bits: a root may not depend on
    its batch (on AVX2 a lone 8×8 member's eigenvalue powers run in scalar code, a batch of two in SIMD)."""
    g = torch.Generator().manual_seed(3)
    for d in (4, 8, 16):
        a = torch.randn(5, d, 2 * d, generator=g, dtype=dtype)
        factors = a @ a.mT / (2 * d)
        previous = torch.eye(d, dtype=dtype).expand_as(factors).clone()
        alone = torch.cat([inverse_root(factors[i : i + 1], exponent, 1e-6, previous[i : i + 1])[0] for i in range(5)])
        for size in (2, 3, 5):
            together = inverse_root(factors[:size], exponent, 1e-6, previous[:size])[0]
            assert torch.equal(together, alone[:size]), (d, size)
