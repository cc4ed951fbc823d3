"""Entropic OT to marginal error 1e-8: precond.ot (log-domain Sinkhorn, SNS) side by side with POT and RegOT.

    python benchmarks/ot.py            # full run (~10 minutes on 2 CPU cores)
    python benchmarks/ot.py --quick    # smoke run (~1 minute)

Writes ``results/ot.json`` (``results/ot_quick.json`` with --quick) and ``results/ot_convergence.png``.

Problems (costs normalized to max 1, uniform weights unless stated, seeded):
* ``assignment``: random assignment, ``M_ij ~ U[0, 1]`` (the SNS paper's first case);
* ``gauss``: two Gaussian point clouds in 2-D (``N(0, I)`` and ``N((1, 1), I)``), squared Euclidean cost;
* ``density1d_w1`` / ``density1d_w2``: two Gaussian-mixture densities on a regular 1-D grid of n points,
  ``|x − y|`` / ``|x − y|²`` costs;
* ``density2d_w2``: two Gaussian-mixture densities on a √n × √n grid, squared Euclidean cost.

Methods: ``precond sinkhorn_log`` and ``precond sns`` (defaults, float64), POT ``sinkhorn_log``,
``sinkhorn_stabilized`` and ``sinkhorn_epsilon_scaling``, RegOT ``sinkhorn_ssns`` and
``sinkhorn_sparse_newton`` (if importable).  Every method gets the same wall-clock budget per problem
(``--budget`` seconds): its iteration cap is the budget divided by its per-iteration time measured on a short
calibration run.  Stopping thresholds are set so that each library's own criterion implies the target
(POT: L2 column error ``≤ 1e-8/√n``, checked every 10 iterations; RegOT: ‖gradient‖₂ ``≤ 1e-8/√(2n)``), and
the *reported* error is always ours, ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁`` measured on the returned plan: a method
"reached" the target when that is ``≤ 1e-8``.  Iterations are each library's own count (POT's are multiples
of 10; one SNS/RegOT Newton iteration costs a few dense passes, see ``evaluations`` for ours).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

# This file is itself named ``ot.py``: keep its folder off the path so that ``import ot`` finds POT.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import ot  # noqa: E402
import torch  # noqa: E402

import precond  # noqa: E402
from precond.ot import sinkhorn  # noqa: E402

try:
    import regot
except ImportError:  # pragma: no cover - optional peer
    regot = None

TARGET = 1e-8
RESULTS = Path(__file__).parent / "results"


def _mixture(x: np.ndarray, centers: list[tuple[float, ...]], scale: float) -> np.ndarray:
    d = np.zeros(len(x))
    for c in centers:
        d += np.exp(-((x - np.asarray(c)) ** 2).sum(1) / (2 * scale**2))
    d += 1e-3 * d.max()  # full support
    return d / d.sum()


def make_problem(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "assignment":
        a = b = np.full(n, 1.0 / n)
        M = rng.random((n, n))
    elif kind == "gauss":
        x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 1.0
        a = b = np.full(n, 1.0 / n)
        M = ot.dist(x, y)
    elif kind.startswith("density1d"):
        x = np.linspace(0, 1, n)[:, None]
        a = _mixture(x, [(0.2,), (0.5,)], 0.07)
        b = _mixture(x, [(0.4,), (0.8,)], 0.1)
        M = ot.dist(x, x, metric="euclidean" if kind.endswith("w1") else "sqeuclidean")
    elif kind == "density2d_w2":
        k = math.isqrt(n)
        g = np.linspace(0, 1, k)
        x = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        a = _mixture(x, [(0.25, 0.3), (0.6, 0.7)], 0.12)
        b = _mixture(x, [(0.7, 0.3), (0.3, 0.75)], 0.15)
        M = ot.dist(x, x)
    else:
        raise ValueError(kind)
    return a, b, M / M.max()


def l1_error(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    if not np.isfinite(plan).all():
        return math.inf
    return float(np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum())


def _timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_ours(method: str, a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float, budget: float) -> dict:
    at, bt, mt = (torch.as_tensor(v) for v in (a, b, M))
    calib, t_cal = _timed(lambda: sinkhorn(at, bt, mt, reg, tol=1e-300, max_iter=20, warn=False))
    per_iter = t_cal / max(1, calib.iterations)
    cap = max(50, int(budget / per_iter / (3 if method == "sns" else 1)))
    res, secs = _timed(lambda: sinkhorn(at, bt, mt, reg, method=method, tol=TARGET, max_iter=cap, warn=False))
    return {
        "seconds": secs,
        "iterations": res.iterations,
        "sinkhorn_iterations": res.sinkhorn_iterations,
        "newton_iterations": res.newton_iterations,
        "evaluations": res.evaluations,
        "cg_iterations": res.cg_iterations,
        "error": l1_error(res.plan.numpy(), a, b),
        "history": [(i, e, s) for i, e, s, _ in res.history],
    }


def run_pot(method: str, a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float, budget: float) -> dict:
    n = len(a)
    thr = TARGET / math.sqrt(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "sinkhorn_epsilon_scaling":
            inner = 100
            _, t_cal = _timed(lambda: ot.sinkhorn(a, b, M, reg, method=method, numItermax=1, numInnerItermax=inner))
            outer = max(2, int(budget / t_cal))
            (plan, log), secs = _timed(
                lambda: ot.sinkhorn(
                    a, b, M, reg, method=method, numItermax=outer, numInnerItermax=inner, stopThr=thr**2, log=True
                )
            )
            its = int(log.get("niter", outer)) * inner
        else:
            _, t_cal = _timed(lambda: ot.sinkhorn(a, b, M, reg, method=method, numItermax=20, stopThr=0.0))
            cap = max(20, int(budget / (t_cal / 20)))
            (plan, log), secs = _timed(
                lambda: ot.sinkhorn(a, b, M, reg, method=method, numItermax=cap, stopThr=thr, log=True)
            )
            its = int(log.get("niter", log.get("n_iter", cap)))
    return {"seconds": secs, "iterations": its, "error": l1_error(np.asarray(plan), a, b)}


def run_regot(method: str, a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float, budget: float) -> dict:
    fn = getattr(regot, method)
    mf = np.asfortranarray(M)
    _, t_cal = _timed(lambda: fn(mf, a, b, reg, tol=1e-300, max_iter=3))
    cap = max(10, int(budget / (t_cal / 3)))
    res, secs = _timed(lambda: fn(mf, a, b, reg, tol=TARGET / math.sqrt(2 * len(a)), max_iter=cap))
    return {"seconds": secs, "iterations": int(res.niter), "error": l1_error(np.asarray(res.plan), a, b)}


METHODS: dict[str, Any] = {
    "precond sinkhorn_log": lambda *p: run_ours("sinkhorn_log", *p),
    "precond sns": lambda *p: run_ours("sns", *p),
    "POT sinkhorn_log": lambda *p: run_pot("sinkhorn_log", *p),
    "POT sinkhorn_stabilized": lambda *p: run_pot("sinkhorn_stabilized", *p),
    "POT sinkhorn_epsilon_scaling": lambda *p: run_pot("sinkhorn_epsilon_scaling", *p),
}
if regot is not None:
    METHODS["RegOT sinkhorn_ssns"] = lambda *p: run_regot("sinkhorn_ssns", *p)
    METHODS["RegOT sinkhorn_sparse_newton"] = lambda *p: run_regot("sinkhorn_sparse_newton", *p)

FULL = [
    (k, 2000, eps)
    for k in ("assignment", "gauss", "density1d_w1", "density1d_w2", "density2d_w2")
    for eps in (1e-1, 1e-2, 1e-3)
] + [(k, n, 1e-2) for k in ("assignment", "gauss") for n in (500, 5000)]
QUICK = [(k, 500, eps) for k in ("assignment", "gauss") for eps in (1e-2, 1e-3)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n=500, two problems, 3 s budget")
    parser.add_argument("--budget", type=float, default=None, help="seconds per method and problem (6; quick 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=None, help="comma-separated subset of: " + ", ".join(METHODS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = args.budget or (3.0 if args.quick else 6.0)
    grid = QUICK if args.quick else FULL
    names = list(METHODS) if args.methods is None else [m.strip() for m in args.methods.split(",")]
    rows = []
    print(f"{'problem':<14}{'n':>6}{'eps':>7}  {'method':<30}{'iters':>8}{'seconds':>9}{'L1 err':>10}  reached")
    for kind, n, eps in grid:
        a, b, M = make_problem(kind, n)
        for name in names:
            out = METHODS[name](a, b, M, eps, budget)
            out.update(problem=kind, n=n, eps=eps, method=name, reached=bool(out["error"] <= TARGET))
            rows.append(out)
            print(
                f"{kind:<14}{n:>6}{eps:>7.0e}  {name:<30}{out['iterations']:>8}{out['seconds']:>9.2f}"
                f"{out['error']:>10.1e}  {'yes' if out['reached'] else 'NO'}",
                flush=True,
            )
    summary = _summarize(rows)
    for line in summary:
        print(line)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "target_l1_marginal_error": TARGET,
        "budget_s": budget,
        "threads": args.threads,
        "quick": args.quick,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "versions": {
            "precond": precond.__version__ if hasattr(precond, "__version__") else "dev",
            "torch": torch.__version__,
            "pot": ot.__version__,
            "regot": getattr(regot, "__version__", "0.0.3") if regot else None,
        },
    }
    payload = {"meta": meta, "rows": rows, "summary": summary}
    name = "ot_quick.json" if args.quick else "ot.json"
    (RESULTS / name).write_text(json.dumps(payload, indent=1, default=float))
    _plot(rows, grid)
    return payload


def _summarize(rows: list[dict]) -> list[str]:
    """Per problem: SNS's iteration ratio vs our log-Sinkhorn and its speed-up vs POT's fastest method."""
    lines = []
    for key in sorted({(r["problem"], r["n"], r["eps"]) for r in rows}):
        sel = {r["method"]: r for r in rows if (r["problem"], r["n"], r["eps"]) == key}
        sns, log = sel.get("precond sns"), sel.get("precond sinkhorn_log")
        if not sns or not log:
            continue
        ratio = log["iterations"] / max(1, sns["iterations"])
        ratio_s = f"{'≥' if not log['reached'] else ''}{ratio:.1f}×"
        pots = [r for m, r in sel.items() if m.startswith("POT")]
        done = [r for r in pots if r["reached"]]
        if done:
            best = min(done, key=lambda r: r["seconds"])
            speed = f"{best['seconds'] / sns['seconds']:.1f}× vs {best['method']}"
        else:
            speed = (
                f"≥{max(r['seconds'] for r in pots) / sns['seconds']:.1f}× (no POT method reached 1e-8)"
                if pots
                else "-"
            )
        lines.append(
            f"{key[0]} n={key[1]} eps={key[2]:g}: SNS reached={sns['reached']}, "
            f"iterations {ratio_s} fewer than log-Sinkhorn, wall-clock {speed}"
        )
    return lines


def _plot(rows: list[dict], grid: list[tuple[str, int, float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    keys = [(k, n, e) for k, n, e in grid if e <= 1e-2][:4]
    fig, axes = plt.subplots(2, len(keys), figsize=(4 * len(keys), 6.5), squeeze=False)
    for j, key in enumerate(keys):
        for r in rows:
            if (r["problem"], r["n"], r["eps"]) != key or "history" not in r:
                continue
            its, errs, secs = zip(*r["history"], strict=True)
            axes[0, j].semilogy(its, errs, label=r["method"])
            axes[1, j].semilogy(secs, errs, label=r["method"])
        axes[0, j].set_title(f"{key[0]} n={key[1]} ε={key[2]:g}")
        axes[0, j].set_xlabel("iteration")
        axes[1, j].set_xlabel("seconds")
        for ax in axes[:, j]:
            ax.axhline(TARGET, color="gray", lw=0.8, ls="--")
            ax.set_ylabel("L1 marginal error")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "ot_convergence.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
