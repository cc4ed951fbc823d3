"""Stand-ins for the completion benchmark's child job (same signature as ``runners.solve``), imported by name in
the spawned child."""

from __future__ import annotations

from collections.abc import Callable

#: test RMSE of the fake fit per method name; the history of "precond exact" reaches 0.5 at iteration 2
FAKE_RMSE = {"precond exact": 0.5, "peer good": 0.5004, "peer bad": 0.6}


def fake_fit(
    name: str,
    problem: tuple,
    seed: int,
    budget: float,
    threads: int,
    precision: str = "float32",
    *,
    started: Callable[[], None],
) -> dict:
    """A finished fit: 3 iterations with times growing like ``size · rank²`` (so the fitted exponents are 1 and 2)."""
    started()
    _kind, size, rank = problem
    step = 1e-9 * max(size, 1) * rank**2
    out = {
        "seconds": 3 * step,
        "iterations": 3,
        "seconds_per_iteration": step,
        "test_rmse": FAKE_RMSE[name],
        "shape": [10, 10],
        "observations": 90,
    }
    if name.startswith("precond"):
        out["history"] = [(1, 0.9, 0.7, step), (2, 0.6, 0.5, 2 * step), (3, 0.55, 0.5, 3 * step)]
    return out
