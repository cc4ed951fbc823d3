"""``distributed_complete`` for real: 2 and 3 gloo processes on CPU against single-process ``complete``.

The workers are forked by the test (fork starts in well under a second; spawn re-imports torch per rank), join a
file-initialized gloo group with a 60 s timeout (a hang becomes an error) and run every scenario in one launch.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from precond.completion import LocalFactors, complete, distributed_complete
from tests.completion.conftest import low_rank, sample

M_ROWS, N_COLS, K = 41, 29, 3


def _problem(seed: int, count: int = 700) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    M = low_rank(M_ROWS, N_COLS, K, seed)
    rows, cols = sample(M_ROWS, N_COLS, count, seed, min_per_line=2)
    if seed in NOISELESS:  # exactly rank K: ALS converges to the rounding floor
        return rows, cols, M[rows, cols]
    noise = np.random.default_rng(seed + 7).standard_normal(rows.size)
    return rows, cols, M[rows, cols] + 0.05 * noise + 3.0


NOISELESS = {5}


def _share(n_obs: int, world: int, rank: int, seed: int) -> np.ndarray:
    """Rank ``rank``'s observations: a random scatter, unrelated to ownership (rank 0 gets none when world=3)."""
    owner = np.random.default_rng(seed).integers(1 if world == 3 else 0, world, n_obs)
    return np.nonzero(owner == rank)[0]


# name -> (problem seed, keyword arguments shared by both paths, keyword arguments of the distributed call by world)
SCENARIOS: dict[str, tuple[int, dict[str, Any], dict[int, dict[str, Any]]]] = {
    "uneven": (
        1,
        {"reg": 0.1, "max_iter": 8, "tol": 0.0},
        {
            2: {"row_bounds": [0, 30, M_ROWS], "col_bounds": [0, 5, N_COLS]},
            3: {"row_bounds": [0, 3, 33, M_ROWS], "col_bounds": [0, 0, 20, N_COLS]},
        },
    ),
    "biases_count": (2, {"reg": 0.05, "biases": True, "reg_scaling": "count", "tol": 1e-10, "max_iter": 30}, {}),
    "cg": (3, {"reg": 0.1, "solver": "cg", "max_iter": 12, "tol": 0.0}, {3: {"row_bounds": [0, 10, 11, M_ROWS]}}),
    # each rank draws its own sketches: not the same iterates, the same converged completion
    "sketch_cg": (5, {"reg": 0.0, "solver": "sketch_cg", "max_iter": 300, "tol": 1e-14}, {}),
}
#: comparison tolerance per scenario (relative to the largest entry): rounding, CG rounding, CG tolerance
TOLERANCE = {"cg": 1e-8}


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
        )
        for name, (seed, kw, extra) in SCENARIOS.items():
            rows, cols, vals = _problem(seed)
            mine = _share(rows.size, world, rank, seed)
            res = distributed_complete(
                rows[mine], cols[mine], vals[mine], (M_ROWS, N_COLS), K, **kw, **extra.get(world, {})
            )
            out[name] = res
        # Duplicated pairs held by different ranks are averaged across ranks.
        rows, cols, vals = _problem(4)
        dup = np.arange(0, rows.size, 9)
        rows2, cols2 = np.concatenate([rows, rows[dup]]), np.concatenate([cols, cols[dup]])
        vals2 = np.concatenate([vals, vals[dup] + 1.0])
        mine = _share(rows2.size, world, rank, 4)
        out["mean"] = distributed_complete(
            rows2[mine], cols2[mine], vals2[mine], (M_ROWS, N_COLS), K, duplicates="mean", max_iter=6, tol=0.0
        )
        out["local"] = distributed_complete(
            rows2[mine],
            cols2[mine],
            vals2[mine],
            (M_ROWS, N_COLS),
            K,
            duplicates="mean",
            max_iter=6,
            tol=0.0,
            biases=True,
            gather=False,
        )
        # Refusals reach every rank (no hang): a duplicate split across ranks, a bad index on one rank only.
        errors = []
        for case in ("duplicate", "index", "bounds", "args"):
            r, c, v = rows2[mine], cols2[mine], vals2[mine]
            kw2: dict[str, Any] = {}
            if case == "index" and rank == world - 1:
                c = c.copy()
                c[0] = N_COLS
            if case == "bounds":
                kw2["row_bounds"] = [0, M_ROWS + 1] + [M_ROWS] * (world - 1)
            if case == "args":
                kw2["reg"] = 0.1 + rank
            try:
                distributed_complete(r, c, v, (M_ROWS, N_COLS), K, max_iter=2, **kw2)
                errors.append(None)
            except ValueError as err:
                errors.append(str(err))
        out["errors"] = errors
        dist.destroy_process_group()
    except Exception:  # reported to the parent
        out = {"crash": traceback.format_exc()}
    torch.save(out, f"{tmp}/{rank}.pt")


def _launch(world: int, tmp: Path) -> list[dict[str, Any]]:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(rank, world, str(tmp))) for rank in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join()
    assert not hung, f"{len(hung)} worker(s) hung"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    results = [torch.load(tmp / f"{rank}.pt", weights_only=False) for rank in range(world)]
    for res in results:
        assert "crash" not in res, res.get("crash")
    return results


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    err = float((a.double() - b.double()).abs().max())
    assert err <= tol * max(1.0, float(b.double().abs().max())), err


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_equals_single_process(world: int, tmp_path: Path) -> None:
    results = _launch(world, tmp_path)
    for name, (seed, kw, _) in SCENARIOS.items():
        rows, cols, vals = _problem(seed)
        ref = complete(rows, cols, vals, (M_ROWS, N_COLS), K, **kw)
        tol = TOLERANCE.get(name, 1e-10)
        for res in results:
            got = res[name]
            if name == "sketch_cg":  # other sketches, other iterates: the same converged completion
                assert got.converged and ref.converged
                _close(got.U @ got.V.T, ref.U @ ref.V.T, 1e-6)
                assert got.objective == pytest.approx(ref.objective, rel=1e-9)
                continue
            assert got.iterations == ref.iterations, name
            assert got.converged == ref.converged, name
            _close(got.U, ref.U, tol)
            _close(got.V, ref.V, tol)
            if ref.row_bias is not None:
                _close(got.row_bias, ref.row_bias, tol)
                _close(got.col_bias, ref.col_bias, tol)
                assert got.mean == pytest.approx(ref.mean, rel=1e-12)
            assert got.objective == pytest.approx(ref.objective, rel=tol)
            assert [h[1] for h in got.history] == pytest.approx([h[1] for h in ref.history], rel=max(tol, 1e-10))

    rows, cols, vals = _problem(4)
    dup = np.arange(0, rows.size, 9)
    rows2, cols2 = np.concatenate([rows, rows[dup]]), np.concatenate([cols, cols[dup]])
    vals2 = np.concatenate([vals, vals[dup] + 1.0])
    ref = complete(rows2, cols2, vals2, (M_ROWS, N_COLS), K, duplicates="mean", max_iter=6, tol=0.0)
    ref_b = complete(rows2, cols2, vals2, (M_ROWS, N_COLS), K, duplicates="mean", max_iter=6, tol=0.0, biases=True)
    covered_r, covered_c = torch.zeros(M_ROWS, dtype=torch.bool), torch.zeros(N_COLS, dtype=torch.bool)
    for res in results:
        _close(res["mean"].U, ref.U, 1e-10)
        _close(res["mean"].V, ref.V, 1e-10)
        loc = res["local"]
        assert isinstance(loc, LocalFactors)
        (ra, rz), (ca, cz) = loc.row_range, loc.col_range
        _close(loc.U, ref_b.U[ra:rz], 1e-10)
        _close(loc.V, ref_b.V[ca:cz], 1e-10)
        _close(loc.row_bias, ref_b.row_bias[ra:rz], 1e-10)
        _close(loc.col_bias, ref_b.col_bias[ca:cz], 1e-10)
        assert not covered_r[ra:rz].any() and not covered_c[ca:cz].any()
        covered_r[ra:rz], covered_c[ca:cz] = True, True
    assert covered_r.all() and covered_c.all()

    for res in results:
        dup_err, index_err, bounds_err, args_err = res["errors"]
        assert dup_err is not None and "more than once" in dup_err
        assert index_err is not None and ("out of range" in index_err or "other rank" in index_err)
        assert bounds_err is not None and "row_bounds" in bounds_err
        assert args_err is not None and "same arguments" in args_err
    assert "out of range" in results[-1]["errors"][1]


def test_needs_an_initialized_group() -> None:
    with pytest.raises(RuntimeError, match="init_process_group"):
        distributed_complete([0], [0], [1.0], (2, 2), 1)
