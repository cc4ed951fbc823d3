"""Entropic OT to L1 marginal error 1e-8: ``precond.ot`` side by side with POT and RegOT, under a hard time budget.

Used by ``precond bench ot`` (quick grid by default) and ``benchmarks/ot.py`` (full grid by default).

Problems (costs normalized to max 1, uniform weights unless stated, seeded and deterministic):

* ``assignment``: random assignment, ``M_ij ~ U[0, 1]`` (the SNS paper's first case);
* ``gauss``: two Gaussian point clouds in 2-D (``N(0, I)`` and ``N((1, 1), I)``), squared Euclidean cost;
* ``density1d_w1`` / ``density1d_w2``: two Gaussian-mixture densities on a regular 1-D grid of n points,
  ``|x − y|`` / ``|x − y|²`` costs;
* ``density2d_w2``: two Gaussian-mixture densities on a ``k × k`` grid, ``k = ⌊√n⌋`` (so ``k²`` points, e.g.
  1936 for n = 2000), squared Euclidean cost.

Methods: ``precond sinkhorn`` (scaling-domain Sinkhorn, skipped while ``precond.ot`` lacks it),
``precond sinkhorn_log`` and ``precond sns`` (defaults, float64); POT ``sinkhorn`` (Sinkhorn–Knopp, underflows
at small ε: a NaN/inf plan counts as error ∞), ``sinkhorn_log``, ``sinkhorn_stabilized`` and
``sinkhorn_epsilon_scaling``; RegOT ``sinkhorn_ssns`` and ``sinkhorn_sparse_newton`` (if importable).

Fairness rules:

* every (method, problem) runs in its own spawned child process with ``--threads`` torch/OpenMP/MKL/OpenBLAS
  threads; the child regenerates the problem from ``(kind, n, seed)``, calibrates, then tells the parent that
  the solve starts and times only the solve;
* the budget is hard: the parent kills a child still solving ``budget`` seconds (plus a short grace for
  computing the error and sending the result) after the solve started, and records it as ``timed_out`` with
  ``seconds = budget``; a solve that finishes after the budget also counts as timed out (not reached);
* iteration caps are still calibrated (budget / per-iteration time of a short run) so that well-behaved methods
  stop on their own near the budget (SNS's from its Sinkhorn warm-up, its cheapest iterations; POT's
  ``sinkhorn_epsilon_scaling`` always runs at least 35 ε levels, so the hard budget is what stops it);
* stopping thresholds are set so that each library's own criterion implies the target (POT: L2 column error
  ``≤ 1e-8/√n``, checked every 10 iterations; RegOT: ‖gradient‖₂ ``≤ 1e-8/√(2n)``), and the *reported* error
  is always ours, ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁`` on the returned plan: a method "reached" the target when that is
  ``≤ 1e-8`` within the budget.  Iterations are each library's own count (POT's are multiples of 10; one
  SNS/RegOT Newton iteration costs a few dense passes, see ``evaluations`` for ours).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import platform
import shlex
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from precond._args import int_at_least, positive_float

TARGET = 1e-8
KINDS = ("assignment", "gauss", "density1d_w1", "density1d_w2", "density2d_w2")
Problem = tuple[str, int, float]
FULL: list[Problem] = [(k, 2000, eps) for k in KINDS for eps in (1e-1, 1e-2, 1e-3)] + [
    (k, n, 1e-2) for k in ("assignment", "gauss") for n in (500, 5000)
]
QUICK: list[Problem] = [(k, 500, eps) for k in ("assignment", "gauss", "density1d_w2") for eps in (1e-2, 1e-3)]
DEFAULT_BUDGET = {True: 3.0, False: 10.0}  # keyed by "quick"
DEFAULT_OUT = Path("precond-bench-results")
#: seconds past the budget a child gets to compute the error of its plan and send its result
GRACE_S = 1.0
#: seconds a child gets to start Python, import its library, build the problem and calibrate (not timed)
SETUP_TIMEOUT_S = 180.0
HISTORY_POINTS = 400
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

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
#: POT's methods named in the issue (the stable ones); "best POT overall" also includes plain ``sinkhorn``
POT_ISSUE = ("POT sinkhorn_log", "POT sinkhorn_stabilized", "POT sinkhorn_epsilon_scaling")
SHORT = {
    "precond sinkhorn": "ours-sk",
    "precond sinkhorn_log": "ours-log",
    "precond sns": "ours-sns",
    "POT sinkhorn": "POT-sk",
    "POT sinkhorn_log": "POT-log",
    "POT sinkhorn_stabilized": "POT-stab",
    "POT sinkhorn_epsilon_scaling": "POT-eps",
    "RegOT sinkhorn_ssns": "RegOT-ssns",
    "RegOT sinkhorn_sparse_newton": "RegOT-newton",
}
#: internal methods for the tests (they exist in the children too because children import this module)
_TEST_METHODS: dict[str, tuple[str, str]] = {"_sleep": ("test", "sleep"), "_raise": ("test", "raise")}

Runner = Callable[[str, np.ndarray, np.ndarray, np.ndarray, float, float, Callable[[], None]], dict]


# ----------------------------------------------------------------------------------------------- problems


def _dist(x: np.ndarray, y: np.ndarray, metric: str = "sqeuclidean") -> np.ndarray:
    """Pairwise (squared) Euclidean distances, one coordinate at a time (exact, no ``|x|² + |y|² − 2xy``)."""
    d2 = np.zeros((len(x), len(y)))
    for k in range(x.shape[1]):
        diff = np.subtract.outer(x[:, k], y[:, k])
        np.square(diff, out=diff)
        d2 += diff
    return np.sqrt(d2) if metric == "euclidean" else d2


def _mixture(x: np.ndarray, centers: list[tuple[float, ...]], scale: float) -> np.ndarray:
    d = np.zeros(len(x))
    for c in centers:
        d += np.exp(-((x - np.asarray(c)) ** 2).sum(1) / (2 * scale**2))
    d += 1e-3 * d.max()  # full support
    return d / d.sum()


def make_problem(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, M)`` of problem ``kind`` with n points (``⌊√n⌋²`` for ``density2d_w2``), ``max M = 1``."""
    rng = np.random.default_rng(seed)
    if kind == "assignment":
        a = b = np.full(n, 1.0 / n)
        M = rng.random((n, n))
    elif kind == "gauss":
        x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 1.0
        a = b = np.full(n, 1.0 / n)
        M = _dist(x, y)
    elif kind in ("density1d_w1", "density1d_w2"):
        x = np.linspace(0, 1, n)[:, None]
        a = _mixture(x, [(0.2,), (0.5,)], 0.07)
        b = _mixture(x, [(0.4,), (0.8,)], 0.1)
        M = _dist(x, x, "euclidean" if kind.endswith("w1") else "sqeuclidean")
    elif kind == "density2d_w2":
        k = math.isqrt(n)
        g = np.linspace(0, 1, k)
        x = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        a = _mixture(x, [(0.25, 0.3), (0.6, 0.7)], 0.12)
        b = _mixture(x, [(0.7, 0.3), (0.3, 0.75)], 0.15)
        M = _dist(x, x)
    else:
        raise ValueError(f"unknown problem kind {kind!r}; choose from {', '.join(KINDS)}")
    return a, b, M / M.max()


def l1_error(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁``; ``inf`` for a plan with NaN or inf entries (e.g. an underflowed Sinkhorn)."""
    if not np.isfinite(plan).all():
        return math.inf
    return float(np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum())


# ------------------------------------------------------------------------------- runners (in the child)


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


def _run_test(
    method: str, a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float, budget: float, started: Callable[[], None]
) -> dict:
    """Test-only methods: ``sleep`` never finishes (to be killed), ``raise`` fails after starting."""
    started()
    if method == "raise":
        raise RuntimeError("deliberate failure")
    time.sleep(3600)
    return {}  # pragma: no cover


_RUNNERS: dict[str, Runner] = {"precond": run_ours, "pot": run_pot, "regot": run_regot, "test": _run_test}


def _spec(name: str) -> tuple[str, str]:
    if name in METHODS:
        return METHODS[name]
    if name in _TEST_METHODS:
        return _TEST_METHODS[name]
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def _exit_with_parent() -> None:
    """End this child if its parent dies (e.g. killed itself), so that no solver keeps running unobserved."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _child(conn: Connection, name: str, kind: str, n: int, reg: float, seed: int, budget: float, threads: int) -> None:
    """Body of the child process: build the problem, calibrate, send ``("start", None)``, solve, send the result."""
    try:
        _exit_with_parent()
        import torch

        torch.set_num_threads(threads)
        library, method = _spec(name)
        a, b, M = make_problem(kind, n, seed)
        out = _RUNNERS[library](method, a, b, M, reg, budget, lambda: conn.send(("start", None)))
        out["size"] = len(a)
        conn.send(("done", out))
    except BaseException:  # report everything to the parent, which records the row as failed
        conn.send(("error", traceback.format_exc(limit=4)))
    finally:
        conn.close()


# --------------------------------------------------------------------------------- parent: hard budget


@contextlib.contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """Set the BLAS/OpenMP thread variables while a child is spawned (it inherits the environment)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: str(threads) for k in THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _receive(conn: Connection, timeout: float) -> tuple[str, Any]:
    """The child's next message, ``("timeout", None)`` after ``timeout`` seconds, ``("crashed", None)`` on EOF."""
    if not conn.poll(max(0.0, timeout)):
        return "timeout", None
    try:
        message: tuple[str, Any] = conn.recv()
    except (EOFError, OSError):
        return "crashed", None
    return message


def _record(row: dict, out: dict, budget: float) -> None:
    """Put a finished child's result into ``row``: reached if its error is ``≤ TARGET`` within the budget; a solve
    that took longer than the budget counts as timed out (``seconds = budget``, the measured in ``solve_seconds``)."""
    solve = float(out["seconds"])
    row.update(out)
    if solve > budget:
        row.update(status="over_budget", timed_out=True, reached=False, seconds=budget, solve_seconds=solve)
    else:
        row["reached"] = bool(out["error"] <= TARGET)


def run_method(
    name: str,
    kind: str,
    n: int,
    reg: float,
    *,
    budget: float,
    seed: int = 0,
    threads: int = 2,
    grace: float = GRACE_S,
    setup_timeout: float = SETUP_TIMEOUT_S,
) -> dict:
    """Run one method on one problem in a spawned child under a hard budget; return the result row.

    The child's solve is killed ``budget + grace`` seconds after it reported its start; a killed or late solve
    is recorded with ``timed_out=True``, ``reached=False`` and ``seconds=budget``.
    """
    _spec(name)  # unknown names fail here, not in the child
    row: dict[str, Any] = {
        "problem": kind,
        "n": n,
        "eps": reg,
        "seed": seed,
        "method": name,
        "budget": budget,
        "threads": threads,
        "status": "ok",
        "reached": False,
        "timed_out": False,
        "killed": False,
        "iterations": None,
        "seconds": None,
        "error": None,
    }
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, name, kind, n, reg, seed, budget, threads), daemon=True)
    launched = time.perf_counter()
    with _thread_env(threads):
        proc.start()
    sender.close()
    try:
        what, payload = _receive(receiver, setup_timeout)
        if what == "start":
            row["setup_seconds"] = time.perf_counter() - launched
            what, payload = _receive(receiver, budget + grace)
            if what == "timeout":
                row.update(status="timeout", timed_out=True, killed=True, seconds=budget)
                return row
        elif what == "timeout":
            row.update(status="failed", message=f"no solve started within {setup_timeout:g} s of setup")
            return row
        if what == "done":
            _record(row, payload, budget)
        elif what == "error":
            row.update(status="failed", message=str(payload).strip().splitlines()[-1])
        else:  # crashed, or an unexpected message
            proc.join(timeout=5)
            row.update(status="failed", message=f"child exited with code {proc.exitcode}")
        return row
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receiver.close()


# ---------------------------------------------------------------------------------------- grid, output


def select_problems(
    quick: bool, kinds: Sequence[str] | None = None, ns: Sequence[int] | None = None, eps: Sequence[float] | None = None
) -> list[Problem]:
    """The preset grid restricted to ``kinds``, with every n replaced by ``ns`` and every ε by ``eps`` (deduped,
    in the grid's order).  A kind that the preset lacks gets the (n, ε) pairs of the preset's first kind.
    """
    base = QUICK if quick else FULL
    present = {k for k, _, _ in base}
    chosen = set(kinds) if kinds else present
    entries = [p for p in base if p[0] in chosen]
    for kind in dict.fromkeys(kinds or ()):
        if kind not in present:
            entries += [(kind, n, e) for k, n, e in base if k == base[0][0]]
    grid: list[Problem] = []
    for kind, n, e in entries:
        for n2 in ns or (n,):
            for e2 in eps or (e,):
                if (kind, n2, e2) not in grid:
                    grid.append((kind, n2, e2))
    return grid


HEADER = f"{'problem':<14}{'n':>6}{'eps':>7}  {'method':<30}{'iters':>8}{'seconds':>9}{'L1 err':>10}  reached"


def _s(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 1 else f"{seconds:.2f}"


def format_row(r: dict) -> str:
    its = "-" if r["iterations"] is None else str(r["iterations"])
    secs = ">budget" if r["timed_out"] else ("-" if r["seconds"] is None else _s(r["seconds"]))
    err = "-" if r["error"] is None else f"{r['error']:.1e}"
    verdict = {
        "timeout": f"NO (killed at the {r['budget']:g} s budget)",
        "over_budget": f"NO (finished after the {r['budget']:g} s budget)",
        "failed": f"FAILED: {r.get('message', '')}",
    }.get(r["status"], "yes" if r["reached"] else "NO")
    return f"{r['problem']:<14}{r['n']:>6}{r['eps']:>7.0e}  {r['method']:<30}{its:>8}{secs:>9}{err:>10}  {verdict}"


def _key(r: dict) -> Problem:
    return r["problem"], r["n"], r["eps"]


def _vs_pot(row: dict, pots: list[dict], budget: float, label: str) -> str:
    """Wall-clock speed-up of ``row`` against the fastest of ``pots`` that reached the target."""
    done = [r for r in pots if r["reached"]]
    best = min(done, key=lambda r: r["seconds"]) if done else None
    if not row["reached"]:
        if best is None:
            return f"neither it nor {label} reached 1e-8"
        return f"{label}: {best['method']} {_s(best['seconds'])} s"
    if best is None:
        return f"≥{budget / row['seconds']:.1f}× vs {label} (no POT method reached 1e-8 within the budget)"
    return f"{best['seconds'] / row['seconds']:.1f}× vs {best['method']} ({_s(best['seconds'])} s; {label})"


def _state(r: dict) -> str:
    if r["reached"]:
        return f"{_s(r['seconds'])} s, {r['iterations']} iterations"
    if r["timed_out"]:
        return f"did not reach 1e-8 (over the {r['budget']:g} s budget)"
    if r["status"] == "failed":
        return "failed"
    return f"did not reach 1e-8 (stopped at {r['error']:.1e} after {r['iterations']} iterations)"


def _summarize(rows: list[dict], budget: float) -> list[str]:
    """Per problem: SNS's iterations vs our log-Sinkhorn and its wall-clock speed-up vs POT's fastest method that
    reached 1e-8, among the issue's list and among all of POT's methods; then our scaling Sinkhorn vs POT."""
    lines = []
    for key in dict.fromkeys(_key(r) for r in rows):
        sel = {r["method"]: r for r in rows if _key(r) == key}
        head = f"{key[0]} n={key[1]} eps={key[2]:g}"
        issue = [sel[m] for m in POT_ISSUE if m in sel]
        pots = [r for m, r in sel.items() if m.startswith("POT ")]
        sns, log, fast = sel.get("precond sns"), sel.get("precond sinkhorn_log"), sel.get("precond sinkhorn")
        if sns is not None:
            parts = [f"{head}: SNS {_state(sns)}"]
            if log is not None and sns["reached"]:
                if log["iterations"] is None:
                    parts.append("log-Sinkhorn iterations unknown (killed)")
                else:
                    ratio = log["iterations"] / max(1, sns["iterations"])
                    parts.append(
                        f"{'≥' if not log['reached'] else ''}{ratio:.1f}× fewer iterations than log-Sinkhorn "
                        f"({log['iterations']})"
                    )
            if issue:
                parts.append(_vs_pot(sns, issue, budget, "POT's best of log/stabilized/eps-scaling"))
            if pots:
                parts.append(_vs_pot(sns, pots, budget, "POT's best overall"))
            lines.append("; ".join(parts))
        if fast is not None:
            parts = [f"{head}: precond sinkhorn {_state(fast)}"]
            if pots:
                parts.append(_vs_pot(fast, pots, budget, "POT's best overall"))
            lines.append("; ".join(parts))
    return lines


def format_table(rows: list[dict]) -> str:
    """Problems × methods: seconds to 1e-8, ``(err)`` when stopped short, ``>B`` over the budget, ``fail``."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    labels = [SHORT.get(m, m) for m in methods]
    widths = [max(9, len(s) + 2) for s in labels]
    lines = [f"{'problem':<26}" + "".join(f"{s:>{w}}" for s, w in zip(labels, widths, strict=True))]
    for key in dict.fromkeys(_key(r) for r in rows):
        sel = {r["method"]: r for r in rows if _key(r) == key}
        cells = []
        for m in methods:
            r = sel.get(m)
            if r is None:
                cells.append("")
            elif r["reached"]:
                cells.append(_s(r["seconds"]))
            elif r["timed_out"]:
                cells.append(f">{r['budget']:g}")
            elif r["status"] == "failed" or r["error"] is None:
                cells.append("fail")
            else:
                cells.append(f"({r['error']:.0e})")
        name = f"{key[0]} {key[1]} {key[2]:.0e}"
        lines.append(f"{name:<26}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    lines.append("seconds to L1 error ≤ 1e-8; (err): stopped short at that error; >B: over the B s budget")
    return "\n".join(lines)


#: One colour per method of ours in every panel.
OUR_COLORS = {"precond sinkhorn": "C0", "precond sinkhorn_log": "C1", "precond sns": "C2"}


def plot(rows: list[dict], path: Path, per_row: int = 4) -> Path | None:
    """Error vs iteration and vs seconds for every ε ≤ 1e-2 problem: curves for precond's methods (the only
    ones with histories), a marker where each peer that reached the target stopped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    keys = [k for k in dict.fromkeys(_key(r) for r in rows) if k[2] <= 1e-2] or list(
        dict.fromkeys(_key(r) for r in rows)
    )
    if not keys:
        return None
    cols = min(per_row, len(keys))
    blocks = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(4 * cols, 3.2 * 2 * blocks), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for j, key in enumerate(keys):
        top, bottom = axes[2 * (j // cols), j % cols], axes[2 * (j // cols) + 1, j % cols]
        for r in rows:
            if _key(r) != key:
                continue
            if r.get("history"):
                its, errs, secs = zip(*r["history"], strict=True)
                style = {"color": OUR_COLORS.get(r["method"]), "label": r["method"]}
                top.semilogy(its, errs, **style)
                bottom.semilogy(secs, errs, **style)
            elif r.get("reached"):  # peers report no history: mark where they reached the target
                k = list(METHODS).index(r["method"]) if r["method"] in METHODS else 0
                style = {"marker": "x^vsdP+"[k % 7], "color": f"C{3 + k % 7}", "ls": "", "label": r["method"]}
                top.semilogy([r["iterations"]], [max(r["error"], 1e-16)], **style)
                bottom.semilogy([r["seconds"]], [max(r["error"], 1e-16)], **style)
        top.set_title(f"{key[0]} n={key[1]} ε={key[2]:g}")
        top.set_xlabel("iteration")
        bottom.set_xlabel("seconds")
        for ax in (top, bottom):
            ax.set_visible(True)
            ax.axhline(TARGET, color="gray", lw=0.8, ls="--")
            ax.set_ylabel("L1 marginal error")
        if top.get_legend_handles_labels()[0]:
            top.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


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


def run_benchmark(
    grid: Sequence[Problem],
    names: Sequence[str],
    *,
    budget: float,
    threads: int = 2,
    seed: int = 0,
    out: Path = DEFAULT_OUT,
    quick: bool = True,
    command: str = "",
) -> dict:
    """Run every method on every problem (one child each), print progress and summary, write JSON and plot."""
    rows = []
    print(f"budget {budget:g} s per method and problem (hard), {threads} threads, target L1 error {TARGET:g}")
    print(HEADER, flush=True)
    for kind, n, eps in grid:
        for name in names:
            row = run_method(name, kind, n, eps, budget=budget, seed=seed, threads=threads)
            rows.append(row)
            print(format_row(row), flush=True)
    summary = _summarize(rows, budget)
    table = format_table(rows)
    print()
    for line in summary:
        print(line)
    print()
    print(table)
    stem = "ot_quick" if quick else "ot"
    meta = {
        "target_l1_marginal_error": TARGET,
        "budget_s": budget,
        "grace_s": GRACE_S,
        "threads": threads,
        "seed": seed,
        "quick": quick,
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in ("precond", "torch", "numpy", "pot", "regot")},
    }
    out.mkdir(parents=True, exist_ok=True)
    png = plot(rows, out / f"{stem}_convergence.png" if quick else out / "ot_convergence.png")
    payload = {"meta": meta, "rows": rows, "summary": summary, "table": table, "plot": png.name if png else None}
    record = out / f"{stem}.json"
    record.write_text(json.dumps(payload, indent=1))
    print(f"\nrecord: {record}" + (f"\nplot: {png}" if png else ""))
    return payload


# ------------------------------------------------------------------------------------------------- CLI


def _list_of(convert: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        return [convert(t) for t in items]

    return parse


def _method(text: str) -> str:
    if text not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose from {', '.join(METHODS)}")
    return text


def _kind(text: str) -> str:
    if text not in KINDS:
        raise argparse.ArgumentTypeError(f"unknown problem {text!r}; choose from {', '.join(KINDS)}")
    return text


def add_arguments(parser: argparse.ArgumentParser, *, quick_default: bool, out_default: Path) -> None:
    """The benchmark's options: ``--full`` where the quick grid is the default, ``--quick`` where it is not."""
    if quick_default:
        parser.add_argument(
            "--full", dest="quick", action="store_false", help="full grid (n=2000, 5 problems, 3 ε; 10 s budget)"
        )
    else:
        parser.add_argument("--quick", action="store_true", help="quick grid (n=500, 3 problems, 2 ε; 3 s budget)")
    parser.set_defaults(quick=quick_default)
    parser.add_argument(
        "--budget", type=positive_float, default=None, help="hard seconds per method and problem (quick 3, full 10)"
    )
    parser.add_argument(
        "--methods",
        type=_list_of(_method, "methods"),
        default=None,
        help="comma-separated subset of: " + ", ".join(METHODS),
    )
    parser.add_argument(
        "--problems",
        type=_list_of(_kind, "problems"),
        default=None,
        help="comma-separated subset of: " + ", ".join(KINDS),
    )
    parser.add_argument(
        "--n", type=_list_of(int_at_least(4), "sizes"), default=None, help="problem size(s), replaces the grid's"
    )
    parser.add_argument(
        "--eps", type=_list_of(positive_float, "ε values"), default=None, help="ε value(s), replaces the grid's"
    )
    parser.add_argument("--seed", type=int, default=0, help="problem seed (default 0)")
    parser.add_argument("--threads", type=int_at_least(1), default=2, help="threads of every method (default 2)")
    parser.add_argument(
        "--out", type=Path, default=out_default, help=f"folder for JSON and plot (default {out_default})"
    )


def run_from_args(args: argparse.Namespace, command: str) -> dict:
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET[args.quick]
    grid = select_problems(args.quick, args.problems, args.n, args.eps)
    names, notes = available_methods(args.methods or list(METHODS))
    for note in notes:
        print(note, flush=True)
    return run_benchmark(
        grid,
        names,
        budget=budget,
        threads=args.threads,
        seed=args.seed,
        out=args.out,
        quick=args.quick,
        command=command,
    )


def main(argv: Sequence[str] | None = None, *, out_default: Path = DEFAULT_OUT, prog: str | None = None) -> dict:
    """The full-grid benchmark script (``benchmarks/ot.py``): ``--quick`` for the quick grid."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, quick_default=False, out_default=out_default)
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_from_args(args, shlex.join([prog or Path(sys.argv[0]).name, *argv]))
