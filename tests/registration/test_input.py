"""Bad input → a clear error naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from precond.registration import degeneracy, icp, solve
from tests.registration import scenes

PTS = scenes.room()[0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"source": np.zeros((10, 2))}, ValueError, r"`source` must be an \[N, 3\]"),
        ({"target": np.zeros(30)}, ValueError, r"`target` must be an \[N, 3\]"),
        ({"source": np.full((10, 3), np.nan)}, ValueError, "`source` has 10 row.*NaN"),
        ({"target": np.vstack([PTS, [[np.inf, 0, 0]]])}, ValueError, "`target` has 1 row.*inf"),
        ({"source": PTS[:3]}, ValueError, "`source` needs at least 6 points"),
        ({"target": PTS[:5]}, ValueError, "`target` needs at least 10 points"),
        ({"source": "points"}, TypeError, "`source` must be a numeric array"),
        ({"init": np.eye(3)}, ValueError, "`init` must be a 4×4"),
        ({"init": np.diag([2.0, 1, 1, 1])}, ValueError, "`init` is not rigid"),
        ({"init": np.diag([-1.0, 1, 1, 1])}, ValueError, "`init` is a reflection"),
        ({"init": np.vstack([np.eye(4)[:3], [1, 0, 0, 1]])}, ValueError, "`init` must have last row"),
        ({"kernel": "tukey"}, ValueError, "`kernel` must be one of"),
        ({"degeneracy": "xicp"}, ValueError, "`degeneracy` must be one of"),
        ({"analysis": "last"}, ValueError, "`analysis` must be one of"),
        ({"max_correspondence_distance": 0.0}, ValueError, "`max_correspondence_distance` must be >"),
        ({"max_iter": 0}, ValueError, "`max_iter` must be an integer ≥ 1"),
        ({"target_normals": np.zeros((len(PTS), 3))}, ValueError, "`target_normals` has .* zero row"),
        ({"target_normals": np.ones((4, 3))}, ValueError, "`target_normals` must have the shape"),
        ({"pcg_maxiter": 3}, TypeError, "pcg_maxiter"),
    ],
)
def test_icp_rejects(kwargs: dict, error: type, match: str) -> None:
    args = {"source": PTS, "target": PTS, **kwargs}
    with pytest.raises(error, match=match):
        icp(**args)


@pytest.mark.parametrize(
    ("h", "match"),
    [
        (np.eye(5), "must be the 6×6"),
        (np.eye(6) + np.triu(np.ones((6, 6)), 1), "must be symmetric"),
        (np.full((6, 6), np.nan), "has NaN or inf"),
    ],
)
def test_hessian_rejected(h: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=f"`H` {match}"):
        degeneracy(h)
    with pytest.raises(ValueError, match=f"`H` {match}"):
        solve(h, np.ones(6))


def test_solve_rejects_bad_b_method_and_options() -> None:
    with pytest.raises(ValueError, match="`b` has NaN or inf"):
        solve(np.eye(6), np.array([1, 2, 3, 4, 5, np.inf]))
    with pytest.raises(ValueError, match="`b` must be a vector of 6"):
        solve(np.eye(6), np.ones(3))
    with pytest.raises(ValueError, match="`method` must be one of"):
        solve(np.eye(6), np.ones(6), method="qr")
    with pytest.raises(ValueError, match="`detector` must be one of"):
        solve(np.eye(6), np.ones(6), detector="dcreg")
    with pytest.raises(TypeError, match="`report` must be a DegeneracyReport"):
        solve(np.eye(6), np.ones(6), report={"mask": 0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`threshold` must be > 1"):
        degeneracy(np.eye(6), threshold=0.5)
    with pytest.raises(ValueError, match="`null_rtol` must be < 1"):
        degeneracy(np.eye(6), null_rtol=2.0)
    with pytest.raises(TypeError, match="`kappa` must be a real number"):
        degeneracy(np.eye(6), kappa="10")  # type: ignore[arg-type]
