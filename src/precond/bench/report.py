"""What a benchmark says: the terminal table, the headline, the PNG plot and the JSON record of a Summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from precond.bench.protocol import OptimizerSummary, Summary

_MIB = 2**20

#: Column headers of :func:`format_table`, with what each means (printed under the table).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("optimizer", ""),
    ("best hparams", "chosen by final validation loss on the tuning seed"),
    ("final val", "mean ± sample std over n seeds of the best setting"),
    ("steps→target", "steps to reach the baseline's mean final loss (interpolated; mean over seeds)"),
    ("speedup", "baseline steps / optimizer steps to that target"),
    ("time→target", "training seconds to the target (validation excluded)"),
    ("time speedup", "baseline seconds / optimizer seconds to the target"),
    ("step ×", "mean optimizer.step() time relative to the baseline's"),
    ("state MiB", "optimizer state"),
    ("verdict", "Welch t-test on final losses across seeds; 'inconclusive' when spreads overlap"),
)


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _hparams(o: OptimizerSummary) -> str:
    if o.best_hparams is None:
        return "—"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(o.best_hparams.items()))


def _final(o: OptimizerSummary) -> str:
    if o.final_mean is None:
        return "—"
    spread = "" if o.final_std is None else f" ± {o.final_std:.4f}"
    return f"{o.final_mean:.4f}{spread} (n={o.n})"


def _verdict(o: OptimizerSummary) -> str:
    text: str = o.verdict
    if o.diverged or o.errors:
        text += f" ({o.diverged} diverged, {o.errors} errors in sweep)"
    if not o.complete:
        text += f" [{o.trials_found}/{o.trials_planned} trials]"
    return text


def table_rows(summary: Summary) -> list[list[str]]:
    """One row of strings per optimizer, in :data:`COLUMNS` order."""
    rows = []
    for o in summary.optimizers:
        rows.append(
            [
                o.optimizer,
                _hparams(o),
                _final(o),
                _num(o.steps_to_target, ".0f"),
                _num(o.speedup, ".2f") + ("×" if o.speedup is not None else ""),
                _num(o.seconds_to_target, ".1f") + (" s" if o.seconds_to_target is not None else ""),
                _num(o.time_speedup, ".2f") + ("×" if o.time_speedup is not None else ""),
                _num(o.step_overhead, ".2f"),
                _num(None if o.state_bytes is None else o.state_bytes / _MIB, ".2f"),
                _verdict(o),
            ]
        )
    return rows


def format_table(summary: Summary, *, legend: bool = True) -> str:
    """A markdown table (readable as plain text) of every optimizer, with a legend of the columns."""
    headers = [name for name, _ in COLUMNS]
    rows = table_rows(summary)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    right = {3, 4, 5, 6, 7, 8}

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    out = [line(headers), rule, *(line(r) for r in rows)]
    if legend:
        out.append("")
        out += [f"  {name}: {meaning}" for name, meaning in COLUMNS if meaning]
    return "\n".join(out)


def headline(summary: Summary) -> str:
    """One sentence per optimizer: the answer to "is it worth it here?"."""
    plan = summary.plan
    base = summary.baseline
    if summary.target is None:
        return f"No target: the baseline {plan.baseline} has no finished run (see the table)."
    lines = [
        f"Target: {plan.baseline}'s mean final validation loss {summary.target:.4f} on {plan.workload}/{plan.preset} "
        f"({base.n} seeds, {base.steps_to_target or 0:.0f} steps to reach it)."
    ]
    for o in summary.optimizers:
        if o.optimizer == plan.baseline:
            continue
        if o.final_mean is None:
            lines.append(f"  {o.optimizer}: no finished run ({o.verdict}).")
            continue
        reach = (
            f"reaches the target in {o.steps_to_target:.0f} steps ({o.speedup:.2f}× fewer"
            + (f", {o.time_speedup:.2f}× wall-clock" if o.time_speedup is not None else "")
            + ")"
            if o.steps_to_target is not None and o.speedup is not None
            else "does not reach the target"
        )
        claim = {
            "faster": "significantly better final loss",
            "slower": "significantly worse final loss",
            "inconclusive": "final losses not separable across seeds: inconclusive",
        }.get(o.verdict, o.verdict)
        lines.append(f"  {o.optimizer}: {reach}; final {o.final_mean:.4f} vs {summary.target:.4f}, {claim}.")
    lines += search_lines(summary)
    lines += edge_warnings(summary)
    lines += [f"  warning: {w}." for w in summary.timing_warnings]
    return "\n".join(lines)


def edge_warnings(summary: Summary) -> list[str]:
    """A warning for every optimizer whose searched best lr is still the smallest or largest one tried (the
    search's extensions ran out: the optimum may lie beyond)."""
    out = []
    for o in summary.optimizers:
        if o.best_hparams is None or not o.lr_at_edge or summary.plan.lr_points < 2:
            continue
        lrs = sorted({lr for p in o.sweep if isinstance(lr := p.hparams.get("lr"), float)})
        best = float(o.best_hparams["lr"])  # type: ignore[arg-type]
        side = "smallest" if best == lrs[0] else "largest"
        out.append(
            f"  warning: {o.optimizer}'s best lr {best:.3g} is the {side} one the search tried "
            f"({lrs[0]:.3g}…{lrs[-1]:.3g}); the tuned optimum may lie beyond it (a larger --lr-extend or a wider "
            "range in precond.bench.tuning)."
        )
    return out


def search_lines(summary: Summary) -> list[str]:
    """What tuning was run, and the budget every trial had: the report states both."""
    plan = summary.plan
    lines = [f"Search: {plan.describe_search()}."]
    for o in summary.optimizers:
        tried = [p for p in o.sweep if p.status != "missing"]
        if not tried:
            continue
        lrs = sorted({lr for p in tried if isinstance(lr := p.hparams.get("lr"), float)})
        below, above = o.lr_extended
        ext = f", extended {below} below / {above} above the range" if below or above else ""
        lines.append(f"  {o.optimizer}: {len(tried)} tuning trials, lr {lrs[0]:.3g}…{lrs[-1]:.3g}{ext}.")
    if plan.budget_seconds is not None:
        steps = ", ".join(f"{o.optimizer} {o.steps_run:.0f}" for o in summary.optimizers if o.steps_run is not None)
        lines.append(
            f"Budget: equal time, {plan.budget_seconds:g} s of training wall-clock per trial (validation excluded); "
            f"mean steps done: {steps}."
        )
    else:
        lines.append("Budget: equal steps (the workload's step budget for every trial).")
    return lines


def plot(summary: Summary, path: str | Path) -> Path:
    """PNG of the tuned runs' mean validation curves vs steps and vs training wall-clock, target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for o in summary.optimizers:
        if not o.curve:
            continue
        steps, losses, seconds = zip(*o.curve, strict=True)
        label = f"{o.optimizer} ({_hparams(o)})"
        by_step.plot(steps, losses, marker=".", label=label)
        by_time.plot(seconds, losses, marker=".", label=label)
    for ax, xlabel in ((by_step, "step"), (by_time, "training seconds (validation excluded)")):
        if summary.target is not None:
            ax.axhline(summary.target, color="grey", linestyle="--", linewidth=1, label=f"target {summary.target:.4f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss")
        ax.grid(alpha=0.3)
        finals = [o.final_mean for o in summary.optimizers if o.final_mean is not None]
        starts = [o.curve[0][1] for o in summary.optimizers if o.curve]
        if finals and starts:  # zoom on where the comparison happens, not on the first steps
            low, high = min(finals), max(starts)
            ax.set_ylim(low - 0.05 * (high - low), low + 0.6 * (high - low))
    by_step.legend(fontsize=8)
    plan = summary.plan
    budget = f", {plan.budget_seconds:g} s per trial" if plan.budget_seconds is not None else ""
    fig.suptitle(f"precond bench: {plan.workload}/{plan.preset}{budget}, tuned runs (mean over seeds)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_json(summary: Summary, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.to_dict(), indent=1) + "\n")
    return path
