"""Part 3 of the solvers benchmark: sketch-preconditioned LSQR (each sketch) against unpreconditioned LSQR and the
direct solves on tall ill-conditioned problems (``ill_conditioned``: log-spaced singular values, noisy ``b``).

Every solve reports its status, iterations, relative residual ``‖Ax − b‖/‖b‖``, the ratio of its residual to the
reference's and its relative error ``‖x − x_ref‖/‖x_ref‖`` against ``numpy.linalg.lstsq`` (the reference).  LSQR
runs to ``atol = btol = 1e-14`` with a cap: 200 iterations with a sketch (``lstsq``'s default), ``lsqr_iter_limit``
(default ``4 n``, ``lstsq``'s default too) without, so an ill-conditioned problem ends at the cap with status
``max_iter`` in bounded time instead of running for its ``O(cond)`` iterations.  A solve whose first run takes
over a second is timed once (:func:`~precond.bench.solvers._timing.timed`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from precond.bench.solvers._timing import timed
from precond.bench.solvers.problems import ill_conditioned

if TYPE_CHECKING:
    from precond.linalg._lstsq import Sketch

__all__ = ["CONDITIONS", "SKETCHES", "lstsq_part", "print_lstsq"]

#: Condition numbers of the benchmark's problems (the range of the issue's iteration-independence test).
CONDITIONS = (1e2, 1e6, 1e10)
SKETCHES: tuple[Sketch, ...] = ("gaussian", "sparse_sign", "srht")


def lstsq_part(
    shapes: Sequence[tuple[int, int]],
    conds: Sequence[float] = CONDITIONS,
    *,
    repeats: int = 1,
    lsqr_iter_limit: int | None = None,
) -> list[dict[str, Any]]:
    """One row per problem (shape × condition number) and method."""
    return [
        row
        for shape in shapes
        for cond in conds
        for row in _problem(shape, float(cond), repeats, lsqr_iter_limit or 4 * shape[1])
    ]


def _problem(shape: tuple[int, int], cond: float, repeats: int, lsqr_cap: int) -> list[dict[str, Any]]:
    from precond.linalg import lstsq

    A, b = ill_conditioned(shape[0], shape[1], cond, seed=0)
    ref, ref_s = timed(lambda: np.linalg.lstsq(A, b, rcond=None)[0], repeats, once_above=1.0)
    ref_res = float(np.linalg.norm(A @ ref - b))
    bn, xn = float(np.linalg.norm(b)), float(np.linalg.norm(ref))

    def row(method: str, x: np.ndarray, status: str, its: int | None, seconds: float) -> dict[str, Any]:
        res = float(np.linalg.norm(A @ x - b))
        return {
            "shape": list(shape),
            "cond": cond,
            "method": method,
            "status": status,
            "iterations": its,
            "rel_residual": res / bn,
            "residual_ratio": res / ref_res,
            "rel_error": float(np.linalg.norm(x - ref)) / xn,
            "seconds": seconds,
        }

    rows = [row("numpy lstsq", ref, "direct", None, ref_s)]
    solvers: dict[str, Callable[[], Any]] = {
        "precond direct": lambda: lstsq(A, b, "direct"),
        **{
            f"sketch_lsqr {k}": functools.partial(lstsq, A, b, "sketch_lsqr", sketch_kind=k, tol=1e-14)
            for k in SKETCHES
        },
        f"lsqr (cap {lsqr_cap})": lambda: lstsq(A, b, "lsqr", tol=1e-14, max_iter=lsqr_cap),
    }
    for name, solve in solvers.items():
        out, s = timed(solve, repeats, once_above=1.0)
        status, its = ("direct", None) if out.method == "direct" else (out.status, out.iterations)
        rows.append(row(name, np.asarray(out.solution), status, its, s))
    return rows


def print_lstsq(rows: Sequence[dict[str, Any]]) -> None:
    """The part's table."""
    head = f"{'shape':>14}{'cond':>8}{'method':>24}{'status':>16}{'iters':>7}{'rel res':>10}{'res/ref':>10}"
    print(f"\n{head}{'rel err':>10}{'seconds':>10}")
    for r in rows:
        its = "-" if r["iterations"] is None else str(r["iterations"])
        print(
            f"{tuple(r['shape'])!s:>14}{r['cond']:>8.0e}{r['method']:>24}{r['status']:>16}{its:>7}"
            f"{r['rel_residual']:>10.2e}{r['residual_ratio']:>10.6f}{r['rel_error']:>10.1e}{r['seconds']:>10.3f}"
        )
