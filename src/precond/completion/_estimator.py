"""``MatrixCompletion``: a scikit-learn estimator around :func:`precond.completion.complete` (needs scikit-learn;
:mod:`precond.completion` imports this module only when ``MatrixCompletion`` is first used)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import validate_data

from precond.completion._complete import _lam, complete, from_scipy
from precond.completion._result import CompletionResult
from precond.completion._solve import RowIndex, ridge_rows
from precond.completion._validate import check_observations

#: ``check_estimator`` checks that cannot apply to ``MatrixCompletion``, with the reason (also in its docstring).
_PREDICT_SHAPE = (
    "asserts that predict(X) is one number per sample, shape (n_samples,), as for a supervised estimator; "
    "predict(X) here returns the completed (n_samples, n_features) matrix (sparse X itself is supported and tested)"
)
SKLEARN_EXPECTED_FAILED_CHECKS: dict[str, str] = {
    "check_estimator_sparse_array": _PREDICT_SHAPE,
    "check_estimator_sparse_matrix": _PREDICT_SHAPE,
}


class MatrixCompletion(TransformerMixin, BaseEstimator):
    """Low-rank matrix completion by ALS (exact or CG row solves: ``solver``), parameters as in
    :func:`~precond.completion.complete`.

    ``X`` (in ``fit``, ``transform``, ``fit_transform`` and ``predict(X)``) is one of

    * a dense array ``[m, n]`` with NaN for the missing entries: every non-NaN entry is an observation;
    * a SciPy sparse matrix or array: every stored entry (explicit zeros included) is an observation;
    * a tuple ``(rows, cols, values)`` of COO observations (a list of lists is a dense array-like, as in
      scikit-learn); in ``fit`` with ``shape=None`` the shape is ``(max(rows) + 1, max(cols) + 1)``, in
      ``transform`` the number of new rows is ``max(rows) + 1``.

    After fitting, ``result_`` holds the :class:`~precond.completion.CompletionResult`, ``shape_`` the shape,
    ``n_features_in_`` the number of columns ``n`` and ``n_iter_`` the iterations; a run that stops at
    ``max_iter`` emits a :class:`~precond.completion.ConvergenceWarning`.

    ``transform(X)`` treats the rows of ``X`` (``n`` columns, the fitted columns) as rows to fold in: each row's
    factor is one exact ridge solve ``argmin_u Σ_{j∈Ω_i} (x_ij − μ − c_j − b − v_jᵀu)² + λ_i (‖u‖² + b²)`` against the
    fitted ``V`` (and column biases and ``μ`` with ``biases=True``; ``b`` is solved jointly and dropped) with the
    fitted ``reg`` and ``reg_scaling``; it returns ``[n_rows, k]``.  A row without observations gets 0.
    ``fit_transform(X)`` is ``fit(X).transform(X)``: the training rows refolded against the final ``V``, which
    equals ``result_.U`` at convergence (``result_.U`` is one half-step older).
    ``predict(rows, cols)`` returns the fitted model's entries (a NumPy array); ``predict(X)`` returns the completed
    dense ``[n_rows, n]`` matrix of the rows of ``X`` folded in as in ``transform``.

    scikit-learn's ``check_estimator`` passes (tags: sparse input, NaN allowed since NaN marks a missing entry)
    except the checks in ``SKLEARN_EXPECTED_FAILED_CHECKS``: ``check_estimator_sparse_array`` and
    ``check_estimator_sparse_matrix``, which assert that ``predict(X)`` has shape ``(n_samples,)`` like a
    supervised estimator's, whereas ``predict(X)`` here is the completed ``(n_samples, n_features)`` matrix.
    """

    def __init__(
        self,
        rank: int = 10,
        *,
        reg: float = 0.1,
        solver: str = "auto",
        max_iter: int = 50,
        tol: float = 1e-6,
        biases: bool = False,
        reg_scaling: str = "none",
        duplicates: str = "error",
        seed: int = 0,
        shape: tuple[int, int] | None = None,
        dtype: torch.dtype | None = None,
        trim: float | None = None,
        sample_splitting: bool = False,
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
        self.trim = trim
        self.sample_splitting = sample_splitting

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = True  # NaN marks a missing entry of a dense X
        return tags

    def _observations(self, X: Any, *, fitting: bool) -> tuple[Any, Any, Any, tuple[int, int]]:
        """``(rows, cols, values, shape)`` of ``X`` (see the class docstring); sets ``n_features_in_`` when fitting."""
        n = None if fitting else self.shape_[1]
        if isinstance(X, tuple):  # a list (of lists) is a dense array-like, as in scikit-learn
            if len(X) != 3:
                raise ValueError(f"`X` as a tuple must be (rows, cols, values), got {len(X)} items")
            rows, cols, values = X
            if np.size(rows) == 0 or np.size(cols) == 0:
                raise ValueError("`X` is empty: at least one observation is needed")
            if fitting and self.shape is not None:
                shape = tuple(self.shape)
            else:
                cols_n = int(np.max(np.asarray(cols))) + 1 if n is None else n
                shape = (int(np.max(np.asarray(rows))) + 1, cols_n)
            if fitting:
                self.n_features_in_ = int(shape[1])
            return rows, cols, values, (int(shape[0]), int(shape[1]))
        X = validate_data(
            self,
            X,
            reset=fitting,
            accept_sparse=True,
            dtype=(np.float64, np.float32),
            ensure_all_finite="allow-nan",
            ensure_min_features=1,
        )
        if hasattr(X, "tocoo"):
            rows, cols, values, shape = from_scipy(X)
        else:
            rows, cols = np.nonzero(~np.isnan(X))
            values, shape = X[rows, cols], (int(X.shape[0]), int(X.shape[1]))
        if fitting and self.shape is not None and tuple(self.shape) != shape:
            raise ValueError(f"`shape` {tuple(self.shape)} does not match the shape of `X` {shape}")
        return rows, cols, values, shape

    def fit(self, X: Any, y: Any = None, *, validation: tuple[Any, Any, Any] | None = None) -> MatrixCompletion:
        """Fit to the observed entries ``X``; ``y`` is ignored (scikit-learn convention)."""
        rows, cols, values, shape = self._observations(X, fitting=True)
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
            trim=self.trim,
            sample_splitting=self.sample_splitting,
        )
        self.shape_ = self.result_.shape
        self.n_iter_ = self.result_.iterations
        return self

    def _check_fitted(self) -> CompletionResult:
        if not hasattr(self, "result_"):
            raise NotFittedError("this MatrixCompletion is not fitted yet; call `fit(X)` first")
        return self.result_

    def _fold_in(self, X: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Factors ``[n_rows, k]`` (and biases ``[n_rows]`` with ``biases=True``) of the rows of ``X``."""
        res = self._check_fitted()
        rows, cols, values, (m_new, n) = self._observations(X, fitting=False)
        r, c, v = check_observations(rows, cols, values, (m_new, n), res.U.dtype, self.duplicates)
        V = res.V
        r, c, v = r.to(V.device), c.to(V.device), v.to(V.device)
        idx = RowIndex(r, c, m_new)
        lam = _lam(res.reg, idx.counts, res.reg_scaling, V.dtype)
        if res.col_bias is None or res.mean is None:
            return ridge_rows(idx, V, v, lam), None
        design = torch.cat([V, torch.ones(n, 1, dtype=V.dtype, device=V.device)], 1)
        x = ridge_rows(idx, design, v - res.mean - res.col_bias[c], lam)
        return x[:, :-1], x[:, -1]

    def transform(self, X: Any) -> np.ndarray:
        """Row factors ``[n_rows, k]`` of the rows of ``X`` against the fitted ``V`` (see the class docstring)."""
        return np.asarray(self._fold_in(X)[0].cpu().numpy())

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(X, **fit_params).transform(X)``."""
        return self.fit(X, **fit_params).transform(X)

    def predict(self, rows: Any, cols: Any = None) -> np.ndarray:
        """Predicted entries at ``(rows[t], cols[t])`` as a NumPy array (see :meth:`CompletionResult.predict`), or
        with ``cols=None`` the completed dense matrix of the rows of ``X = rows`` folded in (class docstring)."""
        res = self._check_fitted()
        if cols is not None:
            return np.asarray(res._predict(rows, cols).cpu().numpy())
        U, b = self._fold_in(rows)
        out = U @ res.V.T
        if b is not None and res.col_bias is not None and res.mean is not None:
            out = out + b[:, None] + res.col_bias[None, :] + res.mean
        return np.asarray(out.cpu().numpy())
