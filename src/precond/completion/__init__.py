"""Low-rank matrix completion: alternating ridge least squares with exact batched-Cholesky row solves.

>>> from precond.completion import complete
>>> res = complete(rows, cols, values, shape=(m, n), rank=8, reg=0.1, biases=True)   # doctest: +SKIP
>>> res.predict(test_rows, test_cols), res.history[-1], res.converged                # doctest: +SKIP

Built so far (issue 12, first slice): the exact solver, biases, ALS-WR scaling, the estimator
:class:`MatrixCompletion`.  Needs only torch and NumPy; SciPy and scikit-learn are imported lazily.
"""

from precond.completion.complete import SOLVERS, complete, from_scipy
from precond.completion.estimator import MatrixCompletion
from precond.completion.result import CompletionResult, HistoryEntry

__all__ = ["SOLVERS", "CompletionResult", "HistoryEntry", "MatrixCompletion", "complete", "from_scipy"]
