"""Run the entropic OT benchmark: every (method, problem) in its own budgeted child, rows, the JSON record.

Fairness rules:

* every (method, problem) runs in its own spawned child process with ``--threads`` torch/OpenMP/MKL/OpenBLAS
  threads (:func:`precond.bench._harness.run_budgeted`); the child regenerates the problem from
  ``(kind, n, seed)``, calibrates, then tells the parent that the solve starts and times only the solve;
* the budget is hard: the parent kills a child still solving ``budget`` seconds (plus :data:`GRACE_S` for
  computing the error and sending the result) after the solve started, and records it as ``timed_out`` with
  ``seconds = budget``; a solve that finishes after the budget also counts as timed out (not reached);
* a method "reached" the target when our error ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁`` of its plan is ``≤ 1e-8`` within the
  budget. Iterations are each library's own count (POT's are multiples of 10; one SNS/RegOT Newton iteration
  costs a few dense passes, see ``evaluations`` for ours).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from precond.bench import versions
from precond.bench._harness import record_outcome, run_budgeted
from precond.bench.environment import machine_record
from precond.bench.ot.output import HEADER, format_row, format_table, plot, summarize
from precond.bench.ot.problems import TARGET, Problem
from precond.bench.ot.runners import method_spec, solve

__all__ = ["DEFAULT_BUDGET", "DEFAULT_OUT", "DEFAULT_THREADS", "GRACE_S", "run_benchmark", "run_method"]

DEFAULT_BUDGET = {True: 3.0, False: 10.0}  # keyed by "quick"
DEFAULT_OUT = Path("precond-bench-results")
DEFAULT_THREADS = 2
#: seconds past the budget a child gets to compute the error of its plan and send its result
GRACE_S = 1.0
#: seconds a child gets to start Python, import its library, build the problem and calibrate (not timed)
SETUP_TIMEOUT_S = 180.0


def _record(row: dict, out: dict, budget: float) -> None:
    """Put a finished child's result into ``row``: reached if its error is ``≤ TARGET`` within the budget; a solve
    that took longer than the budget counts as timed out (``seconds = budget``, the measured in ``solve_seconds``)."""
    solve_seconds = float(out["seconds"])
    row.update(out)
    if solve_seconds > budget:
        row.update(status="over_budget", timed_out=True, reached=False, seconds=budget, solve_seconds=solve_seconds)
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
    threads: int = DEFAULT_THREADS,
    grace: float = GRACE_S,
    setup_timeout: float = SETUP_TIMEOUT_S,
    target: Callable[..., dict] = solve,
) -> dict:
    """Run one method on one problem in a spawned child under a hard budget; return the result row.

    The child's solve is killed ``budget + grace`` seconds after it reported its start; a killed or late solve
    is recorded with ``timed_out=True``, ``reached=False`` and ``seconds=budget``. ``target`` is the child's job
    (:func:`~precond.bench.ot.runners.solve`; tests pass stand-ins with the same signature).
    """
    if target is solve:
        method_spec(name)  # unknown names fail here, not in the child
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
    outcome = run_budgeted(
        target,
        (name, kind, n, reg, seed, budget),
        budget=budget,
        threads=threads,
        grace=grace,
        setup_timeout=setup_timeout,
    )
    payload = record_outcome(row, outcome, budget)
    if payload is not None:
        _record(row, payload, budget)
    return row


def run_benchmark(
    grid: Sequence[Problem],
    names: Sequence[str],
    *,
    budget: float,
    threads: int = DEFAULT_THREADS,
    seed: int = 0,
    out: Path = DEFAULT_OUT,
    quick: bool = True,
    command: str = "",
) -> dict:
    """Run every method on every problem (one child each), print progress and summary, write JSON and plot."""
    rows = []
    start = machine_record(("precond", "torch", "numpy", "pot", "regot"))
    print(f"budget {budget:g} s per method and problem (hard), {threads} threads, target L1 error {TARGET:g}")
    print(HEADER, flush=True)
    for kind, n, eps in grid:
        for name in names:
            row = run_method(name, kind, n, eps, budget=budget, seed=seed, threads=threads)
            rows.append(row)
            print(format_row(row), flush=True)
    end = machine_record(())
    summary = summarize(rows, budget)
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
        "machine": start["machine"],
        "cpu_count": start["cpu_count"],
        "load_average": {"start": start["load_average"], "end": end["load_average"]},
        "python": start["python"],
        "versions": start["versions"],
        "code_version": versions.code_version("ot"),
        "code_files": list(versions.OT.files()),
    }
    out.mkdir(parents=True, exist_ok=True)
    png = plot(rows, out / f"{stem}_convergence.png" if quick else out / "ot_convergence.png")
    payload = {"meta": meta, "rows": rows, "summary": summary, "table": table, "plot": png.name if png else None}
    record = out / f"{stem}.json"
    record.write_text(json.dumps(payload, indent=1))
    print(f"\nrecord: {record}" + (f"\nplot: {png}" if png else ""))
    return payload
