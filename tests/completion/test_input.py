"""Bad input: a clear ValueError/TypeError naming the argument (issue 12, item 5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from precond.completion import SOLVERS, complete

ROWS = np.array([0, 1, 2, 3, 0, 1], dtype=np.int64)
COLS = np.array([0, 1, 2, 0, 3, 3], dtype=np.int64)
VALS = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
SHAPE = (4, 5)


def _call(**changes: Any) -> Any:
    kwargs: dict[str, Any] = {"rows": ROWS, "cols": COLS, "values": VALS, "shape": SHAPE, "rank": 2}
    kwargs.update(changes)
    return complete(kwargs.pop("rows"), kwargs.pop("cols"), kwargs.pop("values"), kwargs.pop("shape"), **kwargs)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"rows": np.array([0, 1, 2, 4, 0, 1])}, ValueError, r"`rows` has row index 4 out of range.*4"),
        ({"cols": np.array([0, 1, 2, 0, 5, 3])}, ValueError, r"`cols` has column index 5 out of range.*5"),
        ({"rows": np.array([0, -1, 2, 3, 0, 1])}, ValueError, r"`rows` has negative row indices"),
        ({"cols": torch.tensor([0, 1, -2, 0, 3, 3])}, ValueError, r"`cols` has negative column indices"),
        ({"rows": ROWS.astype(float)}, TypeError, r"`rows` must hold integer row indices.*float64.*astype"),
        ({"cols": COLS.astype(bool)}, TypeError, r"`cols` must hold integer column indices"),
        ({"rows": ROWS[:5]}, ValueError, r"same length.*5, 6 and 6"),
        ({"values": VALS[:4]}, ValueError, r"same length.*6, 6 and 4"),
        ({"rows": ROWS[:0], "cols": COLS[:0], "values": VALS[:0]}, ValueError, r"`values` is empty"),
        ({"values": np.where(np.arange(6) == 2, np.nan, VALS)}, ValueError, r"`values` has 1 NaN or inf.*position 2"),
        ({"values": np.where(np.arange(6) == 0, np.inf, VALS)}, ValueError, r"`values` has 1 NaN or inf"),
        ({"values": VALS.astype(complex)}, TypeError, r"`values` must hold real numbers"),
        ({"rows": np.zeros((2, 3), dtype=np.int64)}, ValueError, r"`rows` must be 1-D"),
        ({"rows": np.array([0, 1, 2, 3, 0, 0])}, ValueError, r"occur more than once.*\(0, 3\).*duplicates='mean'"),
        ({"rank": 0}, ValueError, r"`rank` must be an integer ≥ 1"),
        ({"rank": 5}, ValueError, r"`rank` must be ≤ min\(shape\) = 4"),
        ({"rank": 2.0}, TypeError, r"`rank` must be an integer"),
        ({"rank": True}, TypeError, r"`rank` must be an integer"),
        ({"shape": (4,)}, ValueError, r"`shape` must be a pair"),
        ({"shape": (0, 5)}, ValueError, r"`shape\[0\]` must be an integer ≥ 1"),
        ({"reg": -0.1}, ValueError, r"`reg` must be ≥ 0"),
        ({"reg": float("nan")}, ValueError, r"`reg` must be finite"),
        ({"reg": "0.1"}, TypeError, r"`reg` must be a real number"),
        ({"tol": -1.0}, ValueError, r"`tol` must be ≥ 0"),
        ({"max_iter": 0}, ValueError, r"`max_iter` must be an integer ≥ 1"),
        ({"seed": -1}, ValueError, r"`seed` must be an integer ≥ 0"),
        ({"solver": "lsqr"}, ValueError, r"`solver` must be one of 'auto', 'exact', 'sketch_cg', 'cg', got 'lsqr'"),
        ({"solver": 3}, ValueError, r"`solver` must be one of 'auto', 'exact', 'sketch_cg', 'cg'"),
        ({"biases": 1}, TypeError, r"`biases` must be True or False"),
        ({"reg_scaling": "als-wr"}, ValueError, r"`reg_scaling` must be one of 'none', 'count'"),
        ({"duplicates": "sum"}, ValueError, r"`duplicates` must be one of 'error', 'mean'"),
        ({"dtype": torch.float16}, ValueError, r"`dtype` must be torch.float32 or torch.float64"),
        ({"validation": (ROWS, COLS)}, ValueError, r"`validation` must be a tuple \(rows, cols, values\)"),
        ({"validation": (ROWS, COLS + 5, VALS)}, ValueError, r"`validation cols` has column index"),
        ({"validation": (ROWS, COLS, VALS * np.nan)}, ValueError, r"`validation values` has 6 NaN"),
    ],
)
def test_bad_input_names_the_argument(changes: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _call(**changes)


def test_solvers_offered_now() -> None:
    assert SOLVERS == ("auto", "exact", "sketch_cg", "cg")


def test_duplicates_mean_averages_repeated_pairs() -> None:
    rows = np.concatenate([ROWS, [0, 0]])
    cols = np.concatenate([COLS, [0, 0]])
    vals = np.concatenate([VALS, [2.0, 3.0]])  # (0, 0) observed as 1, 2, 3: mean 2
    averaged = _call(rows=rows, cols=cols, values=vals, duplicates="mean", reg=0.3, max_iter=3)
    vals_mean = VALS.copy()
    vals_mean[0] = 2.0
    reference = _call(values=vals_mean, reg=0.3, max_iter=3)
    torch.testing.assert_close(averaged.U, reference.U, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(averaged.V, reference.V, rtol=1e-12, atol=1e-12)


def test_integer_values_and_int32_indices_are_accepted() -> None:
    a = _call(rows=ROWS.astype(np.int32), cols=torch.as_tensor(COLS, dtype=torch.int16), values=VALS.astype(int))
    b = _call()
    torch.testing.assert_close(a.U, b.U, rtol=0, atol=0)


def test_predict_checks_indices() -> None:
    res = _call(max_iter=2)
    with pytest.raises(ValueError, match=r"`rows` has row index 4 out of range"):
        res.predict([4], [0])
    with pytest.raises(TypeError, match=r"`cols` must hold integer column indices"):
        res.predict([0], [0.5])
    with pytest.raises(ValueError, match=r"same length"):
        res.predict([0, 1], [0])


def test_overflow_is_an_error_not_nan() -> None:
    with pytest.raises(FloatingPointError, match=r"non-finite.*float32"):
        _call(values=torch.tensor(VALS * 1e30, dtype=torch.float32), reg=0.0)
