"""The solvers benchmark (issue 16): three parts, one run, side by side.

1. Learning to Relax: Tsallis-INF and ChebCB against fixed ω (1.0 … 1.8), Young's ω* and the instance-optimal ω
   on the synthetic shifted-Laplacian sequence (high variance, tol 1e-8): cumulative SOR iterations vs instance
   (plotted), from the cost table of every grid ω on every instance.
2. DCDM (the shipped network trained on the same grid size) against CG, Jacobi-PCG, IC(0)-PCG and pyamg
   smoothed-aggregation PCG on pressure-Poisson grids with obstacles (32² and 64², unseen layouts, divergence
   right-hand sides, tol 1e-6): iterations and wall-clock (setup and solve) reported separately.
3. Sketched LSQR (Gaussian, sparse-sign, SRHT) against ``scipy.sparse.linalg.lsqr`` (capped) and the direct
   solves on tall ill-conditioned problems (20000×200 and 100000×500; cond 1e2, 1e6, 1e10): status, iterations,
   relative residual and error against ``numpy.linalg.lstsq``, seconds (:mod:`.least_squares`).

Wall-clock is measured in-process with ``time.perf_counter`` after a warm-up; run it on a quiet machine.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from precond.bench import versions
from precond.bench.solvers._timing import timed
from precond.bench.solvers.least_squares import CONDITIONS, lstsq_part, print_lstsq
from precond.bench.solvers.problems import divergence_rhs, obstacle_mask, shifted_laplacian_sequence

__all__ = ["DEFAULT_OUT", "dcdm_part", "lstsq_part", "relax_part", "run_benchmark"]

DEFAULT_OUT = Path("precond-bench-results")


def relax_part(T: int, seeds: int = 3) -> dict[str, Any]:
    """Cumulative iterations per instance of every comparator (part 1)."""
    import scipy.sparse as sp

    from precond.linalg import DEFAULT_GRID, ChebCB, SparseFamily, TsallisINF, replay, sor_batch, young_omega

    seq = shifted_laplacian_sequence(T, "high", seed=0)
    fam = SparseFamily.build(seq.K)
    d = DEFAULT_GRID.size
    res = sor_batch(fam, np.repeat(seq.b, d, 0), np.tile(DEFAULT_GRID, T), shift=np.repeat(seq.shifts, d), tol=1e-8)
    C = res.iterations.reshape(T, d).astype(float)
    rows = np.arange(T)
    omega_star = np.array([young_omega(seq.K + c * sp.eye_array(seq.K.shape[0])) for c in seq.shifts[:1]])
    beta = 4 * np.cos(np.pi / 11) / (4 + seq.shifts)  # Young's ω* of K + cI in closed form (β = ρ_J(K)·4/(4+c))
    star = 1 + (beta / (1 + np.sqrt(1 - beta**2))) ** 2
    assert abs(star[0] - omega_star[0]) < 1e-9
    young = sor_batch(fam, seq.b, star, shift=seq.shifts, tol=1e-8).iterations.astype(float)
    curves: dict[str, np.ndarray] = {f"ω={w:.2f}": C[:, j] for j, w in enumerate(DEFAULT_GRID) if j % 4 == 0}
    curves["best fixed ω"] = C[:, int(np.argmin(C.sum(0)))]
    curves["Young ω*"] = young
    curves["instance-optimal"] = C.min(1)
    curves["Tsallis-INF"] = np.mean([C[rows, replay(TsallisINF(seed=s), C)] for s in range(seeds)], 0)
    curves["ChebCB"] = np.mean([C[rows, replay(ChebCB((-0.15, 0.45), seed=s), C, seq.shifts)] for s in range(seeds)], 0)
    return {
        "T": T,
        "best_fixed_omega": float(DEFAULT_GRID[int(np.argmin(C.sum(0)))]),
        "mean_iterations": {k: float(v.mean()) for k, v in curves.items()},
        "cumulative": {k: np.cumsum(v).tolist() for k, v in curves.items()},
    }


def dcdm_part(sizes: tuple[int, ...], rhs: int, repeats: int) -> list[dict[str, Any]]:
    """Iterations and seconds (setup, solve) of every method per grid size (part 2); DCDM uses the shipped network
    trained on that grid size."""
    from precond.linalg.learned import pretrained_direction_net

    nets = {m: pretrained_direction_net(m) for m in sizes}  # fails early for a size without a checkpoint
    return [row for m in sizes for row in _dcdm_size(m, nets[m], rhs, repeats)]


def _dcdm_size(m: int, net: Any, rhs: int, repeats: int) -> list[dict[str, Any]]:
    import torch

    try:  # a benchmark peer (requirements/peers.txt), not a dependency: its row is left out without it
        import pyamg
    except ImportError:
        pyamg = None

    from precond.linalg import pcg
    from precond.linalg._ic0 import ic0
    from precond.linalg.learned import PoissonGrid, dcdm

    grid = PoissonGrid.build(obstacle_mask(m, seed=7))  # a layout not used in training
    A = grid.matrix()
    At = torch.sparse_csr_tensor(
        torch.from_numpy(A.indptr), torch.from_numpy(A.indices), torch.from_numpy(A.data), A.shape
    )
    B = divergence_rhs(grid.mask, rhs, seed=11)

    def cg_all(pre: Any) -> list[tuple[int, bool]]:
        out = []
        for b in B:
            _, info = pcg(lambda v: At @ v, torch.from_numpy(b), pre, tol=1e-6, max_iter=10 * grid.n)
            out.append((int(info.iterations), bool(info.converged)))
        return out

    def ic0_pre() -> Any:
        f = ic0(A)
        return lambda r: torch.from_numpy(f.solve(r.numpy()))

    def amg_pre() -> Any:
        ml = pyamg.smoothed_aggregation_solver(A).aspreconditioner()
        return lambda r: torch.from_numpy(ml @ r.numpy())

    setups: dict[str, Callable[[], Any]] = {
        "CG": lambda: None,
        "Jacobi-PCG": lambda: torch.from_numpy(1 / A.diagonal()),
        "IC(0)-PCG": ic0_pre,
    }
    if pyamg is not None:
        setups["pyamg SA-PCG"] = amg_pre
    else:
        warnings.warn(
            "pyamg is not installed: the AMG row is left out (pip install -r requirements/peers.txt)", stacklevel=2
        )
    rows = []
    for name, setup in setups.items():
        pre, setup_s = timed(setup, repeats)
        runs, solve_s = timed(functools.partial(cg_all, pre), repeats)
        rows.append(_dcdm_row(m, grid.n, name, runs, setup_s, solve_s / rhs))

    def dcdm_all() -> list[tuple[int, bool]]:
        return [(r.iterations, r.converged) for r in (dcdm(A, b, net, grid, tol=1e-6) for b in B)]

    runs, solve_s = timed(dcdm_all, repeats)
    rows.append(_dcdm_row(m, grid.n, f"DCDM ({m}² net)", runs, 0.0, solve_s / rhs))
    return rows


def _dcdm_row(m: int, n: int, name: str, runs: list[tuple[int, bool]], setup: float, solve: float) -> dict[str, Any]:
    """Mean iterations over the right-hand sides (capped runs count their cap) and how many converged."""
    return {
        "grid": m,
        "n": n,
        "method": name,
        "iterations": float(np.mean([it for it, _ in runs])),
        "converged": sum(ok for _, ok in runs),
        "rhs": len(runs),
        "setup_s": setup,
        "solve_s": solve,
    }


def _plot(relax: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, v in relax["cumulative"].items():
        ax.plot(np.arange(1, len(v) + 1), v, label=k)
    ax.set_xlabel("instance")
    ax.set_ylabel("cumulative SOR iterations")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_benchmark(
    *, quick: bool, out: Path = DEFAULT_OUT, command: str = "", threads: int = 1, lsqr_iter_limit: int | None = None
) -> dict[str, Any]:
    """All three parts; prints tables, writes ``solvers[_quick].{json,png}``.  ``lsqr_iter_limit``: the cap of the
    unpreconditioned LSQR (default 4 × columns)."""
    import torch

    from precond.bench.environment import machine_record

    torch.set_num_threads(threads)
    start = machine_record(("precond", "numpy", "scipy", "torch", "pyamg"))
    relax = relax_part(200 if quick else 5000, seeds=1 if quick else 10)
    print("Learning to Relax (high variance, mean SOR iterations per instance):")
    for k, v in relax["mean_iterations"].items():
        print(f"  {k:<20}{v:10.1f}")
    dc = dcdm_part((32,) if quick else (32, 64), rhs=2 if quick else 10, repeats=1 if quick else 3)
    print(f"\n{'grid':>5}{'method':>22}{'iters':>9}{'conv':>7}{'setup ms':>10}{'solve ms':>10}")
    for r in dc:
        ms = f"{1e3 * r['setup_s']:>10.2f}{1e3 * r['solve_s']:>10.2f}"
        conv = f"{r['converged']}/{r['rhs']}"
        print(f"{r['grid']:>5}{r['method']:>22}{r['iterations']:>9.1f}{conv:>7}{ms}")
    shapes = ((2000, 50),) if quick else ((20000, 200), (100000, 500))
    ls = lstsq_part(shapes, CONDITIONS, repeats=1 if quick else 3, lsqr_iter_limit=lsqr_iter_limit)
    print_lstsq(ls)
    stem = "solvers_quick" if quick else "solvers"
    out.mkdir(parents=True, exist_ok=True)
    png = _plot(relax, out / f"{stem}.png")
    meta = {
        "quick": quick,
        "command": command,
        "threads": threads,
        "lsqr_iter_limit": lsqr_iter_limit or "4 × columns",
        **{k: start[k] for k in ("machine", "cpu_count", "load_average", "python", "versions")},
        "code_version": versions.code_version("solvers"),
    }
    payload = {"meta": meta, "relax": relax, "dcdm": dc, "lstsq": ls, "plot": png.name if png else None}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    print(f"\nrecord: {out / f'{stem}.json'}" + (f"\nplot: {png}" if png else ""))
    return payload
