"""OmegaTuner (Learning to Relax): Tsallis-INF normalization, the learners on the paper's synthetic sequence and a
2-D heat-equation sequence against every comparator computed on the same sequence (ω = 1, Young's ω*, best fixed
ω in hindsight, instance-optimal ω), and solve_sequence against the cost table it replays."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from precond.bench.solvers.problems import heat_sequence, shifted_laplacian_sequence
from precond.linalg import (
    DEFAULT_GRID,
    ChebCB,
    SparseFamily,
    TsallisINF,
    replay,
    solve_sequence,
    sor_batch,
    ssor_pcg_batch,
    tsallis_probabilities,
    young_omega,
)


@pytest.mark.parametrize("scale", [0.0, 1.0, 1e3, 1e9, 1e14])
@pytest.mark.parametrize("eta", [2.0, 2 / np.sqrt(5000), 50.0])
def test_tsallis_probabilities_sum_to_one(scale: float, eta: float) -> None:
    L = np.random.default_rng(0).random(20) * scale
    p = tsallis_probabilities(L, eta)
    assert abs(p.sum() - 1) <= 1e-9 and (p > 0).all()
    assert np.argmax(p) == np.argmin(L)
    # the closed form: p_i = 4/(η(L_i − x))² for one x below min L
    x = L - 2 / (eta * np.sqrt(p))
    np.testing.assert_allclose(x, x[0], rtol=0, atol=1e-6 * max(1.0, scale))


def test_tsallis_uniform_and_learns_a_clear_best_arm() -> None:
    tuner = TsallisINF(grid=[1.0, 1.5, 1.9], seed=1)
    np.testing.assert_allclose(tuner.probabilities(), 1 / 3)
    costs = np.tile([300.0, 40.0, 120.0], (400, 1))
    arms = replay(tuner, costs)
    assert (arms[-100:] == 1).mean() > 0.9


def cost_table(variance: str, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterations of every grid ω on every system (batched SOR, tol 1e-8), plus Young's ω* per instance."""
    seq = shifted_laplacian_sequence(T, variance, seed=0)
    fam = SparseFamily.build(seq.K)
    d = DEFAULT_GRID.size
    res = sor_batch(fam, np.repeat(seq.b, d, 0), np.tile(DEFAULT_GRID, T), shift=np.repeat(seq.shifts, d), tol=1e-8)
    assert all(s == "converged" for s in res.status)
    young = np.array([young_omega(seq.K + c * sp.eye_array(100)) for c in seq.shifts[:1]])
    # Young's ω* of K + cI has a closed form in c (β = ρ_J(K)·4/(4+c)); checked against young_omega above
    beta = 4 * np.cos(np.pi / 11) / (4 + seq.shifts)
    omega_star = 1 + (beta / (1 + np.sqrt(1 - beta**2))) ** 2
    assert omega_star[0] == pytest.approx(young[0], rel=1e-10)
    ys = sor_batch(fam, seq.b, omega_star, shift=seq.shifts, tol=1e-8)
    return res.iterations.reshape(T, d).astype(float), seq.shifts, ys.iterations.astype(float)


@pytest.mark.slow
@pytest.mark.parametrize("variance", ["high", "low"])
def test_tuners_on_synthetic_sequence(variance: str) -> None:
    """The issue's bound, Tsallis-INF ≤ 1.3× the best fixed ω over ≥ 2000 instances, for every seed.  Its regret is
    sublinear, so the ratio falls with T: T = 3000 leaves a margin that T = 2000 does not (high variance sits at
    1.3 there).  The authors' η_t = 2/√t is kept; other constants c/√t did no better at T = 2000."""
    T = 3000
    C, shifts, young = cost_table(variance, T)
    rows = np.arange(T)
    best_fixed = C.sum(0).min()
    gauss_seidel = C[:, 0].sum()
    instance_opt = C.min(1).sum()
    assert instance_opt < best_fixed < gauss_seidel
    assert young.sum() < best_fixed  # Young's ω* per instance is near-optimal for this consistently ordered K
    tsallis = np.array([C[rows, replay(TsallisINF(seed=s), C)].sum() for s in range(3)])
    assert (tsallis <= 1.3 * best_fixed).all(), tsallis / best_fixed
    assert (tsallis <= 0.35 * gauss_seidel).all()
    cheb = np.mean([C[rows, replay(ChebCB((-0.15, 0.45), seed=s), C, shifts)].sum() for s in range(3)])
    assert cheb < best_fixed
    assert cheb >= instance_opt


@pytest.mark.slow
def test_tuners_on_heat_equation_with_ssor_pcg() -> None:
    T = 2000  # the issue: >= 2000 instances
    hs = heat_sequence(T, nx=20)
    d = DEFAULT_GRID.size
    res = ssor_pcg_batch(
        SparseFamily.build(hs.K),
        np.repeat(hs.b, d, 0),
        np.tile(DEFAULT_GRID, T),
        scale=np.repeat(hs.scales, d),
        shift=1.0,
        x0=np.repeat(hs.x0, d, 0),
        tol=1e-8,
    )
    assert all(s == "converged" for s in res.status)
    C = np.maximum(res.iterations.reshape(T, d), 1).astype(float)
    rows = np.arange(T)
    best_fixed = C.sum(0).min()
    tsallis = np.mean([C[rows, replay(TsallisINF(seed=s), C)].sum() for s in range(3)])
    assert tsallis <= 1.3 * best_fixed
    cheb = np.mean([C[rows, replay(ChebCB((0.0, 10.0), seed=s), C, hs.kappa)].sum() for s in range(3)])
    assert C.min(1).sum() <= cheb <= 1.1 * best_fixed


def test_solve_sequence_costs_equal_the_replayed_table() -> None:
    T = 30
    seq = shifted_laplacian_sequence(T, "low", m=6, seed=1)
    n = seq.K.shape[0]
    systems = [(seq.K + c * sp.eye_array(n), b, c) for c, b in zip(seq.shifts, seq.b, strict=True)]
    grid = np.array([1.0, 1.3, 1.6, 1.8])
    out = solve_sequence(systems, ChebCB((-0.15, 0.45), grid=grid, seed=3))
    d = grid.size
    table = sor_batch(seq.K, np.repeat(seq.b, d, 0), np.tile(grid, T), shift=np.repeat(seq.shifts, d))
    C = table.iterations.reshape(T, d).astype(float)
    arms = replay(ChebCB((-0.15, 0.45), grid=grid, seed=3), C, seq.shifts)
    np.testing.assert_array_equal(out.omegas, grid[arms])
    np.testing.assert_array_equal(out.iterations, C[np.arange(T), arms])
    assert out.converged and out.total_iterations == C[np.arange(T), arms].sum()
    fixed = solve_sequence(((s[0], s[1]) for s in systems), 1.6, method="ssor_pcg", warm_start=True)
    assert fixed.converged and (fixed.omegas == 1.6).all()


def test_tuner_bad_input() -> None:
    A = sp.eye_array(4, format="csr") * 2.0
    with pytest.raises(ValueError, match="empty"):
        solve_sequence([], TsallisINF())
    with pytest.raises(ValueError, match="open interval"):
        TsallisINF(grid=[1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        TsallisINF(grid=[])
    with pytest.raises(ValueError, match="context"):
        solve_sequence([(A, np.ones(4))], ChebCB((0.0, 1.0)))
    with pytest.raises(ValueError, match="context_range"):
        ChebCB((1.0, 0.0))
    with pytest.raises(ValueError, match="method"):
        solve_sequence([(A, np.ones(4))], 1.0, method="jacobi")
    with pytest.raises(ValueError, match="open interval"):
        solve_sequence([(A, np.ones(4))], 2.5)
    with pytest.raises(TypeError, match="LinearSystem"):
        solve_sequence([A], 1.0)
    with pytest.raises(ValueError, match="shape"):
        replay(TsallisINF(), np.ones((5, 3)))
    with pytest.raises(ValueError, match="≥ 1"):
        replay(TsallisINF(grid=[1.0]), np.zeros((5, 1)))
    tuner = TsallisINF()
    with pytest.raises(RuntimeError, match="choose"):
        tuner.update(3.0)
    tuner.choose()
    with pytest.raises(RuntimeError, match="twice"):
        tuner.choose()
    with pytest.raises(ValueError, match="cost"):
        tuner.update(float("nan"))
