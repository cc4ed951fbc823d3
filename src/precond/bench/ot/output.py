"""What the entropic OT benchmark prints and draws: progress rows, per-problem summary, table and plot."""

from __future__ import annotations

import math
from pathlib import Path

from precond.bench.ot.problems import TARGET, Problem
from precond.bench.ot.runners import METHODS

__all__ = ["HEADER", "POT_ISSUE", "SHORT", "format_row", "format_table", "plot", "summarize"]

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


def summarize(rows: list[dict], budget: float) -> list[str]:
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
