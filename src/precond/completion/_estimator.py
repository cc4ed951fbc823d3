"""``MatrixCompletion``: a scikit-learn estimator around :func:`precond.completion.complete` (needs scikit-learn;
:mod:`precond.completion` imports this module only when ``MatrixCompletion`` is first used)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from precond.completion._complete import complete, from_scipy
from precond.completion._result import CompletionResult


def _observations(X: Any, shape: tuple[int, int] | None) -> tuple[Any, Any, Any, tuple[int, int]]:
    if isinstance(X, (tuple, list)):
        if len(X) != 3:
            raise ValueError(f"`X` as a tuple must be (rows, cols, values), got {len(X)} items")
        rows, cols, values = X
        if shape is None:
            if np.size(rows) == 0 or np.size(cols) == 0:
                raise ValueError("`X` is empty: at least one observation is needed")
            shape = (int(np.max(np.asarray(rows))) + 1, int(np.max(np.asarray(cols))) + 1)
        return rows, cols, values, shape
    rows, cols, values, sparse_shape = from_scipy(X)
    if shape is not None and tuple(shape) != sparse_shape:
        raise ValueError(f"`shape` {tuple(shape)} does not match the sparse matrix's shape {sparse_shape}")
    return rows, cols, values, sparse_shape


class MatrixCompletion(BaseEstimator):
    """Low-rank matrix completion by ALS (exact or CG row solves: ``solver``), parameters as in
    :func:`~precond.completion.complete`.

    ``fit(X)`` takes a SciPy sparse matrix (every stored entry is an observation) or a tuple
    ``(rows, cols, values)``; with a tuple and ``shape=None`` the shape is ``(max(rows) + 1, max(cols) + 1)``.
    After fitting, ``result_`` holds the :class:`~precond.completion.CompletionResult`, ``shape_`` the shape and
    ``n_iter_`` the iterations.  ``predict(rows, cols)`` returns a NumPy float array.
    """

    def __init__(
        self,
        rank: int = 10,
        *,
        reg: float = 0.1,
        solver: str = "exact",
        max_iter: int = 50,
        tol: float = 1e-6,
        biases: bool = False,
        reg_scaling: str = "none",
        duplicates: str = "error",
        seed: int = 0,
        shape: tuple[int, int] | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.rank = rank
        self.reg = reg
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.biases = biases
        self.reg_scaling = reg_scaling
        self.duplicates = duplicates
        self.seed = seed
        self.shape = shape
        self.dtype = dtype

    def fit(self, X: Any, y: Any = None, *, validation: tuple[Any, Any, Any] | None = None) -> MatrixCompletion:
        """Fit to the observed entries ``X``; ``y`` is ignored (scikit-learn convention)."""
        rows, cols, values, shape = _observations(X, self.shape)
        self.result_: CompletionResult = complete(
            rows,
            cols,
            values,
            shape,
            self.rank,
            reg=self.reg,
            solver=self.solver,
            max_iter=self.max_iter,
            tol=self.tol,
            biases=self.biases,
            validation=validation,
            seed=self.seed,
            reg_scaling=self.reg_scaling,
            duplicates=self.duplicates,
            dtype=self.dtype,
        )
        self.shape_ = self.result_.shape
        self.n_iter_ = self.result_.iterations
        return self

    def predict(self, rows: Any, cols: Any) -> np.ndarray:
        """Predicted entries at ``(rows[t], cols[t])`` as a NumPy array (see :meth:`CompletionResult.predict`)."""
        if not hasattr(self, "result_"):
            raise ValueError("this MatrixCompletion is not fitted yet; call `fit(X)` first")
        return np.asarray(self.result_._predict(rows, cols).cpu().numpy())
