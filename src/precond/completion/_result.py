"""The result of :func:`precond.completion.complete`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from precond.completion._validate import check_index


class ConvergenceWarning(UserWarning):
    """:func:`~precond.completion.complete` stopped at ``max_iter`` before its tolerance (``converged=False``)."""


#: One row of :attr:`CompletionResult.history`: ``(iteration, train_rmse, validation_rmse, seconds)``;
#: ``validation_rmse`` is ``None`` without validation data, ``seconds`` is wall-clock since the call started.
HistoryEntry = tuple[int, float, float | None, float]


@dataclass(frozen=True)
class SolveEntry:
    """How the row solves of one iteration went (one entry per iteration in :attr:`CompletionResult.solves`).

    Attributes:
        iteration: the outer iteration (from 1).
        tol: the relative-residual tolerance of the CG row solves this iteration (``0.0`` when no row was solved
            by CG: ``"exact"``, or ``"auto"`` with every bucket exact).
        cg_iterations: the most CG iterations any row ran, over both half-steps (``0`` if none ran CG).
        unconverged: rows (both sides) that hit the CG iteration cap before ``tol``.
        exact_rows: rows and columns solved exactly (batched Cholesky) this iteration.
    """

    iteration: int
    tol: float
    cg_iterations: int
    unconverged: int
    exact_rows: int


@dataclass(frozen=True)
class CompletionResult:
    """Low-rank model ``R̂_ij = mean + row_bias_i + col_bias_j + U_iᵀ V_j`` fitted to the observed entries.

    Tensors are torch tensors on the device of the input ``values``, in the solver's dtype.

    Attributes:
        U: row factors ``[m, k]``; zero for rows without observations (cold start).
        V: column factors ``[n, k]``; zero for columns without observations.
        row_bias: ``[m]`` row offsets with ``biases=True`` (zero for cold-start rows), else ``None``.
        col_bias: ``[n]`` column offsets with ``biases=True`` (zero for cold-start columns), else ``None``.
        mean: the global mean of the observed values with ``biases=True``, else ``None`` (no centering).
        history: ``(iteration, train_rmse, validation_rmse, seconds)`` per iteration (one iteration = a row and a
            column half-step).
        iterations: iterations run.
        converged: the relative decrease of the objective fell to ``tol`` (or the objective to the rounding floor)
            before ``max_iter``.
        solver: the row solver used (``"exact"``, ``"cg"``, ``"sketch_cg"`` or ``"auto"``).
        objective: the final value of the regularized objective (see :func:`~precond.completion.complete`).
        shape, rank, reg, reg_scaling: the problem as solved.
        solves: one :class:`SolveEntry` per iteration: CG tolerance of the schedule, CG iterations, exact rows.
    """

    U: torch.Tensor
    V: torch.Tensor
    row_bias: torch.Tensor | None
    col_bias: torch.Tensor | None
    mean: float | None
    history: list[HistoryEntry] = field(repr=False)
    iterations: int
    converged: bool
    solver: str
    objective: float
    shape: tuple[int, int]
    rank: int
    reg: float
    reg_scaling: str
    solves: list[SolveEntry] = field(default_factory=list, repr=False)

    def predict(self, rows: Any, cols: Any) -> Any:
        """Predicted entries at ``(rows[t], cols[t])``; a cold-start row or column contributes only its biases.

        A torch tensor (on the factors' device) when ``rows`` or ``cols`` is one, else a NumPy array."""
        if not isinstance(rows, torch.Tensor) and not isinstance(cols, torch.Tensor):
            return self._predict(rows, cols).cpu().numpy()
        return self._predict(rows, cols)

    def _predict(self, rows: Any, cols: Any) -> torch.Tensor:
        r = check_index(rows, "rows", self.shape[0], "row").to(self.U.device)
        c = check_index(cols, "cols", self.shape[1], "column").to(self.U.device)
        if r.numel() != c.numel():
            raise ValueError(f"`rows` and `cols` must have the same length, got {r.numel()} and {c.numel()}")
        out = (self.U[r] * self.V[c]).sum(1)
        if self.row_bias is not None and self.col_bias is not None and self.mean is not None:
            out = out + self.row_bias[r] + self.col_bias[c] + self.mean
        return out

    @property
    def train_rmse(self) -> float:
        """Root-mean-square error on the observed entries after the last iteration."""
        return self.history[-1][1]
