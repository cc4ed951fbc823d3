"""One runner per library, run inside the budgeted child: build the problem (untimed), call ``started()``, fit.

Every library fits the same objective where it can (:data:`SETTINGS`, by problem kind): squared loss plus ridge
``λ`` scaled by each row's number of ratings (ALS-WR, as Spark and cmfrec's benchmark), with biases on MovieLens,
for :data:`ITERATIONS` alternating iterations, then reports its test RMSE.  Every library computes in the same
precision (:data:`PRECISIONS`, default :data:`DEFAULT_PRECISION`: float32, cmfrec's default ``use_float=True``).

* ``precond <solver>``: :func:`precond.completion.complete` with every solver in
  :data:`precond.completion.SOLVERS` at run time; the test RMSE and wall-clock time of every iteration come from
  its history (the time includes the spectral initialization and the per-iteration test RMSE).
* ``cmfrec als-cg``: ``cmfrec.CMF(method="als", use_cg=True, finalize_chol=True)``, its defaults for explicit
  ratings (3 CG steps per row, a final exact Cholesky sweep); only its total time and final RMSE are known.
* ``spark als``: Spark MLlib's ``pyspark.ml.recommendation.ALS`` in local mode (``local[threads]``, a JVM is
  needed: OpenJDK 17 or later for Spark 4), exact Cholesky row solves with ALS-WR scaling (``regParam · |Ω_i|``,
  Spark's only scaling), no biases (Spark has none: on MovieLens it fits the raw ratings); the JVM start-up and the
  DataFrame build are not timed, only ``fit``.  Spark keeps its factors in float32 whatever the precision asked for.
* ``fancyimpute softimpute``: SoftImpute (Mazumder–Hastie–Tibshirani 2010) with ``max_rank=k``; a different
  (nuclear-norm) model on a dense ``m × n`` array, so run only where that fits in :data:`DENSE_LIMIT` entries.
* ``implicit`` is not a runner: it fits implicit-feedback ALS (Hu–Koren–Volinsky) only, and RMSE on explicit
  ratings is meaningless for it (benfred/implicit#202); see :data:`SKIPPED`.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from precond.bench.completion.problems import Data, Problem, make_problem

__all__ = [
    "DEFAULT_PRECISION",
    "DENSE_LIMIT",
    "ITERATIONS",
    "PEERS",
    "PRECISIONS",
    "SETTINGS",
    "SKIPPED",
    "available_methods",
    "method_spec",
    "methods",
    "per_iteration",
    "solve",
]

#: the floating-point precisions a run can use (every method the same), and the default
PRECISIONS = ("float32", "float64")
DEFAULT_PRECISION = "float32"
#: alternating iterations of every ALS method (cmfrec's MovieLens benchmark used 15)
ITERATIONS = 15
#: ``(biases, reg, reg_scaling)`` by problem kind
SETTINGS: dict[str, tuple[bool, float, str]] = {"movielens": (True, 0.05, "count"), "synthetic": (False, 0.01, "count")}
#: the peers: benchmark name → (library, method)
PEERS: dict[str, tuple[str, str]] = {
    "cmfrec als-cg": ("cmfrec", "als-cg"),
    "spark als": ("pyspark", "als"),
    "fancyimpute softimpute": ("fancyimpute", "softimpute"),
}
#: peers that are never run, and why
SKIPPED = {
    "implicit": "implicit fits implicit-feedback ALS only; RMSE on explicit ratings is meaningless for it "
    "(benfred/implicit#202)"
}
#: largest dense ``m·n`` SoftImpute is run on (float64: 8 bytes each, and SoftImpute keeps a few copies)
DENSE_LIMIT = 20_000_000

Runner = Callable[[str, Data, Problem, int, Callable[[], None], str], dict]


def methods() -> dict[str, tuple[str, str]]:
    """Every method: ``precond <solver>`` for each solver of :data:`precond.completion.SOLVERS` now, then
    :data:`PEERS`."""
    from precond.completion import SOLVERS

    return {**{f"precond {s}": ("precond", s) for s in SOLVERS}, **PEERS}


def method_spec(name: str) -> tuple[str, str]:
    """``(library, method)`` of ``name``; :class:`ValueError` naming the choices if unknown."""
    known = methods()
    if name not in known:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(known)}")
    return known[name]


def per_iteration(seconds: Sequence[float]) -> float:
    """Seconds per iteration from the cumulative times of the iterations: the median step (which leaves out the
    initialization), or the only time if there is one iteration."""
    steps = np.diff(np.asarray(seconds, dtype=float))
    return float(np.median(steps)) if steps.size else float(seconds[0])


def _rmse(predicted: np.ndarray, values: np.ndarray) -> float:
    return math.sqrt(float(np.mean((np.asarray(predicted, dtype=float) - values) ** 2)))


def run_ours(
    solver: str, data: Data, problem: Problem, threads: int, started: Callable[[], None], precision: str
) -> dict:
    import torch

    from precond.completion import complete

    biases, reg, scaling = SETTINGS[problem.kind]
    started()
    t0 = time.perf_counter()
    res = complete(
        *data.train,
        data.shape,
        problem.rank,
        reg=reg,
        solver=solver,
        max_iter=ITERATIONS,
        tol=0.0,
        biases=biases,
        validation=data.test,
        reg_scaling=scaling,
        dtype=getattr(torch, precision),
    )
    seconds = time.perf_counter() - t0
    history = [(int(i), float(tr), float(va) if va is not None else math.nan, float(s)) for i, tr, va, s in res.history]
    return {
        "seconds": seconds,
        "iterations": res.iterations,
        "seconds_per_iteration": per_iteration([h[3] for h in history]),
        "test_rmse": history[-1][2],
        "train_rmse": history[-1][1],
        "history": history,
    }


def run_cmfrec(
    method: str, data: Data, problem: Problem, threads: int, started: Callable[[], None], precision: str
) -> dict:
    import cmfrec
    import scipy.sparse as sp

    biases, reg, scaling = SETTINGS[problem.kind]
    rows, cols, values = data.train
    X = sp.coo_matrix((values, (rows, cols)), shape=data.shape)
    model = cmfrec.CMF(
        k=problem.rank,
        lambda_=reg,
        scale_lam=scaling == "count",
        method="als",
        use_cg=True,
        finalize_chol=True,
        niter=ITERATIONS,
        user_bias=biases,
        item_bias=biases,
        center=biases,
        nthreads=threads,
        use_float=precision == "float32",
        verbose=False,
    )
    started()
    t0 = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - t0
    test_rmse = _rmse(model.predict(user=data.test[0], item=data.test[1]), data.test[2])
    return {
        "seconds": seconds,
        "iterations": ITERATIONS,
        "seconds_per_iteration": seconds / ITERATIONS,
        "test_rmse": test_rmse,
    }


def run_softimpute(
    method: str, data: Data, problem: Problem, threads: int, started: Callable[[], None], precision: str
) -> dict:
    m, n = data.shape
    if m * n > DENSE_LIMIT:
        raise ValueError(f"SoftImpute needs a dense {m}×{n} array, over the {DENSE_LIMIT:,} entries allowed")
    from fancyimpute import SoftImpute

    rows, cols, values = data.train
    mean = float(values.mean()) if SETTINGS[problem.kind][0] else 0.0
    X = np.full((m, n), np.nan, dtype=precision)
    X[rows, cols] = values - mean
    model = SoftImpute(max_rank=problem.rank, max_iters=ITERATIONS, convergence_threshold=0.0, verbose=False)
    started()
    t0 = time.perf_counter()
    filled = model.fit_transform(X)
    seconds = time.perf_counter() - t0
    test_rmse = _rmse(filled[data.test[0], data.test[1]] + mean, data.test[2])
    return {
        "seconds": seconds,
        "iterations": ITERATIONS,
        "seconds_per_iteration": seconds / ITERATIONS,
        "test_rmse": test_rmse,
    }


def run_spark(
    method: str, data: Data, problem: Problem, threads: int, started: Callable[[], None], precision: str
) -> dict:
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession

    _, reg, _ = SETTINGS[problem.kind]
    spark = (
        SparkSession.builder.master(f"local[{threads}]")
        .appName("precond-bench-completion")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "8g")
        .config("spark.driver.extraJavaOptions", "-Xss64m")  # ALS's lineage overflows the default stack
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(max(1, threads)))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    checkpoints = tempfile.mkdtemp(prefix="precond-spark-")
    spark.sparkContext.setCheckpointDir(checkpoints)  # ALS checkpoints every 10 iterations (cuts the lineage)
    try:
        rows, cols, values = data.train
        train = spark.createDataFrame(
            list(zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True)), ["user", "item", "rating"]
        ).cache()
        train.count()
        test = spark.createDataFrame(
            list(zip(data.test[0].tolist(), data.test[1].tolist(), strict=True)), ["user", "item"]
        ).cache()
        test.count()
        als = ALS(
            rank=problem.rank,
            maxIter=ITERATIONS,
            regParam=reg,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            coldStartStrategy="nan",
            seed=0,
            numUserBlocks=max(1, threads),
            numItemBlocks=max(1, threads),
        )
        started()
        t0 = time.perf_counter()
        model = als.fit(train)
        model.userFactors.count()  # fit is lazy in parts: force the factors
        seconds = time.perf_counter() - t0
        pred: Any = model.transform(test).toPandas()
    finally:
        spark.stop()
        shutil.rmtree(checkpoints, ignore_errors=True)
    order = {(u, i): p for u, i, p in zip(pred["user"], pred["item"], pred["prediction"], strict=True)}
    predicted = np.array([order[(u, i)] for u, i in zip(data.test[0].tolist(), data.test[1].tolist(), strict=True)])
    return {
        "seconds": seconds,
        "iterations": ITERATIONS,
        "seconds_per_iteration": seconds / ITERATIONS,
        "test_rmse": _rmse(predicted, data.test[2]),
    }


RUNNERS: dict[str, Runner] = {
    "precond": run_ours,
    "cmfrec": run_cmfrec,
    "pyspark": run_spark,
    "fancyimpute": run_softimpute,
}


def solve(
    name: str,
    problem: Problem,
    seed: int,
    budget: float,
    threads: int,
    precision: str = DEFAULT_PRECISION,
    *,
    started: Callable[[], None],
) -> dict:
    """The budgeted child's job: build ``problem`` (untimed), then fit it with method ``name`` in ``precision``
    (one of :data:`PRECISIONS`); the result has
    ``seconds``, ``iterations``, ``seconds_per_iteration``, ``test_rmse`` (and ``history`` for ours), ``shape``
    and ``observations`` (training entries)."""
    library, method = method_spec(name)
    data = make_problem(Problem(*problem), seed)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    out = RUNNERS[library](method, data, Problem(*problem), threads, started, precision)
    out["shape"] = list(data.shape)
    out["observations"] = int(data.train[0].size)
    return out


def available_methods(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``names`` without the peers whose package is not installed, and one note per reason (plus the skipped
    peers of :data:`SKIPPED`)."""
    keep, notes = [], [f"note: {peer} not run: {why}" for peer, why in SKIPPED.items()]
    for name in names:
        library = method_spec(name)[0]
        if library != "precond" and importlib.util.find_spec(library) is None:
            notes.append(f"note: {library} is not installed; running without {name!r}")
            continue
        keep.append(name)
    return keep, notes
