"""Online choice of SOR/SSOR's relaxation ω over a sequence of linear systems (Khodak, Chow, Balcan, Talwalkar,
"Learning to Relax", ICLR 2024), fed only the iteration count of the ω it chose (bandit feedback).

* :class:`TsallisINF`: ½-Tsallis-entropy FTRL over an ω grid (Zimmert & Seldin 2021, Alg. 1) with importance-
  weighted cost estimates, the learning rate ``η_t = 2/√t`` and costs normalized by the running mean (as in the
  authors' ``TsallisINF.m``).  The normalizing constant is found by a *safeguarded* Newton iteration started at
  the right end of its bracket, so ``Σ p = 1`` holds to rounding; the authors' version restarts Newton at
  ``x = −1`` every round, overshoots once the loss estimates grow and samples from unnormalized weights.
* :class:`ChebCB`: the contextual learner: per-arm ridge regression of the normalized cost on Chebyshev
  polynomials ``T_0..T_{m−1}`` of a scalar context (the diagonal shift, the diffusion coefficient), actions drawn by
  inverse-gap weighting (Foster & Rakhlin 2020, SquareCB), competing with the instance-optimal ω.
* :func:`solve_sequence` runs a tuner over systems; :func:`replay` runs it over a precomputed cost table (the
  iteration count of every grid ω on every system), the exact offline equivalent used for evaluation.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from precond.linalg._sor import SolveStatus, sor, ssor_pcg

__all__ = [
    "DEFAULT_GRID",
    "ChebCB",
    "LinearSystem",
    "OmegaTuner",
    "SequenceResult",
    "TsallisINF",
    "replay",
    "solve_sequence",
    "tsallis_probabilities",
]

#: The ω grid of the paper's experiments: 20 points from 1 to 1.95.
DEFAULT_GRID = np.linspace(1.0, 1.95, 20)


def _grid(grid: Any) -> np.ndarray:
    g = DEFAULT_GRID.copy() if grid is None else np.asarray(grid, dtype=np.float64).reshape(-1)
    if g.size == 0:
        raise ValueError("`grid` is empty; give at least one ω in (0, 2)")
    if not np.isfinite(g).all() or (g <= 0).any() or (g >= 2).any():
        raise ValueError(f"every ω of `grid` must lie in the open interval (0, 2), got {g}")
    return g


def tsallis_probabilities(losses: Any, eta: float, tol: float = 1e-13, max_iter: int = 200) -> np.ndarray:
    """The ½-Tsallis-INF distribution ``p_i = 4 / (η (L_i − x))²`` with ``x < min L`` such that ``Σ p_i = 1``.

    With ``y = min L − x`` the sum ``g(y)`` is convex and decreasing, ``g(2/η) ≥ 1 ≥ g(2√d/η)``; Newton started at
    ``y = 2/η`` (the bracket's end where ``g ≥ 1``) increases monotonically to the root (tangents of a convex
    function lie below it), so it never overshoots the pole however large the losses are.  Returns ``p``
    (``Σ p = 1`` to about ``1e-13``; not renormalized).
    """
    L = np.asarray(losses, dtype=np.float64)
    if L.ndim != 1 or L.size == 0 or not np.isfinite(L).all():
        raise ValueError(f"`losses` must be a non-empty finite vector, got shape {L.shape}")
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"`eta` must be finite and > 0, got {eta}")
    u = L - L.min()
    d = L.size
    lo, hi = 2.0 / eta, 2.0 * math.sqrt(d) / eta
    y = lo
    for _ in range(max_iter):
        w = 4.0 / (eta * (u + y)) ** 2
        g = w.sum() - 1.0
        if abs(g) <= tol:
            break
        dg = (-2.0 * w / (u + y)).sum()
        y_new = min(max(y - g / dg, lo), hi)
        if y_new == y:
            break
        y = y_new
    result: np.ndarray = 4.0 / (eta * (u + y)) ** 2
    return result


class OmegaTuner(ABC):
    """A learner over an ω grid: :meth:`choose` an ω for the next system (given its context, if the learner
    uses one), solve, then :meth:`update` with the cost (the iteration count, ``≥ 1``)."""

    def __init__(self, grid: Any = None, seed: int | None = 0) -> None:
        self.grid = _grid(grid)
        self.rng = np.random.default_rng(seed)
        self.t = 0  # completed rounds
        self._pending: tuple[int, float, float | None] | None = None

    @property
    def d(self) -> int:
        return int(self.grid.size)

    @abstractmethod
    def probabilities(self, context: float | None = None) -> np.ndarray:
        """The sampling distribution over the grid for the next round."""

    def choose(self, context: float | None = None) -> float:
        """Draw the ω of the next round (call :meth:`update` with its cost before choosing again)."""
        if self._pending is not None:
            raise RuntimeError("choose() was called twice without update(cost) in between")
        p = self.probabilities(context)
        i = int(self.rng.choice(self.d, p=p / p.sum()))
        self._pending = (i, float(p[i]), context)
        return float(self.grid[i])

    @property
    def last_arm(self) -> int:
        """Grid index of the pending (or last updated) choice."""
        if self._pending is None:
            raise RuntimeError("no ω has been chosen yet")
        return self._pending[0]

    def update(self, cost: float) -> None:
        """Feed the cost (iterations, ``≥ 1``) of the ω returned by the last :meth:`choose`."""
        if self._pending is None:
            raise RuntimeError("update() needs a preceding choose()")
        if not (math.isfinite(cost) and cost >= 1):
            raise ValueError(f"`cost` must be a finite iteration count ≥ 1, got {cost}")
        i, p, context = self._pending
        self._learn(i, p, float(cost), context)
        self._pending = None
        self.t += 1

    @abstractmethod
    def _learn(self, arm: int, prob: float, cost: float, context: float | None) -> None: ...


class TsallisINF(OmegaTuner):
    """Tsallis-INF over an ω grid (Khodak et al. 2024, §3; Zimmert & Seldin 2021), non-contextual.

    Round ``t`` (1-based) samples from :func:`tsallis_probabilities` of ``L̂ / scale`` with ``η_t = 2/√t`` and
    adds ``(c_t − 1)/p_i`` to the chosen arm's estimate; ``scale = mean(c_1..c_{t−1}) − 1`` (at least 1)
    normalizes the costs online, as the authors' code does.

    Args:
        grid: the ω values (default :data:`DEFAULT_GRID`); seed: sampling seed.
    """

    def __init__(self, grid: Any = None, seed: int | None = 0, *, eta: float = 2.0) -> None:
        super().__init__(grid, seed)
        if not (math.isfinite(eta) and eta > 0):
            raise ValueError(f"`eta` must be finite and > 0, got {eta}")
        self.eta = eta
        self.loss = np.zeros(self.d)
        self._cost_sum = 0.0

    def scale(self) -> float:
        return max(self._cost_sum / self.t - 1.0, 1.0) if self.t else 1.0

    def probabilities(self, context: float | None = None) -> np.ndarray:
        return tsallis_probabilities(self.loss / self.scale(), self.eta / math.sqrt(self.t + 1))

    def _learn(self, arm: int, prob: float, cost: float, context: float | None) -> None:
        self.loss[arm] += (cost - 1.0) / prob
        self._cost_sum += cost


class ChebCB(OmegaTuner):
    """Contextual ω learner (Khodak et al. 2024, §4, ``ChebCB``): per-arm ridge regression of the normalized
    cost on Chebyshev features ``T_0..T_{m−1}`` of the context mapped to ``[−1, 1]``, and inverse-gap weighting
    ``p_i = 1/(d + η_t (ŷ_i − ŷ_min))`` (the greedy arm takes the rest) with ``η_t = eta·√(d t)``.

    Costs are normalized by their running mean, so ``ŷ`` is in units of a typical cost; an arm never played
    predicts 0 (optimistic) and is tried early.

    Args:
        context_range: ``(lo, hi)`` of the contexts (values outside are clipped).
        grid: ω values (default :data:`DEFAULT_GRID`); degree: ``m`` features (default 6, the paper's);
        ridge: ridge weight of each arm's fit; eta: exploration scale (larger is greedier); seed: sampling seed.
    """

    def __init__(
        self,
        context_range: tuple[float, float],
        grid: Any = None,
        *,
        degree: int = 6,
        ridge: float = 1e-2,
        eta: float = 10.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(grid, seed)
        lo, hi = (float(v) for v in context_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"`context_range` must be finite (lo, hi) with hi > lo, got {context_range}")
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"`degree` must be an integer ≥ 1, got {degree!r}")
        if not (ridge > 0 and math.isfinite(ridge)) or not (eta > 0 and math.isfinite(eta)):
            raise ValueError(f"`ridge` and `eta` must be finite and > 0, got {ridge}, {eta}")
        self.lo, self.hi, self.m, self.ridge, self.eta = lo, hi, degree, ridge, eta
        self.gram = np.tile(ridge * np.eye(degree), (self.d, 1, 1))
        self.rhs = np.zeros((self.d, degree))
        self.theta: np.ndarray = np.zeros((self.d, degree))
        self._cost_sum = 0.0

    def features(self, context: float) -> np.ndarray:
        """``[T_0(z), …, T_{m−1}(z)]`` with ``z`` the context mapped to ``[−1, 1]``."""
        z = float(np.clip(2.0 * (context - self.lo) / (self.hi - self.lo) - 1.0, -1.0, 1.0))
        return np.cos(np.arange(self.m) * math.acos(z))

    def predict(self, context: float) -> np.ndarray:
        """Predicted normalized cost of every arm at ``context``."""
        result: np.ndarray = self.theta @ self.features(context)
        return result

    def probabilities(self, context: float | None = None) -> np.ndarray:
        if context is None or not math.isfinite(float(context)):
            raise ValueError("ChebCB needs a finite scalar `context` for every system")
        y = self.predict(float(context))
        best = int(np.argmin(y))
        eta_t = self.eta * math.sqrt(self.d * (self.t + 1))
        p = 1.0 / (self.d + eta_t * (y - y[best]))
        p[best] = 0.0
        p[best] = max(1.0 - p.sum(), 0.0)
        return p

    def _learn(self, arm: int, prob: float, cost: float, context: float | None) -> None:
        assert context is not None
        self._cost_sum += cost
        scale = self._cost_sum / (self.t + 1)
        phi = self.features(context)
        self.gram[arm] += np.outer(phi, phi)
        self.rhs[arm] += phi * cost
        # refit every arm in the current normalization (one batched m×m solve)
        self.theta = np.linalg.solve(self.gram, self.rhs[:, :, None])[:, :, 0] / scale


@dataclass(frozen=True)
class LinearSystem:
    """One system of a sequence: ``A x = b`` with an optional warm start and scalar context."""

    A: Any
    b: Any
    x0: Any = None
    context: float | None = None


@dataclass(frozen=True)
class SequenceResult:
    """What :func:`solve_sequence` did: per system the ω chosen, the iterations, the status and the solution."""

    omegas: np.ndarray
    iterations: np.ndarray
    status: tuple[SolveStatus, ...]
    solutions: tuple[Any, ...]

    @property
    def total_iterations(self) -> int:
        return int(self.iterations.sum())

    @property
    def converged(self) -> bool:
        return all(s == "converged" for s in self.status)


def _as_system(item: Any, t: int) -> LinearSystem:
    if isinstance(item, LinearSystem):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3):
        return LinearSystem(item[0], item[1], context=item[2] if len(item) == 3 else None)
    raise TypeError(f"system {t} must be a LinearSystem or a tuple (A, b) / (A, b, context), got {type(item).__name__}")


def solve_sequence(
    systems: Iterable[Any],
    tuner: OmegaTuner | float,
    *,
    method: str = "sor",
    tol: float = 1e-8,
    max_iter: int = 10_000,
    warm_start: bool = False,
) -> SequenceResult:
    """Solve ``systems`` in order, each with the ω the ``tuner`` chooses (or a fixed ω), feeding back its cost.

    Args:
        systems: an iterable (a generator is fine) of :class:`LinearSystem` or tuples ``(A, b)`` /
            ``(A, b, context)``; a contextual tuner needs every context.
        tuner: an :class:`OmegaTuner`, or a number for a fixed ω.
        method: ``"sor"`` or ``"ssor_pcg"``.
        tol, max_iter: per system (see :func:`~precond.linalg.sor`, :func:`~precond.linalg.ssor_pcg`).
        warm_start: start each system (without its own ``x0``) from the previous solution.
    """
    solvers = {"sor": sor, "ssor_pcg": ssor_pcg}
    if method not in solvers:
        raise ValueError(f"`method` must be one of {', '.join(solvers)}, got {method!r}")
    if not isinstance(tuner, OmegaTuner):
        if isinstance(tuner, bool) or not isinstance(tuner, int | float | np.floating):
            raise TypeError(f"`tuner` must be an OmegaTuner or a fixed ω, got {type(tuner).__name__}")
        _grid([tuner])
    solve = solvers[method]
    omegas: list[float] = []
    iters: list[int] = []
    status: list[SolveStatus] = []
    sols: list[Any] = []
    previous: Any = None
    for t, item in enumerate(systems):
        system = _as_system(item, t)
        omega = tuner.choose(system.context) if isinstance(tuner, OmegaTuner) else float(tuner)
        x0 = system.x0 if system.x0 is not None or not warm_start else previous
        res = solve(system.A, system.b, omega, tol=tol, max_iter=max_iter, x0=x0)
        if isinstance(tuner, OmegaTuner):
            tuner.update(max(res.iterations, 1))
        omegas.append(omega)
        iters.append(res.iterations)
        status.append(res.status)
        sols.append(res.solution)
        previous = res.solution
    if not iters:
        raise ValueError("`systems` is empty; give at least one system")
    return SequenceResult(np.array(omegas), np.array(iters, dtype=np.int64), tuple(status), tuple(sols))


def replay(tuner: OmegaTuner, costs: Any, contexts: Any = None) -> np.ndarray:
    """Run ``tuner`` over a cost table ``costs [T, d]`` (iterations of grid ω ``i`` on system ``t``, every entry
    ``≥ 1``; ``d`` must match the tuner's grid), with ``contexts [T]`` for a contextual tuner; returns the arm
    chosen at every round ``[T]``.  Equivalent to :func:`solve_sequence` when the costs are those of the systems
    (a solve's cost does not depend on earlier choices), at the cost of a table lookup per round."""
    table = np.asarray(costs, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != tuner.d:
        raise ValueError(f"`costs` must have shape [T, {tuner.d}] (one column per grid ω), got {table.shape}")
    if table.shape[0] == 0:
        raise ValueError("`costs` is empty; give at least one round")
    if not np.isfinite(table).all() or (table < 1).any():
        raise ValueError("`costs` must hold finite iteration counts ≥ 1")
    ctx = None if contexts is None else np.asarray(contexts, dtype=np.float64).reshape(-1)
    if ctx is not None and ctx.shape[0] != table.shape[0]:
        raise ValueError(f"`contexts` must have one value per round ({table.shape[0]}), got {ctx.shape[0]}")
    arms = np.empty(table.shape[0], dtype=np.int64)
    for t in range(table.shape[0]):  # sequential by nature: each round learns from the previous ones
        tuner.choose(None if ctx is None else float(ctx[t]))
        arms[t] = tuner.last_arm
        tuner.update(float(table[t, arms[t]]))
    return arms
