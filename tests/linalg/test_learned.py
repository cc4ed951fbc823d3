"""DCDM pieces: the Poisson-with-obstacles operator (stencil = sparse matrix, SPD), IC(0) against a dense
textbook IC(0), the Ritz right-hand sides, the line-search loss against its closed form, the solver loop (A-norm
error monotone for any network; exact in one step when the network returns A⁻¹r), save/load, bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from precond.bench.solvers.problems import divergence_rhs, fill_pockets, laplacian_2d, obstacle_mask
from precond.linalg._ic0 import ic0
from precond.linalg.learned import (
    CHECKPOINTS,
    PRETRAINED,
    DirectionNet,
    PoissonGrid,
    dcdm,
    lanczos_ritz,
    line_search_loss,
    load_direction_net,
    pretrained,
    pretrained_direction_net,
    ritz_rhs,
    save_direction_net,
    train_direction_net,
)


def dense_ic0(A: np.ndarray) -> np.ndarray:
    """Textbook IC(0) (Golub & Van Loan Alg. 11.5.1 restricted to the pattern of A), row by row: lower L."""
    n = A.shape[0]
    L = np.tril(A).astype(float)
    pattern = A != 0
    for k in range(n):
        L[k, k] = np.sqrt(L[k, k])
        for i in range(k + 1, n):
            if pattern[i, k]:
                L[i, k] /= L[k, k]
        for j in range(k + 1, n):
            for i in range(j, n):
                if pattern[i, j] and pattern[i, k] and pattern[j, k]:
                    L[i, j] -= L[i, k] * L[j, k]
    return L


@pytest.fixture(scope="module")
def grid() -> PoissonGrid:
    return PoissonGrid.build(obstacle_mask(16, seed=3, obstacles=4))


def test_grid_operator_stencil_matches_matrix_and_is_spd(grid: PoissonGrid) -> None:
    A = grid.matrix()
    assert abs(A - A.T).max() == 0
    assert np.linalg.eigvalsh(A.toarray())[0] > 1e-3
    x = np.random.default_rng(0).standard_normal((3, grid.n))
    got = grid.from_grid(grid.apply(grid.to_grid(torch.from_numpy(x)))).numpy()
    np.testing.assert_allclose(got, (A @ x.T).T, rtol=0, atol=1e-12)
    # no obstacles: the Dirichlet 5-point Laplacian
    full = PoissonGrid.build(np.ones((6, 6), dtype=bool)).matrix()
    assert abs(full - laplacian_2d(6)).max() == 0


def test_ic0_equals_dense_textbook_ic0(grid: PoissonGrid) -> None:
    A = grid.matrix()
    f = ic0(A)
    L = dense_ic0(A.toarray())
    np.testing.assert_allclose(f.matrix().toarray()[np.tril(A.toarray()) != 0], (L @ L.T)[np.tril(A.toarray()) != 0])
    np.testing.assert_allclose(f.matrix().toarray(), L @ L.T, atol=1e-12)
    r = np.random.default_rng(1).standard_normal((grid.n, 2))
    np.testing.assert_allclose(f.solve(r), np.linalg.solve(L @ L.T, r), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="triangles"):
        ic0(sp.csr_array(np.array([[4.0, -1, -1], [-1, 4, -1], [-1, -1, 4]])))
    with pytest.raises(ValueError, match="shape"):
        f.solve(np.ones(grid.n + 1))
    with pytest.raises(ValueError, match="finite"):
        f.solve(np.full(grid.n, np.nan))


def test_ritz_vectors_and_rhs(grid: PoissonGrid) -> None:
    A = grid.matrix()
    theta, V = lanczos_ritz(A, grid.n)  # full Lanczos (to an invariant subspace): exact eigenpairs
    m = theta.size
    assert m > grid.n // 2
    ev = np.linalg.eigvalsh(A.toarray())
    assert np.abs(theta[:, None] - ev[None, :]).min(1).max() < 1e-8
    np.testing.assert_allclose(V.T @ V, np.eye(m), atol=1e-8)
    np.testing.assert_allclose(A @ V, V * theta, atol=1e-8)
    R = ritz_rhs(V, 50, seed=0)
    np.testing.assert_allclose(np.linalg.norm(R, axis=1), 1.0)
    low = ((R @ V[:, : m // 2 + m // 20]) ** 2).sum(1)  # the scaled low part: 81× the weight per vector
    ratio = low.sum() / (1 - low).sum()
    assert 40 < ratio < 250  # expected 81 · (m/2 + θ) / (m/2 − θ) ≈ 98


def test_line_search_loss_closed_form(grid: PoissonGrid) -> None:
    net = DirectionNet(channels=4, fine=2, coarse=1, post=1).double()
    r = grid.to_grid(torch.from_numpy(np.random.default_rng(2).standard_normal((2, grid.n))))
    got = float(line_search_loss(net, grid, r).detach())
    A = grid.matrix()
    f = grid.from_grid(net(r, torch.from_numpy(grid.mask)[None, None])).detach().numpy()
    rv = grid.from_grid(r).numpy()
    want = np.mean([np.sum((ri - (ri @ fi) / (fi @ A @ fi) * (A @ fi)) ** 2) for ri, fi in zip(rv, f, strict=True)])
    assert got == pytest.approx(want, rel=1e-10)


class _Exact(DirectionNet):
    """A "network" returning A⁻¹ r (DCDM is then exact in one step)."""

    def __init__(self, grid: PoissonGrid) -> None:
        super().__init__(channels=1, fine=1, coarse=1, post=1)
        self.g, self.lu = grid, spla.splu(sp.csc_array(grid.matrix()))

    def forward(self, r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        v = self.g.from_grid(r).double().numpy()[0]
        return self.g.to_grid(torch.from_numpy(self.lu.solve(v))).float()


def test_dcdm_exact_direction_converges_in_one_step(grid: PoissonGrid) -> None:
    A = grid.matrix()
    b = divergence_rhs(grid.mask, 1, seed=0)[0]
    res = dcdm(A, b, _Exact(grid), grid, tol=1e-6)
    assert res.converged and res.iterations == 1 and res.residual_norm < 1e-6


def test_dcdm_a_norm_error_is_monotone_for_any_network(grid: PoissonGrid) -> None:
    A = grid.matrix()
    b = divergence_rhs(grid.mask, 1, seed=1)[0]
    xs = spla.spsolve(sp.csc_array(A), b)
    errs: list[float] = []

    def record(x: np.ndarray) -> None:
        e = x - xs
        errs.append(float(e @ (A @ e)))

    torch.manual_seed(0)
    res = dcdm(A, b, DirectionNet(channels=4, fine=2, coarse=1, post=1), grid, tol=1e-6, max_iter=60, callback=record)
    assert res.iterations == len(errs) > 5
    e0 = float(xs @ (A @ xs))
    seq = np.array([e0, *errs])
    assert (np.diff(seq) <= 1e-12 * e0).all() and seq[1] < 0.99 * e0  # an untrained net stalls, but never climbs
    np.testing.assert_allclose(res.history[0], 1.0)


def test_save_load_round_trip(tmp_path: Path, grid: PoissonGrid) -> None:
    torch.manual_seed(1)
    net = DirectionNet(channels=4, fine=2, coarse=2, post=1)
    path = tmp_path / "net.pt"
    save_direction_net(net, path, note="test")
    back = load_direction_net(path)
    assert back.config == net.config
    r = grid.to_grid(torch.ones(grid.n))
    m = torch.from_numpy(grid.mask)[None, None]
    torch.testing.assert_close(back(r, m), net(r, m).detach())
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_direction_net(tmp_path / "missing.pt")


def test_learned_bad_input(grid: PoissonGrid) -> None:
    trapped = np.ones((8, 8), dtype=bool)
    trapped[2:7, 2] = trapped[2:7, 6] = trapped[2, 2:7] = trapped[6, 2:7] = False
    with pytest.raises(ValueError, match="do not reach"):
        PoissonGrid.build(trapped)
    assert PoissonGrid.build(fill_pockets(trapped)).n == trapped.sum() - 9
    with pytest.raises(ValueError, match="boolean"):
        PoissonGrid.build(np.ones((4, 4)))
    A = grid.matrix()
    net = DirectionNet(channels=2, fine=1, coarse=1, post=1)
    with pytest.raises(ValueError, match="fluid cells"):
        dcdm(laplacian_2d(3), np.ones(9), net, grid)
    with pytest.raises(ValueError, match="shape"):
        dcdm(A, np.ones(grid.n + 1), net, grid)
    with pytest.raises(ValueError, match="NaN"):
        dcdm(A, np.full(grid.n, np.nan), net, grid)
    with pytest.raises(TypeError, match="DirectionNet"):
        dcdm(A, np.ones(grid.n), object(), grid)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        DirectionNet(channels=0)
    with pytest.raises(ValueError, match="even"):
        net(torch.ones(1, 1, 5, 5), torch.ones(1, 1, 5, 5))
    with pytest.raises(TypeError, match="PoissonGrid"):
        dcdm(A, np.ones(grid.n), net, object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fluid cells"):
        grid.to_grid(np.ones(grid.n + 1))
    with pytest.raises(ValueError, match="symmetric"):
        lanczos_ritz(A + sp.csr_array(([1.0], ([0], [1])), shape=A.shape), 5)
    with pytest.raises(ValueError, match="NaN"):
        lanczos_ritz(A * np.nan, 5)
    with pytest.raises(ValueError, match="`m`"):
        lanczos_ritz(A, 0)
    ok = np.ones((4, grid.n))
    with pytest.raises(ValueError, match=r"rhs\[0\].*shape"):
        train_direction_net(net, [grid], [np.ones((4, grid.n + 1))])
    with pytest.raises(ValueError, match="NaN"):
        train_direction_net(net, [grid], [ok * np.nan])
    with pytest.raises(ValueError, match="batch"):
        train_direction_net(net, [grid], [ok], batch=0)
    with pytest.raises(ValueError, match="epochs"):
        train_direction_net(net, [grid], [ok], epochs=-1)
    with pytest.raises(ValueError, match="lr"):
        train_direction_net(net, [grid], [ok], lr=float("nan"))


def _pcg_iterations(A, b: np.ndarray, pre) -> int:  # type: ignore[no-untyped-def]
    from precond.linalg import pcg

    At = torch.sparse_csr_tensor(
        torch.from_numpy(A.indptr), torch.from_numpy(A.indices), torch.from_numpy(A.data), A.shape
    )
    _, info = pcg(lambda v: At @ v, torch.from_numpy(b), pre, tol=1e-6, max_iter=10 * A.shape[0])
    assert info.converged
    return int(info.iterations)


def _check_beats_cg_and_ic0(net: DirectionNet, size: int, layout: int, *, fallback: bool = True) -> None:
    """On the unseen layout and 3 divergence right-hand sides: DCDM converges to 1e-6 in fewer iterations than
    IC(0)-PCG, which needs fewer than CG, and its A-norm error is monotone."""
    from precond.linalg import ic0

    grid = PoissonGrid.build(obstacle_mask(size, seed=layout))
    A = grid.matrix()
    factor = ic0(A)
    for b in divergence_rhs(grid.mask, 3, seed=layout + 1):
        x_star = spla.spsolve(sp.csc_array(A), b)
        errors: list[float] = []

        def record(x: np.ndarray, x_star: np.ndarray = x_star, errors: list[float] = errors) -> None:
            e = x - x_star
            errors.append(float(e @ (A @ e)))

        res = dcdm(A, b, net, grid, tol=1e-6, max_iter=400, callback=record, fallback=fallback)
        cg = _pcg_iterations(A, b, None)
        ic = _pcg_iterations(A, b, lambda r: torch.from_numpy(factor.solve(r.numpy())))
        assert res.converged and res.iterations < ic < cg, (res.status, res.iterations, ic, cg)
        assert all(b2 <= a2 * (1 + 1e-9) + 1e-24 for a2, b2 in itertools.pairwise(errors))


@pytest.mark.parametrize("fallback", [False, True], ids=["authors-loop", "safeguarded"])
@pytest.mark.parametrize("layout", [7, 23])
def test_shipped_net_beats_cg_and_ic0_on_held_out_physics(layout: int, fallback: bool) -> None:
    """The shipped 32² checkpoint (trained on layouts 100–107 with Ritz right-hand sides) on an unseen obstacle
    layout and right-hand sides from the physics distribution (divergence of random velocity fields), in the
    authors' loop and with the residual safeguard."""
    _check_beats_cg_and_ic0(pretrained_direction_net(32), 32, layout, fallback=fallback)


@pytest.mark.parametrize("fallback", [False, True], ids=["authors-loop", "safeguarded"])
@pytest.mark.parametrize("layout", [7, 23])
def test_shipped_64_net_beats_cg_and_ic0_on_held_out_physics(layout: int, fallback: bool) -> None:
    """The same for the shipped 64² checkpoint (16 layouts, 3000 steps) on the 64² grid."""
    _check_beats_cg_and_ic0(pretrained_direction_net(64), 64, layout, fallback=fallback)


def test_safeguard_turns_a_stalled_net_into_a_converging_solver() -> None:
    """Off its training distribution (the 32² network on a 64² grid, layout 7) the authors' loop stalls (the
    residual stops falling above 1e-6 and the cap is hit) on some right-hand sides; the safeguarded loop
    converges on all of them, in fewer iterations than CG, with a monotone A-norm error."""
    net, grid = pretrained_direction_net(32), PoissonGrid.build(obstacle_mask(64, seed=7))
    A = grid.matrix()
    B = divergence_rhs(grid.mask, 3, seed=8)
    authors = [dcdm(A, b, net, grid, tol=1e-6, max_iter=300, fallback=False) for b in B]
    assert sum(r.status == "max_iter" for r in authors) >= 1
    assert all(r.fallbacks == 0 for r in authors)
    for b in B:
        x_star = spla.spsolve(sp.csc_array(A), b)
        errors: list[float] = []
        res = dcdm(
            A,
            b,
            net,
            grid,
            tol=1e-6,
            max_iter=300,
            callback=lambda x, e=errors, xs=x_star: e.append(float((x - xs) @ (A @ (x - xs)))),
        )
        assert res.converged and 0 < res.fallbacks < res.iterations < _pcg_iterations(A, b, None)
        assert all(b2 <= a2 * (1 + 1e-9) + 1e-24 for a2, b2 in itertools.pairwise(errors))


def test_shipped_checkpoints_per_grid_size() -> None:
    assert sorted(CHECKPOINTS) == [32, 64] and PRETRAINED == CHECKPOINTS[32]
    for size, path in CHECKPOINTS.items():
        assert path.stat().st_size < 1_000_000
        meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
        assert meta["trained_by"] == "benchmarks/train_dcdm.py" and meta["args"]["size"] == str(size)
    # the no-argument forms are the 32² network
    r = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 32, 32))).float()
    m = torch.ones(1, 1, 32, 32)
    torch.testing.assert_close(pretrained()(r, m), pretrained_direction_net(32)(r, m), rtol=0, atol=0)
    torch.testing.assert_close(load_direction_net(PRETRAINED)(r, m), pretrained()(r, m), rtol=0, atol=0)
    assert not torch.equal(pretrained_direction_net(64)(r, m), pretrained()(r, m))
    for bad in (48, 0, True, "32", 32.0):
        with pytest.raises(ValueError, match=r"shipped: 32, 64.*train_dcdm\.py --size"):
            pretrained_direction_net(bad)  # type: ignore[arg-type]
