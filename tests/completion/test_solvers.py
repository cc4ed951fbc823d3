"""The approximate row solvers ("cg", "sketch_cg", "auto") against the exact solver and dense oracles."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from precond.completion import SOLVERS, complete
from precond.completion._complete import CG_TOL_FLOOR, CG_TOL_RATE, CG_TOL_START, cg_tolerance
from precond.completion._solve import RowIndex, ridge_rows, ridge_rows_cg
from tests.completion.conftest import low_rank, n_samples, sample


def _rel_error(res, M: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    X = (res.U @ res.V.T).double().numpy()
    return float(np.linalg.norm(X - M) / np.linalg.norm(M))


# (m, n, k, samples): a balanced problem, and a wide one whose rows are heavy (|Ω_i| ≈ 200 > 4(k+1), sketched by
# "sketch_cg") and whose columns are light (|Ω_j| ≈ 30).
PROBLEMS = [(200, 150, 8, None), (60, 400, 16, 12000)]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("m", "n", "k", "count"), PROBLEMS)
def test_every_solver_recovers_like_exact(solver: str, m: int, n: int, k: int, count: int | None) -> None:
    M = low_rank(m, n, k, seed=m + k)
    rows, cols = sample(m, n, count or n_samples(m, n, k), seed=k, min_per_line=k)
    kw = {"reg": 0.0, "tol": 1e-12, "max_iter": 300}
    exact = complete(rows, cols, M[rows, cols], (m, n), k, solver="exact", **kw)  # type: ignore[arg-type]
    res = complete(rows, cols, M[rows, cols], (m, n), k, solver=solver, **kw)  # type: ignore[arg-type]
    assert res.solver == solver
    assert res.converged
    assert _rel_error(exact, M) <= 1e-6
    assert _rel_error(res, M) <= 1e-6
    assert res.iterations <= 2 * exact.iterations + 40  # bounded: the schedule reaches its floor in ~38 iterations
    assert len(res.solves) == res.iterations
    if solver in ("cg", "sketch_cg"):
        assert all(s.exact_rows == 0 for s in res.solves)
        assert res.solves[0].cg_iterations > 0
    if solver == "auto":  # the cost model keeps these rows (d ≤ 16: d + d²/|Ω_i| ≤ 28) on the exact solver
        assert all(s.exact_rows == m + n and s.cg_iterations == 0 for s in res.solves)


def test_auto_picks_cg_where_the_cost_model_says_it_pays() -> None:
    from precond.completion._complete import AUTO_CG_ITERS, AUTO_CG_KAPPA, SPARSE_PASS_COST, auto_method

    threshold = 2 * (1 + AUTO_CG_ITERS) * SPARSE_PASS_COST  # CG wins once d + d²/w exceeds it
    assert threshold == 28
    assert auto_method(200, 16) == "exact"  # 16 + 1.3
    assert auto_method(200, 32) == "cg"  # 32 + 5.1
    assert auto_method(10, 16) == "cg"  # a short, well-conditioned row: its d³ factorization dominates (16 + 25.6)
    assert auto_method(10_000, 24) == "exact"
    assert auto_method(10_000, 32) == "cg"
    assert auto_method(200, 32, AUTO_CG_KAPPA) == "cg"
    assert auto_method(200, 32, 1.01 * AUTO_CG_KAPPA) == "exact"  # ill conditioned: CG would crawl
    assert auto_method(10, 16, math.inf) == "exact"
    widths, ds = [1, 5, 30, 200, 10_000, 100_000], [1, 2, 8, 16, 32, 64, 128, 256]
    assert {auto_method(w, d) for w in widths for d in ds} == {"exact", "cg"}  # sketch_cg only when asked for


@pytest.mark.parametrize(
    ("w", "d", "lam"), [(200, 16, 0.0), (400, 64, 0.0), (80, 64, 0.0), (40, 32, 4.0), (20, 32, 2.0)]
)
def test_condition_estimate_tracks_the_true_condition_number(w: int, d: int, lam: float) -> None:
    """Marchenko–Pastur edges against ``eigvalsh`` of ``WᵀW + λI`` for Gaussian designs (50 rows each): the
    largest estimate is within a factor 2 of the largest true condition number."""
    from precond.completion._solve import condition_estimates

    g = torch.Generator().manual_seed(w + d)
    W = torch.randn(50, w, d, generator=g, dtype=torch.float64) * torch.rand(50, 1, 1, generator=g, dtype=torch.float64)
    gram = W.mT @ W + lam * torch.eye(d, dtype=torch.float64)
    eig = torch.linalg.eigvalsh(gram)
    true = float((eig[:, -1] / eig[:, 0]).max())
    mean = W.square().sum((1, 2)) / d
    est = float(condition_estimates(mean, torch.full((50,), lam, dtype=torch.float64), torch.full((50,), w), d).max())
    assert true / 2 <= est <= 2 * true


def test_condition_estimate_of_a_singular_system_is_infinite() -> None:
    from precond.completion._solve import condition_estimates

    one = torch.ones(3, dtype=torch.float64)
    assert float(condition_estimates(one, 0 * one, torch.tensor([10, 16, 40]), 16).max()) == math.inf  # w = d
    assert bool(condition_estimates(one, one, torch.tensor([10, 16, 40]), 16).isfinite().all())  # the ridge lifts it


def _half_step_problem(seed: int) -> tuple[RowIndex, torch.Tensor, torch.Tensor, int]:
    """40 rows × 60 columns, d = 5; row 3 empty, row 7 with 2 observations (< d), the others 1–60."""
    rng = np.random.default_rng(seed)
    m, n, d = 40, 60, 5
    mask = rng.random((m, n)) < rng.random((m, 1))
    mask[3] = False
    mask[7] = False
    mask[7, :2] = True
    rows, cols = np.nonzero(mask)
    idx = RowIndex(torch.as_tensor(rows), torch.as_tensor(cols), m)
    W = torch.as_tensor(rng.standard_normal((n, d)) * np.logspace(0, -2, d))
    t = torch.as_tensor(rng.standard_normal(rows.size))
    return idx, W, t, m


@pytest.mark.parametrize("sketched", [False, True])
@pytest.mark.parametrize("lam_kind", ["constant", "count", "zero"])
def test_cg_half_step_with_tight_tolerance_equals_exact(sketched: bool, lam_kind: str) -> None:
    idx, W, t, m = _half_step_problem(0)
    counts = idx.counts.double()
    lam = {"constant": torch.full((m,), 0.3, dtype=torch.float64), "count": 0.3 * counts}.get(
        lam_kind, torch.zeros(m, dtype=torch.float64)
    )
    expected = ridge_rows(idx, W, t, lam)
    x0 = torch.randn(m, W.shape[1], dtype=torch.float64)  # a warm start far from the answer
    sketch = (20, torch.Generator().manual_seed(0)) if sketched else None
    got, stats = ridge_rows_cg(idx, W, t, lam, x0, 1e-14, 500, sketch)
    assert stats.unconverged == 0
    assert stats.exact_rows == (int(((counts > 0) & (counts < 5)).sum()) if lam_kind == "zero" else 0)
    assert float((got - expected).abs().max() / expected.abs().max()) <= 1e-8
    assert bool((got[3] == 0).all())  # cold-start row stays zero


def test_sketch_cg_needs_fewer_iterations_on_ill_conditioned_rows() -> None:
    """Heavy rows whose design (the other side's factor) has condition 10⁴: counts, not time."""
    rng = np.random.default_rng(1)
    m, n, d = 8, 700, 24
    rows, cols = np.nonzero(rng.random((m, n)) < 0.9)
    idx = RowIndex(torch.as_tensor(rows), torch.as_tensor(cols), m)
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    W = torch.as_tensor(rng.standard_normal((n, d)) @ q * np.logspace(0, -4, d))
    t = torch.as_tensor(rng.standard_normal(rows.size))
    lam = torch.full((m,), 1e-8, dtype=torch.float64)
    x0 = torch.zeros(m, d, dtype=torch.float64)
    plain, s_plain = ridge_rows_cg(idx, W, t, lam, x0, 1e-10, 2000)
    pre, s_pre = ridge_rows_cg(idx, W, t, lam, x0, 1e-10, 2000, (4 * d, torch.Generator().manual_seed(0)))
    assert s_plain.unconverged == 0 and s_pre.unconverged == 0
    assert s_plain.iterations > 3 * d
    assert 4 * s_pre.iterations <= s_plain.iterations
    torch.testing.assert_close(pre, plain, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("solver", ["cg", "sketch_cg", "auto"])
def test_tolerance_schedule_is_honoured_and_recorded(
    solver: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    import precond.completion._complete as mod

    monkeypatch.setattr(mod, "SPARSE_PASS_COST", 0.01)  # "auto" then sends the well-conditioned rows to CG
    m, n, k = 120, 100, 4
    M = low_rank(m, n, k, seed=5)
    rows, cols = sample(m, n, n_samples(m, n, k), seed=5, min_per_line=k)
    vals = M[rows, cols].astype(np.float32 if dtype == torch.float32 else np.float64)
    res = complete(rows, cols, vals, (m, n), k, reg=0.01, tol=1e-10, max_iter=60, solver=solver, biases=True)
    floor = max(CG_TOL_FLOOR, 100 * torch.finfo(dtype).eps)
    expected = [max(floor, CG_TOL_START * CG_TOL_RATE ** (t - 1)) for t in range(1, res.iterations + 1)]
    assert [s.tol for s in res.solves] == pytest.approx(expected, rel=1e-12)
    assert [s.tol for s in res.solves] == [cg_tolerance(t, dtype) for t in range(1, res.iterations + 1)]
    assert [s.iteration for s in res.solves] == list(range(1, res.iterations + 1))
    assert all(s.unconverged == 0 for s in res.solves)
    assert res.solves[-1].tol == floor  # 60 iterations reach the floor (1e-1 · 0.5^37 < 1e-12)


@pytest.mark.parametrize("solver", ["cg", "sketch_cg", "auto"])
def test_loose_solves_that_stall_do_not_read_as_convergence(solver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tolerance that stays loose (0.9, barely tightening) CG stops on its warm start, the objective stalls:
    the decrease test must wait until the CG tolerance is ≤ √tol."""
    import precond.completion._complete as mod

    monkeypatch.setattr(mod, "CG_TOL_START", 0.9)
    monkeypatch.setattr(mod, "CG_TOL_RATE", 0.999)
    monkeypatch.setattr(mod, "SPARSE_PASS_COST", 0.01)  # "auto" then sends the well-conditioned rows to CG
    m, n, k = 60, 400, 16
    M = low_rank(m, n, k, seed=1)
    rows, cols = sample(m, n, 12000, seed=1, min_per_line=k)
    res = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.0, tol=1e-6, max_iter=12, solver=solver)
    assert max(s.tol for s in res.solves) > math.sqrt(1e-6)
    assert not res.converged
    assert res.iterations == 12


def test_exact_records_zero_tolerance() -> None:
    M = low_rank(50, 40, 2, seed=0)
    rows, cols = sample(50, 40, 600, seed=0, min_per_line=2)
    res = complete(rows, cols, M[rows, cols], (50, 40), 2, max_iter=5, tol=0.0)  # "auto": every row exact here
    assert [(s.tol, s.cg_iterations, s.exact_rows) for s in res.solves] == [(0.0, 0, 90)] * 5


@pytest.mark.parametrize("solver", ["cg", "sketch_cg", "auto"])
def test_objective_never_increases_with_approximate_solves(solver: str) -> None:
    m, n, k = 80, 90, 16
    rng = np.random.default_rng(2)
    M = low_rank(m, n, k, seed=2) + 0.1 * rng.standard_normal((m, n))
    rows, cols = sample(m, n, 5000, seed=2, min_per_line=k)
    objectives = [
        complete(rows, cols, M[rows, cols], (m, n), k, reg=0.5, tol=0.0, max_iter=it, solver=solver, biases=True)
        for it in range(1, 7)
    ]
    values = [r.objective for r in objectives]
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(values))
    exact = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.5, tol=0.0, max_iter=6, solver="exact", biases=True)
    assert values[-1] == pytest.approx(exact.objective, rel=1e-2)


def test_noisy_float32_problem_stays_finite_and_close_to_exact() -> None:
    m, n, k = 100, 90, 5
    rng = np.random.default_rng(4)
    M = low_rank(m, n, k, seed=4)
    rows, cols = sample(m, n, n_samples(m, n, k), seed=4, min_per_line=k)
    vals = (M[rows, cols] + 0.01 * rng.standard_normal(rows.size)).astype(np.float32)
    fits = {s: complete(rows, cols, vals, (m, n), k, reg=0.1, max_iter=40, tol=1e-7, solver=s) for s in SOLVERS}
    for s, res in fits.items():
        assert res.U.dtype == torch.float32
        assert bool(torch.isfinite(res.U).all()) and bool(torch.isfinite(res.V).all())
        assert res.train_rmse == pytest.approx(fits["exact"].train_rmse, rel=2e-2), s


@pytest.mark.parametrize("bad", ["lsqr", "Exact", None, 1])
def test_bad_solver_names_all_four(bad: object) -> None:
    with pytest.raises(ValueError, match=r"`solver` must be one of 'auto', 'exact', 'sketch_cg', 'cg', got"):
        complete([0, 1], [1, 0], [1.0, 2.0], (2, 2), 1, solver=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("solver", ["cg", "sketch_cg", "auto"])
def test_estimator_passes_the_solver_through(solver: str) -> None:
    from precond.completion import MatrixCompletion

    M = low_rank(40, 30, 2, seed=6)
    rows, cols = sample(40, 30, 500, seed=6, min_per_line=2)
    est = MatrixCompletion(rank=2, reg=0.01, solver=solver, max_iter=30).fit((rows, cols, M[rows, cols]))
    exact = MatrixCompletion(rank=2, reg=0.01, solver="exact", max_iter=30).fit((rows, cols, M[rows, cols]))
    assert est.get_params()["solver"] == solver
    np.testing.assert_allclose(
        np.asarray(est.predict(rows, cols)), np.asarray(exact.predict(rows, cols)), rtol=0, atol=1e-3
    )


def test_auto_mixes_exact_and_cg_buckets_and_still_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cost model tilted (CG threshold 7, κ ≤ 10), the heavy rows (|Ω_i| ≈ 200, κ ≈ 3.5) go to CG and the
    light columns (≈ 30 observations for d = 16, κ ≳ 20) stay exact."""
    import precond.completion._complete as cmod

    monkeypatch.setattr(cmod, "SPARSE_PASS_COST", 0.5)
    monkeypatch.setattr(cmod, "AUTO_CG_KAPPA", 10.0)
    m, n, k = 60, 400, 16
    M = low_rank(m, n, k, seed=m + k)
    rows, cols = sample(m, n, 12000, seed=k, min_per_line=k)
    res = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.0, tol=1e-12, max_iter=300, solver="auto")
    assert res.converged
    assert _rel_error(res, M) <= 1e-6
    assert all(s.exact_rows == n for s in res.solves)  # rows (|Ω_i| ≈ 200) by CG, columns (≈ 30) exact
    assert res.solves[0].cg_iterations > 0


def test_bucket_max_is_the_largest_value_over_each_buckets_rows() -> None:
    idx, _, _, m = _half_step_problem(2)
    values = torch.randn(m, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = [float(values[b.rows].max()) for b in idx.buckets]
    assert idx.bucket_max(values) == expected
    assert idx.bucket_max(values) == expected  # the cached bucket ids give the same answer


def test_a_half_step_whose_cg_buckets_hold_few_observations_is_solved_exactly() -> None:
    from precond.completion._solve import solve_rows

    idx, W, t, m = _half_step_problem(0)
    lam = torch.full((m,), 0.3, dtype=torch.float64)
    narrowest = min(b.width for b in idx.buckets)
    plan = lambda w, d, kappa: "cg" if w == narrowest else "exact"  # noqa: E731
    share = sum(int(b.counts.sum()) for b in idx.buckets if b.width == narrowest) / int(idx.indptr[-1])
    x0 = torch.zeros(m, W.shape[1], dtype=torch.float64)
    kw = {"x0": x0, "tol": 1e-14, "max_iter": 500}
    _, mixed = solve_rows(idx, W, t, lam, plan, min_cg_share=share, **kw)  # type: ignore[arg-type]
    got, exact = solve_rows(idx, W, t, lam, plan, min_cg_share=1.01 * share, **kw)  # type: ignore[arg-type]
    assert mixed.cg_rows > 0 and exact.cg_rows == 0
    assert exact.exact_rows == int((idx.counts > 0).sum())
    torch.testing.assert_close(got, ridge_rows(idx, W, t, lam), rtol=0, atol=0)


@pytest.mark.parametrize("plan", ["exact", "cg", "sketch_cg"])
def test_targets_in_csr_order_give_the_same_half_step(plan: str) -> None:
    """``ordered=True`` (targets already in the row index's CSR order) is the same solve bit for bit, and a second
    call reuses the kept buffers without reading stale numbers."""
    from precond.completion._solve import solve_rows

    idx, W, t, m = _half_step_problem(1)
    lam = torch.full((m,), 0.3, dtype=torch.float64)
    kw = {"x0": torch.zeros(m, W.shape[1], dtype=torch.float64), "tol": 1e-10, "max_iter": 50}
    g = (8, torch.Generator().manual_seed(0))
    plain, s_plain = solve_rows(idx, W, t, lam, plan, sketch=g, **kw)  # type: ignore[arg-type]
    g = (8, torch.Generator().manual_seed(0))
    ordered, s_ord = solve_rows(idx, W, t[idx.order], lam, plan, sketch=g, ordered=True, **kw)  # type: ignore[arg-type]
    assert torch.equal(plain, ordered) and s_plain.sse == s_ord.sse
    rows, cols = idx.index.numpy(), idx.other.numpy()
    direct = float(((t[idx.order].numpy() - (plain.numpy()[rows] * W.numpy()[cols]).sum(1)) ** 2).sum())
    assert s_plain.sse == pytest.approx(direct, rel=1e-12)
    t2 = 2 * t  # the same buffers, new numbers
    twice, _ = solve_rows(idx, W, t2, lam, plan, sketch=(8, torch.Generator().manual_seed(0)), **kw)  # type: ignore[arg-type]
    if plan == "exact":
        torch.testing.assert_close(twice, 2 * plain, rtol=1e-12, atol=1e-12)


def test_all_row_set_is_the_row_index_itself_and_a_subset_is_gathered() -> None:
    idx, _, _, m = _half_step_problem(2)
    every = idx.row_set(torch.arange(m))
    assert every.other is idx.other and every.order is idx.order and torch.equal(every.indptr, idx.indptr)
    some = idx.row_set(torch.tensor([2, 5, 9]))
    for i, row in enumerate([2, 5, 9]):
        a, b = int(idx.indptr[row]), int(idx.indptr[row + 1])
        assert torch.equal(some.other[some.indptr[i] : some.indptr[i + 1]], idx.other[a:b])
        assert torch.equal(some.order[some.indptr[i] : some.indptr[i + 1]], idx.order[a:b])


def test_held_out_rmse_equals_the_direct_formula_with_biases_and_repeats() -> None:
    from precond.completion._complete import HeldOut

    rng = np.random.default_rng(3)
    m, n, k = 30, 20, 3
    rows, cols = rng.integers(0, m, 200), rng.integers(0, n, 200)
    rows[:5], cols[:5] = 4, 7  # a repeated held-out entry is kept, as check_observations("keep") does
    vals = rng.standard_normal(200)
    U, V = torch.randn(m, k, dtype=torch.float64), torch.randn(n, k, dtype=torch.float64)
    b, c = torch.randn(m, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    held = HeldOut(torch.as_tensor(rows), torch.as_tensor(cols), torch.as_tensor(vals), m, torch.device("cpu"))
    pred = (U.numpy()[rows] * V.numpy()[cols]).sum(1) + b.numpy()[rows] + c.numpy()[cols] + 0.25
    expected = math.sqrt(float(np.mean((vals - pred) ** 2)))
    assert held.rmse(U, V, b, c, 0.25) == pytest.approx(expected, rel=1e-12)
    assert held.rmse(U, V, b, c, 0.25) == pytest.approx(expected, rel=1e-12)  # the kept buffer, reused


@pytest.mark.parametrize("plan", ["cg", "sketch_cg"])
def test_a_handed_in_residual_gives_the_same_cg_half_step(plan: str) -> None:
    """``residual0 = t − W_i x0_i`` (in CSR order) starts every row's CG without a sampled product and gives the same
    solution; a CG run over only some rows ignores it."""
    from precond.completion._solve import solve_rows

    rng = np.random.default_rng(4)
    m, n, d = 30, 40, 4
    mask = rng.random((m, n)) < 0.4
    mask[:, 0] = True  # every row observed
    rows, cols = np.nonzero(mask)
    idx = RowIndex(torch.as_tensor(rows), torch.as_tensor(cols), m)
    W = torch.as_tensor(rng.standard_normal((n, d)))
    t = torch.as_tensor(rng.standard_normal(rows.size))[idx.order]
    x0 = torch.as_tensor(rng.standard_normal((m, d)))
    lam = torch.full((m,), 0.2, dtype=torch.float64)
    e0 = t - (x0[idx.index] * W[idx.other]).sum(1)
    kw = {"x0": x0, "tol": 1e-12, "max_iter": 100, "ordered": True}

    def run(**extra: object) -> torch.Tensor:
        out, stats = solve_rows(idx, W, t, lam, plan, sketch=(8, torch.Generator().manual_seed(0)), **kw, **extra)  # type: ignore[arg-type]
        assert stats.unconverged == 0
        return out

    plain, handed = run(), run(residual0=e0)
    torch.testing.assert_close(handed, plain, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(handed, ridge_rows(idx, W, t[torch.argsort(idx.order)], lam), rtol=1e-8, atol=1e-8)
    wrong = run(residual0=torch.zeros_like(e0))  # not the residual of x0: used, so the answer moves
    assert float((wrong - plain).abs().max()) > 1e-3


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("biases", [False, True])
def test_recorded_train_rmse_is_the_residual_at_the_returned_factors(solver: str, biases: bool) -> None:
    """The objective's residual (handed from iteration to iteration by the CG solvers) equals the direct formula at
    the returned factors."""
    rng = np.random.default_rng(5)
    m, n, k = 50, 40, 3
    M = low_rank(m, n, k, seed=6) + 0.05 * rng.standard_normal((m, n)) + 1.0
    rows, cols = np.nonzero(rng.random((m, n)) < 0.5)
    kw = {"reg": 0.1, "solver": solver, "max_iter": 4, "tol": 0.0, "biases": biases, "warn": False}
    res = complete(rows, cols, M[rows, cols], (m, n), k, **kw)  # type: ignore[arg-type]
    pred = res.predict(rows, cols)
    assert res.history[-1][1] == pytest.approx(math.sqrt(float(np.mean((M[rows, cols] - pred) ** 2))), rel=1e-9)
