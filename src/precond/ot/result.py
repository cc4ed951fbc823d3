"""The result object of every ``precond.ot`` solver and the warning raised when one stops short."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


class ConvergenceWarning(UserWarning):
    """A solver stopped (iteration cap, stall or non-finite values) before reaching its tolerance."""


#: One row of :attr:`OTResult.history`: ``(iteration, marginal_error, seconds, phase)``; ``phase`` is
#: ``"sinkhorn"`` or ``"newton"``, ``seconds`` is wall-clock since the solver started.
HistoryEntry = tuple[int, float, float, str]


@dataclass(frozen=True)
class OTResult:
    """Solution of an entropic OT problem ``min ⟨P, M⟩ + reg·Σ P log P`` s.t. ``P 1 = a``, ``Pᵀ 1 = b``.

    All tensors are torch tensors on the device of the input cost matrix, in the solver's dtype (float64
    unless float32 was asked for), whatever the input type (NumPy or torch).

    Array behaviour: the result *is* the plan for NumPy (``np.asarray(res)``, ``np.sum(res, 0)``, ``res @ x``
    via NumPy all see ``plan``, through the ``__array__`` protocol); everything else is an attribute.  For
    plain arrays in and out (POT's ``P = ot.sinkhorn(...)``), use :mod:`precond.ot.pot`.

    Attributes:
        plan: dense transport plan ``P`` ``[n, m]``, ``P_ij = exp((f_i + g_j − M_ij) / reg)``.
        plan_sparse: for ``method="sns"`` with ``sparse_plan=True``: ``P`` with entries below
            ``sparse_threshold·max(P)`` dropped, as a torch sparse COO tensor; otherwise ``None``.
        cost: transport cost ``⟨P, M⟩`` (no entropy term; what ``ot.sinkhorn2`` returns).
        f: row dual potential ``[n]`` in cost units (POT's ``reg · log_u``); ``-inf`` where ``a_i = 0``.
        g: column dual potential ``[m]`` (POT's ``reg · log_v``); ``-inf`` where ``b_j = 0``.
            ``(f, g)`` is defined up to ``(f + c, g − c)``.
        marginal_error: ``‖P 1 − a‖₁ + ‖Pᵀ 1 − b‖₁`` of the returned plan, summed in float64 (L1 norm of
            both marginal violations, i.e. of the dual gradient), with ``b`` rescaled by ``b_scale``.
        iterations: total iterations (``sinkhorn_iterations + newton_iterations``); one Sinkhorn iteration is
            a row and a column update.
        sinkhorn_iterations: Sinkhorn iterations (for SNS: the warm-up and any safeguard sweeps).
        newton_iterations: Newton iterations (0 for the Sinkhorn methods).
        converged: ``marginal_error ≤ tol`` (recomputed in float64 from the returned plan) was reached.
        history: ``(iteration, marginal_error, seconds, phase)`` per iteration.
        method: the solver that produced this result.
        reg: the regularization used.
        cg_iterations: total conjugate-gradient iterations of the Newton stage.
        evaluations: dense ``O(nm)`` passes over the plan or kernel (a matrix-vector product, ``logsumexp``
            or ``exp`` pass counts 1; a Sinkhorn iteration is 2, a Newton iteration 2 per line-search trial plus
            one for the sparsification), a machine-independent work measure.
        absorptions: times the scaling-domain solvers (``"sinkhorn"``, ``"sns"``) re-formed their kernel at
            the current potentials (the scalings left ``e^{±τ}`` or a product under/overflowed).
        status: why the solver stopped: ``"converged"``, ``"max_iter"``, ``"stalled"`` (the error stopped
            decreasing at the rounding floor, or SNS's line search failed repeatedly: ``tol`` is below the
            attainable precision), ``"nonfinite"`` or ``"rounding"`` (the loop met ``tol`` but the returned
            plan's float64 error does not).
        b_scale: ``Σa/Σb`` (1.0 when the masses are equal in float64): the problem solved is the balanced one
            with target ``b · b_scale``; inputs may differ in mass by a relative ``1e-6`` (float32 rounding).
    """

    plan: torch.Tensor
    plan_sparse: torch.Tensor | None
    cost: float
    f: torch.Tensor
    g: torch.Tensor
    marginal_error: float
    iterations: int
    sinkhorn_iterations: int
    newton_iterations: int
    converged: bool
    history: list[HistoryEntry] = field(repr=False)
    method: str = "sinkhorn"
    reg: float = 0.0
    cg_iterations: int = 0
    evaluations: int = 0
    absorptions: int = 0
    status: str = "converged"
    b_scale: float = 1.0

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The plan as a NumPy array (NumPy's array protocol; ``copy`` as in NumPy 2)."""
        out = self.plan.detach().cpu().numpy()
        if dtype is not None:
            out = out.astype(dtype, copy=False)
        return out.copy() if copy else out
