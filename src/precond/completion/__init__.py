"""Low-rank matrix completion: alternating ridge least squares with exact (batched Cholesky) or approximate
(matrix-free CG, sketch-preconditioned CG, per-row ``"auto"``) row solves.

>>> from precond.completion import complete
>>> res = complete(rows, cols, values, shape=(m, n), rank=8, reg=0.1, biases=True)   # doctest: +SKIP
>>> res.predict(test_rows, test_cols), res.history[-1], res.converged                # doctest: +SKIP

Built so far (issue 12): the exact and approximate solvers, biases, ALS-WR scaling, incoherence trimming
(``trim=``), the paper's sample-splitting mode (``sample_splitting=True``), :class:`ConvergenceWarning`, the
estimator :class:`MatrixCompletion` (``fit``/``predict``/``transform``).  :func:`distributed_complete` runs the
same ALS row-partitioned on ``torch.distributed``.

Needs only torch and NumPy: SciPy is imported by :func:`from_scipy` only, and scikit-learn when
``MatrixCompletion`` is first accessed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from precond.completion._complete import SOLVERS, complete, from_scipy, split_observations
from precond.completion._distributed import LocalFactors, distributed_complete
from precond.completion._result import CompletionResult, ConvergenceWarning, HistoryEntry, SolveEntry

if TYPE_CHECKING:
    from precond.completion._estimator import MatrixCompletion

__all__ = [
    "SOLVERS",
    "CompletionResult",
    "ConvergenceWarning",
    "HistoryEntry",
    "LocalFactors",
    "MatrixCompletion",
    "SolveEntry",
    "complete",
    "distributed_complete",
    "from_scipy",
    "split_observations",
]


def __getattr__(name: str) -> Any:
    if name == "MatrixCompletion":  # lazy: scikit-learn is needed only for the estimator
        from precond.completion._estimator import MatrixCompletion

        return MatrixCompletion
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
