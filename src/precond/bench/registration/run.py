"""Run the registration benchmark: every (method, scene) in its own budgeted child; errors split into observable
and degenerate parts; table, figure and JSON.

Fairness: one spawned child per (method, scene) with ``--threads`` threads (:func:`precond.bench._harness.
run_budgeted`), the scene rebuilt from its seed in the child, only the registration timed (from raw clouds). Errors
are of the final pose against the truth (the identity): ``ξ = [ω; v]`` with ``truth = T · Exp(ξ)``, split by the
scene's degenerate basis ``B`` into ``ξ_deg = BᵀB ξ`` and ``ξ_obs = ξ − ξ_deg``; the drift is ``‖ξ_deg − ξ₀,deg‖``
(``ξ₀`` the initial error): how far the degenerate directions moved.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from precond.bench import versions
from precond.bench._harness import record_outcome, run_budgeted
from precond.bench.registration.runners import register
from precond.bench.registration.scenes import PERTURBATION, SceneSpec, make_scene

__all__ = ["DEFAULT_BUDGET", "DEFAULT_OUT", "DEFAULT_THREADS", "errors", "format_table", "plot", "run_benchmark"]

DEFAULT_BUDGET = {True: 30.0, False: 120.0}
DEFAULT_OUT = Path("precond-bench-results")
DEFAULT_THREADS = 1
GRACE_S = 2.0
SETUP_TIMEOUT_S = 120.0


def errors(transform: np.ndarray, degenerate: np.ndarray) -> dict[str, float]:
    """Translation (m) and rotation (°) error of ``transform`` against the identity, its observable and degenerate
    norms and the drift of the degenerate part from the initial guess's."""
    from precond.registration import apply_increment, pose_error

    xi = pose_error(np.asarray(transform), np.eye(4))
    xi0 = pose_error(apply_increment(np.eye(4), PERTURBATION), np.eye(4))
    proj = degenerate.T @ degenerate
    deg, deg0 = proj @ xi, proj @ xi0
    return {
        "translation_error": float(np.linalg.norm(xi[3:])),
        "rotation_error_deg": float(np.degrees(np.linalg.norm(xi[:3]))),
        "observable_error": float(np.linalg.norm(xi - deg)),
        "degenerate_error": float(np.linalg.norm(deg)),
        "degenerate_drift": float(np.linalg.norm(deg - deg0)),
    }


def _row(name: str, spec: SceneSpec, budget: float, threads: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scene": spec.kind,
        "points": spec.points,
        "seed": spec.seed,
        "method": name,
        "budget": budget,
        "threads": threads,
        "status": "ok",
        "timed_out": False,
        "killed": False,
    }
    outcome = run_budgeted(
        register, (name, tuple(spec)), budget=budget, threads=threads, grace=GRACE_S, setup_timeout=SETUP_TIMEOUT_S
    )
    payload = record_outcome(row, outcome, budget)
    if payload is not None:
        row.update(payload)
        row.update(errors(np.asarray(payload["transform"]), make_scene(spec).degenerate))
    return row


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


HEADER = f"{'scene':<17}{'method':<24}{'trans m':>10}{'rot °':>10}{'obs':>10}{'drift':>10}{'iters':>6}{'ms':>9}  mask"


def format_row(r: dict[str, Any]) -> str:
    """One line: errors, iterations, milliseconds and the detected mask, or why there are none."""
    head = f"{r['scene']:<17}{r['method']:<24}"
    if r["status"] != "ok":
        return head + f"{r['status'].upper()}: {r.get('message', '')}"
    its = "-" if r.get("iterations") is None else str(r["iterations"])
    return (
        f"{head}{_fmt(r['translation_error']):>10}{_fmt(r['rotation_error_deg']):>10}"
        f"{_fmt(r['observable_error']):>10}{_fmt(r['degenerate_drift']):>10}{its:>6}"
        f"{1000 * r['seconds']:>9.1f}  {r.get('mask') or ''}"
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    """All rows under :data:`HEADER`, with a legend."""
    legend = (
        "obs: ‖observable part of the final error [ω; v]‖; drift: how far the degenerate part moved from the "
        "initial guess's; mask: DCReg's weak axes at the first iteration, [rx ry rz tx ty tz]"
    )
    return "\n".join([HEADER, *(format_row(r) for r in rows), legend])


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Bars per scene and method: observable error and degenerate drift (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return None
    scenes = list(dict.fromkeys(r["scene"] for r in ok))
    methods = list(dict.fromkeys(r["method"] for r in ok))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(scenes)), 7), sharex=True)
    width = 0.8 / len(methods)
    for ax, key, title in zip(
        axes,
        ("observable_error", "degenerate_drift"),
        ("observable error ‖ξ_obs‖", "degenerate drift ‖ξ_deg − ξ₀,deg‖"),
        strict=True,
    ):
        for j, m in enumerate(methods):
            vals = [
                next((max(r[key], 1e-16) for r in ok if r["scene"] == s and r["method"] == m), np.nan) for s in scenes
            ]
            ax.bar(np.arange(len(scenes)) + j * width, vals, width, label=m)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[1].set_xticks(np.arange(len(scenes)) + 0.4 - width / 2, scenes, rotation=20)
    axes[0].legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_benchmark(
    grid: Sequence[SceneSpec],
    names: Sequence[str],
    *,
    budget: float,
    threads: int = DEFAULT_THREADS,
    out: Path = DEFAULT_OUT,
    quick: bool = True,
    command: str = "",
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Run every method on every scene, print rows and the table, write ``registration[_quick].{json,png}``;
    ``notes`` (e.g. the peers skipped because they do not import) go into the record."""
    from precond.bench.environment import machine_record

    start = machine_record(("precond", "numpy", "scipy", "open3d", "open3d-cpu", "small-gicp"))
    print(f"budget {budget:g} s per method and scene (hard), {threads} thread(s)")
    print(HEADER, flush=True)
    rows = []
    for spec in grid:
        for name in names:
            row = _row(name, spec, budget, threads)
            rows.append(row)
            print(format_row(row), flush=True)
    end = machine_record(())
    table = format_table(rows)
    print()
    print(table)
    stem = "registration_quick" if quick else "registration"
    out.mkdir(parents=True, exist_ok=True)
    png = plot(rows, out / f"{stem}.png")
    meta = {
        "perturbation": PERTURBATION.tolist(),
        "budget_s": budget,
        "threads": threads,
        "quick": quick,
        "command": command,
        "notes": list(notes),
        "machine": start["machine"],
        "cpu_count": start["cpu_count"],
        "load_average": {"start": start["load_average"], "end": end["load_average"]},
        "python": start["python"],
        "versions": start["versions"],
        "code_version": versions.code_version("registration"),
        "code_files": list(versions.REGISTRATION.files()),
    }
    payload = {"meta": meta, "rows": rows, "table": table, "plot": png.name if png else None}
    record = out / f"{stem}.json"
    record.write_text(json.dumps(payload, indent=1))
    print(f"\nrecord: {record}" + (f"\nplot: {png}" if png else ""))
    return payload
