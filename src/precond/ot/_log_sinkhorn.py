"""Log-domain Sinkhorn sweeps on scaled potentials ``u = f/reg``, ``v = g/reg``, with optional ε-annealing.

Everything goes through ``logsumexp``, so no ``exp(-M/reg)`` kernel is ever formed and small ``reg`` cannot
underflow.  The marginal error is free: the row sums at the current iterate come out of the same
``logsumexp`` that the row update needs, and the column marginal is exact (up to rounding) right after each
column update.  So the error is checked at every iteration, and iteration counts are exact (POT and OTT
check every 10 or 20).

A run also stops, *stalled*, once the error has not set a new low for ``STALL_WINDOW`` iterations while it is
below ``state.floor`` (the rounding floor, :func:`stall_floor`): a tolerance under the attainable precision
then ends the run instead of spinning to ``max_iter``.  Sinkhorn's L1 error decreases monotonically in exact
arithmetic (measured: never one iteration without a new low in ~20,000 iterations on random 100 × 100 problems;
SNS's Newton stage had at most 10 in a row), so this never cuts short a run that still makes progress.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from precond.ot.result import HistoryEntry

#: Iterations without a new low of the marginal error (below the floor) after which a run is stalled.
STALL_WINDOW = 50
#: :func:`stall_floor` in units of ``eps · Σa``.
STALL_ULPS = 1e4


def stall_floor(dtype: torch.dtype, mass: float) -> float:
    """Error below which no progress means rounding: ``STALL_ULPS · eps · Σa`` (float64 2.2e-12, float32 1.2e-3)."""
    return STALL_ULPS * torch.finfo(dtype).eps * mass


@dataclass
class SinkhornState:
    """Mutable solver state shared by the Sinkhorn and Newton stages (scaled potentials, counters, log)."""

    u: torch.Tensor
    v: torch.Tensor
    start: float = field(default_factory=time.perf_counter)
    sinkhorn_iterations: int = 0
    newton_iterations: int = 0
    evaluations: int = 0
    cg_iterations: int = 0
    absorptions: int = 0
    error: float = math.inf
    history: list[HistoryEntry] = field(default_factory=list)
    floor: float = 0.0  # see stall_floor: 0 disables the stall test
    best: float = math.inf
    best_at: int = 0

    @property
    def iterations(self) -> int:
        return self.sinkhorn_iterations + self.newton_iterations

    def record(self, error: float, phase: str) -> None:
        self.error = error
        if error < self.best:
            self.best, self.best_at = error, self.iterations
        self.history.append((self.iterations, error, time.perf_counter() - self.start, phase))

    def restart_progress(self) -> None:
        """Forget the best error so far (a new ε level solves another problem)."""
        self.best, self.best_at = math.inf, self.iterations

    @property
    def stalled(self) -> bool:
        """No new low of the error for ``STALL_WINDOW`` iterations, and it is below the rounding floor."""
        return self.best <= self.floor and self.iterations - self.best_at >= STALL_WINDOW


#: ``stop(state, errors_so_far_this_run) -> bool``: an extra stopping rule (SNS's switch to Newton).
StopRule = Callable[[SinkhornState, list[float]], bool]


def log_columns(u: torch.Tensor, log_b: torch.Tensor, neg_mr: torch.Tensor) -> torch.Tensor:
    """``v = log b − LSE_i(u_i − M_ij/reg)``: the potentials that make the column marginal exact."""
    return log_b - torch.logsumexp(u[:, None] + neg_mr, dim=0)


def column_update(state: SinkhornState, log_b: torch.Tensor, neg_mr: torch.Tensor) -> None:
    """``v ← log b − LSE_i(u_i − M_ij/reg)``: makes the column marginal exact."""
    state.v = log_columns(state.u, log_b, neg_mr)
    state.evaluations += 1


def sweeps(
    state: SinkhornState,
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    a: torch.Tensor,
    neg_mr: torch.Tensor,
    tol: float,
    max_iter: int,
    stop: StopRule | None = None,
) -> bool:
    """Run Sinkhorn iterations at one ``reg`` (``neg_mr = −M/reg``) until the error is ``≤ tol``.

    Assumes the column marginal is already exact (call :func:`column_update` first).  Each iteration measures
    the error ``‖P 1 − a‖₁`` at the current iterate, stops if it is small enough (leaving the potentials at
    that iterate) and otherwise updates the rows then the columns.  At most ``max_iter`` iterations (counted in
    ``state.sinkhorn_iterations``).  Returns whether ``tol`` was reached; a non-finite error or a stall
    (``state.stalled``) also stops.
    """
    errors: list[float] = []
    for _ in range(max_iter + 1):
        lse = torch.logsumexp(state.v[None, :] + neg_mr, dim=1)
        state.evaluations += 1
        err = float((torch.exp(state.u + lse) - a).abs().sum())
        errors.append(err)
        state.record(err, "sinkhorn")
        if err <= tol:
            return True
        if not math.isfinite(err) or len(errors) > max_iter or state.stalled:
            return False
        if stop is not None and stop(state, errors):
            return False
        state.u = log_a - lse
        column_update(state, log_b, neg_mr)
        state.sinkhorn_iterations += 1
    return False


def annealing_levels(epsilon0: float, reg: float, scaling_factor: float) -> list[float]:
    """ε-scaling schedule ``epsilon0·q^k`` for the levels above ``reg``, then ``reg`` itself (the last level).

    Each level above ``reg`` is solved loosely (the caller's choice) and its potentials, in cost units,
    warm-start the next; small ``reg`` then starts from nearly converged potentials instead of zero.
    """
    levels: list[float] = []
    eps = epsilon0
    while eps > reg:
        levels.append(eps)
        eps *= scaling_factor
    return [*levels, reg]
