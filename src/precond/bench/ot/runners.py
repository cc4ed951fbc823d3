"""The entropic OT benchmark's runners, one per library, executed inside the budgeted child process.

Methods: ``precond sinkhorn`` (scaling-domain Sinkhorn), ``precond sinkhorn_log`` and ``precond sns`` (defaults,
float64); POT ``sinkhorn`` (Sinkhorn–Knopp, underflows at small ε: a NaN/inf plan counts as error ∞),
``sinkhorn_log``, ``sinkhorn_stabilized`` and ``sinkhorn_epsilon_scaling``; RegOT ``sinkhorn_ssns`` and
``sinkhorn_sparse_newton``. A method whose library is missing is skipped with a note (:func:`available_methods`).

Each runner calibrates an iteration cap (budget / per-iteration time of a short run) so that well-behaved methods
stop on their own near the budget, calls ``started()`` and times only the solve. Stopping thresholds are set so
that each library's own criterion implies the target (POT: L2 column error ``≤ 1e-8/√n``, checked every 10
iterations; RegOT: ‖gradient‖₂ ``≤ 1e-8/√(2n)``); the *reported* error is always ours (:func:`l1_error`).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from precond.bench.ot.problems import TARGET, l1_error, make_problem

__all__ = ["METHODS", "RUNNERS", "available_methods", "method_spec", "pot_available", "solve"]

#: benchmark name -> (library, the library's method name)
METHODS: dict[str, tuple[str, str]] = {
    "precond sinkhorn": ("precond", "sinkhorn"),
    "precond sinkhorn_log": ("precond", "sinkhorn_log"),
    "precond sns": ("precond", "sns"),
    "POT sinkhorn": ("pot", "sinkhorn"),
    "POT sinkhorn_log": ("pot", "sinkhorn_log"),
    "POT sinkhorn_stabilized": ("pot", "sinkhorn_stabilized"),
    "POT sinkhorn_epsilon_scaling": ("pot", "sinkhorn_epsilon_scaling"),
    "RegOT sinkhorn_ssns": ("regot", "sinkhorn_ssns"),
    "RegOT sinkhorn_sparse_newton": ("regot", "sinkhorn_sparse_newton"),
}
#: entries of a convergence history kept in the JSON record
HISTORY_POINTS = 400

#: ``runner(method, a, b, M, reg, budget, started) -> result dict``
Runner = Callable[[str, np.ndarray, np.ndarray, np.ndarray, float, float, Callable[[], None]], dict]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _thin(history: Sequence[tuple[int, float, float]], points: int = HISTORY_POINTS) -> list[tuple[int, float, float]]:
    """At most ``points`` entries of a history, evenly spaced, first and last kept."""
    if len(history) <= points:
        return list(history)
    keep = np.unique(np.linspace(0, len(history) - 1, points).round().astype(int))
    return [history[i] for i in keep]


def _per_iteration(history: Sequence[tuple[Any, ...]], seconds: float, iterations: int) -> float:
    """Seconds per iteration from a calibration run's history: the median over its entries (setup excluded,
    robust to a busy moment), else its total time over its iterations."""
    steps = [
        (t1 - t0) / (i1 - i0) for (i0, _, t0, *_), (i1, _, t1, *_) in itertools.pairwise(history) if i1 > i0 and t1 > t0
    ]
    if steps:
        return float(np.median(steps))
    return seconds / max(1, iterations)


def _calibrate(run: Callable[[int], Any], k1: int, k2: int) -> float:
    """Seconds per iteration of ``run(k)`` (k iterations): after a 1-iteration warm-up, from ``k1`` iterations
    when they take over a second, else from the difference of ``k2`` and ``k1`` iterations (call overhead out)."""
    run(1)
    _, t1 = _timed(lambda: run(k1))
    if t1 > 1.0:
        return t1 / k1
    _, t2 = _timed(lambda: run(k2))
    per = (t2 - t1) / (k2 - k1)
    return per if per > 0 else max(t2 / k2, 1e-9)


def run_ours(
    method: str, a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float, budget: float, started: Callable[[], None]
) -> dict:
    import torch

    from precond.ot import sinkhorn

    at, bt, mt = (torch.as_tensor(v) for v in (a, b, M))
    # SNS's first 20 iterations are its Sinkhorn warm-up, its cheapest: a Newton stage that does not converge in
    # time is ended by the hard budget rather than by this cap
    sinkhorn(at, bt, mt, reg, method=method, tol=1e-300, max_iter=2, warn=False)  # warm-up
    calib, t_cal = _timed(lambda: sinkhorn(at, bt, mt, reg, method=method, tol=1e-300, max_iter=20, warn=False))
    per_iter = _per_iteration(calib.history, t_cal, calib.iterations)
    cap = max(50, int(budget / per_iter))
    started()
    res, secs = _timed(lambda: sinkhorn(at, bt, mt, reg, method=method, tol=TARGET, max_iter=cap, warn=False))
    return {
        "seconds": secs,
        "iterations": int(res.iterations),
        "iteration_cap": cap,
        "sinkhorn_iterations": int(res.sinkhorn_iterations),
        "newton_iterations": int(res.newton_iterations),
        "evaluations": int(res.evaluations),
        "cg_iterations": int(res.cg_iterations),
        "converged": bool(res.converged),
        "error": l1_error(res.plan.numpy(), a, b),
        "history": _thin([(int(i), float(e), float(s)) for i, e, s, _ in res.history]),
    }


def _import_pot() -> Any:
    import ot

    if not hasattr(ot, "sinkhorn"):  # e.g. benchmarks/ot.py shadowing POT
        raise ImportError(f"`import ot` found {getattr(ot, '__file__', '?')}, not POT")
    return ot


def run_pot(
    method: str, a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float, budget: float, started: Callable[[], None]
) -> dict:
    ot = _import_pot()
    n = len(a)
    thr = TARGET / math.sqrt(n)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if method == "sinkhorn_epsilon_scaling":
            # POT runs at least 35 outer levels of up to ``inner`` sinkhorn_stabilized iterations each, whatever
            # numItermax says: calibrate the inner solver; beyond 35 levels' worth the hard budget decides
            inner = 100
            per_inner = _calibrate(
                lambda k: ot.sinkhorn(a, b, M, reg, method="sinkhorn_stabilized", numItermax=k, stopThr=0.0), 10, 30
            )
            outer = max(35, int(budget / (per_inner * inner)))
            # its criterion is ‖col err‖₂² + ‖row err‖₂², which implies L1 ≤ 1e-8 at (1e-8/√(2n))²
            stop = (TARGET / math.sqrt(2 * n)) ** 2
            started()
            (plan, log), secs = _timed(
                lambda: ot.sinkhorn(
                    a, b, M, reg, method=method, numItermax=outer, numInnerItermax=inner, stopThr=stop, log=True
                )
            )
            its = int(log.get("niter", outer)) * inner
            cap = outer * inner
        else:
            per_iter = _calibrate(lambda k: ot.sinkhorn(a, b, M, reg, method=method, numItermax=k, stopThr=0.0), 10, 30)
            cap = max(20, int(budget / per_iter))
            started()
            (plan, log), secs = _timed(
                lambda: ot.sinkhorn(a, b, M, reg, method=method, numItermax=cap, stopThr=thr, log=True)
            )
            its = int(log.get("niter", log.get("n_iter", cap)))
        error = l1_error(np.asarray(plan), a, b)
    return {"seconds": secs, "iterations": its, "iteration_cap": cap, "error": error}


def run_regot(
    method: str, a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float, budget: float, started: Callable[[], None]
) -> dict:
    import regot

    fn = getattr(regot, method)
    mf = np.asfortranarray(M)
    cap = max(10, int(budget / _calibrate(lambda k: fn(mf, a, b, reg, tol=1e-300, max_iter=k), 3, 9)))
    started()
    res, secs = _timed(lambda: fn(mf, a, b, reg, tol=TARGET / math.sqrt(2 * len(a)), max_iter=cap))
    return {"seconds": secs, "iterations": int(res.niter), "iteration_cap": cap, "error": l1_error(res.plan, a, b)}


RUNNERS: dict[str, Runner] = {"precond": run_ours, "pot": run_pot, "regot": run_regot}


def method_spec(name: str) -> tuple[str, str]:
    """``(library, method)`` of the benchmark method ``name``; :class:`ValueError` naming the choices if unknown."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def solve(name: str, kind: str, n: int, reg: float, seed: int, budget: float, *, started: Callable[[], None]) -> dict:
    """The budgeted child's job: build problem ``(kind, n, seed)``, calibrate, call ``started()``, solve with
    method ``name``; the result dict has ``seconds``, ``iterations``, ``iteration_cap``, ``error``, ``size``."""
    library, method = method_spec(name)
    a, b, M = make_problem(kind, n, seed)
    out = RUNNERS[library](method, a, b, M, reg, budget, started)
    out["size"] = len(a)
    return out


def pot_available() -> bool:
    """POT is importable as ``ot`` (a package, so not a stray ``ot.py`` such as benchmarks/ot.py)."""
    spec = importlib.util.find_spec("ot")
    return spec is not None and spec.submodule_search_locations is not None


def available_methods(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``names`` without the methods that cannot run here, and one note per reason."""
    from precond.ot import METHODS as OURS

    keep, notes = [], []
    missing_ours = [m for m in names if METHODS[m][0] == "precond" and METHODS[m][1] not in OURS]
    if missing_ours:
        notes.append(f"note: precond.ot has no {', '.join(missing_ours)} yet (it has {', '.join(OURS)}); skipped")
    has_pot, has_regot = pot_available(), importlib.util.find_spec("regot") is not None
    if not has_pot and any(METHODS[m][0] == "pot" for m in names):
        notes.append("note: POT (`import ot`) is not installed; running without POT's methods")
    if not has_regot and any(METHODS[m][0] == "regot" for m in names):
        notes.append("note: RegOT is not installed; running without its methods")
    for m in names:
        library = METHODS[m][0]
        if m in missing_ours or (library == "pot" and not has_pot) or (library == "regot" and not has_regot):
            continue
        keep.append(m)
    return keep, notes
