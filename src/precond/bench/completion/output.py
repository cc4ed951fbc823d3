"""What the matrix-completion benchmark prints and draws: progress rows, table, scaling fits and their plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["HEADER", "fit_exponent", "format_row", "format_table", "plot", "scaling"]

HEADER = f"{'problem':<11}{'|Ω|':>10}{'k':>5}  {'method':<24}{'iters':>6}{'seconds':>9}{'s/iter':>10}{'test RMSE':>11}"


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.4f}" if seconds < 0.1 else f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def _size(row: dict) -> str:
    return "-" if row["problem"] == "movielens" else f"{row['size']:.0e}"


def format_row(r: dict) -> str:
    """One progress line: iterations, fit seconds, seconds per iteration, test RMSE, or why there are none."""
    head = f"{r['problem']:<11}{_size(r):>10}{r['rank']:>5}  {r['method']:<24}"
    if r["status"] == "failed":
        return head + f"FAILED: {r.get('message', '')}"
    if r["status"] == "timeout":
        return head + f"killed at the {r['budget']:g} s budget"
    its = "-" if r["iterations"] is None else str(r["iterations"])
    rmse = "-" if r["test_rmse"] is None else f"{r['test_rmse']:.4f}"
    line = f"{head}{its:>6}{_s(r['seconds']):>9}{_s(r['seconds_per_iteration']):>10}{rmse:>11}"
    return line + (f"  (over the {r['budget']:g} s budget)" if r["status"] == "over_budget" else "")


def format_table(rows: list[dict]) -> str:
    """Problems × methods: seconds to the target RMSE (``(rmse)`` when not reached, ``>B`` over the budget,
    ``fail``), then the final test RMSE and seconds per iteration of each."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    widths = [max(12, len(m) + 2) for m in methods]
    lines = [f"{'problem':<26}{'target':>8}" + "".join(f"{m:>{w}}" for m, w in zip(methods, widths, strict=True))]
    for key in dict.fromkeys((r["problem"], r["size"], r["rank"]) for r in rows):
        sel = {r["method"]: r for r in rows if (r["problem"], r["size"], r["rank"]) == key}
        first = next(iter(sel.values()))
        target = first.get("target")
        cells = []
        for m in methods:
            r = sel.get(m)
            if r is None:
                cells.append("")
            elif r["timed_out"]:
                cells.append(f">{r['budget']:g}")
            elif r["status"] == "failed" or r["test_rmse"] is None:
                cells.append("fail")
            elif r.get("reached"):
                cells.append(f"{_s(r['time_to_target'])} s")
            else:
                cells.append(f"({r['test_rmse']:.4f})")
        name = f"{key[0]} {_size(first)} k={key[2]}"
        tgt = "-" if target is None else f"{target:.4f}"
        lines.append(f"{name:<26}{tgt:>8}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    lines.append(
        "seconds to the target test RMSE (precond exact's final × 1.001; peers: their whole fit); "
        "(rmse): final test RMSE, target not reached; >B: over the B s budget"
    )
    return "\n".join(lines)


def fit_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (``y ∝ x^slope``); needs two distinct positive ``x``."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if lx.size < 2 or np.ptp(lx) == 0:
        raise ValueError("fit_exponent needs at least two distinct x values")
    return float(np.polyfit(lx, ly, 1)[0])


def scaling(rows: list[dict]) -> list[dict]:
    """Fitted exponents of seconds per iteration on the synthetic problems, per method: against ``|Ω|`` for each
    ``k`` with at least two sizes, against ``k`` for each ``|Ω|`` with at least two ranks."""
    ok = [
        r for r in rows if r["problem"] == "synthetic" and r["status"] == "ok" and (r["seconds_per_iteration"] or 0) > 0
    ]
    fits = []
    for method in dict.fromkeys(r["method"] for r in ok):
        mine = [r for r in ok if r["method"] == method]
        for vary, fixed in (("size", "rank"), ("rank", "size")):
            for value in sorted({r[fixed] for r in mine}):
                pts = sorted((r[vary], r["seconds_per_iteration"]) for r in mine if r[fixed] == value)
                if len({p[0] for p in pts}) < 2:
                    continue
                xs, ys = zip(*pts, strict=True)
                fits.append(
                    {
                        "method": method,
                        "vary": "|Ω|" if vary == "size" else "k",
                        "fixed": f"k={value}" if fixed == "rank" else f"|Ω|={value:.0e}",
                        "points": [list(p) for p in pts],
                        "exponent": fit_exponent(xs, ys),
                    }
                )
    return fits


def plot(rows: list[dict], fits: list[dict], path: Path) -> Path | None:
    """Log-log seconds per iteration against ``|Ω|`` (left) and ``k`` (right), one line per fit, its exponent in
    the legend; ``None`` when there is nothing to draw or no matplotlib."""
    if not fits:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    for ax, vary in zip(axes[0], ("|Ω|", "k"), strict=True):
        mine = [f for f in fits if f["vary"] == vary]
        for f in mine:
            xs, ys = zip(*f["points"], strict=True)
            ax.loglog(xs, ys, "o-", label=f"{f['method']} ({f['fixed']}): slope {f['exponent']:.2f}")
        ax.set_xlabel(vary + (" (observed entries)" if vary == "|Ω|" else " (rank)"))
        ax.set_ylabel("seconds per iteration")
        ax.grid(True, which="both", alpha=0.3)
        if mine:
            ax.legend(fontsize=7)
        else:
            ax.set_visible(False)
    fig.suptitle("matrix completion: time per ALS iteration, synthetic problems (fitted log-log slopes)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
