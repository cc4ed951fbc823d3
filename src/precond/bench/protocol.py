"""The fair comparison protocol of ``precond bench``: tune every optimizer the same way, then compare at the end.

1. **Search.** For every optimizer of a :class:`Plan`, the bracketing learning-rate search of
   :mod:`precond.bench.search` (``lr_points`` start points over its range in :mod:`precond.bench.tuning`,
   extended while the best is at an end, ``lr_extend`` times at most per side, then ``lr_refine`` rounds that halve
   the log-step; values rounded to 4 significant digits so that keys are stable and readable): the same rule for
   every optimizer. ``lr_extend = lr_refine = 0`` is the fixed log grid. With ``tune_baseline``, the baseline
   (only) then gets a β2 pass at its best lr (the β2 values of its tuning entry, β1 kept) and a weight-decay pass
   at its best (lr, β2): the baseline sets the target, so an under-tuned one inflates every speedup. With
   ``sweep_weight_decay``, every optimizer gets the weight-decay pass at its best lr (``wd_points`` log-spaced
   values over the optimizer's ``weight_decay`` range, where it has one). Every trial trains to the end of the
   workload's budget under the same warmup + cosine schedule (:func:`~precond.bench.trial.run_trial`), with seed
   ``tune_seed``. With
   ``budget_seconds``, every trial trains for that many seconds of training wall-clock instead, the schedule
   running on the clock (equal-time mode).
2. **Select.** The best setting is the ``"ok"`` trial with the lowest *final* validation loss (ties: smaller lr, then
   smaller weight decay); never an intermediate checkpoint, since rankings flip once the learning rate decays.
3. **Seeds.** The best setting is rerun with ``seeds - 1`` further seeds (the smallest non-negative integers other
   than ``tune_seed``). The reruns are interleaved across optimizers (seed 1 of every optimizer, then seed 2, ...),
   so that a slow drift of the machine's load hits every optimizer alike rather than the last one.
4. **Compare** (:func:`summarize`, a pure function of the trial results):

   * ``target`` = the baseline's mean final validation loss over its seeds;
   * steps to target: on the **seed-averaged validation curve** (mean validation loss at every evaluated step), the
     first step at which it is ``<= target``, linearly interpolated between the two evaluations around the
     crossing (:func:`steps_to_target`). The baseline's own figure is computed the same way on its own mean curve;
     since that curve ends exactly at the target, it is the last step unless the mean curve dipped below the
     target earlier. Per-seed figures are reported too (``None`` for a seed that never reaches the target, which
     happens to about half of the baseline's own seeds, hence the mean curve for the speedup);
   * ``speedup`` = baseline steps to target / optimizer steps to target (``None`` if the optimizer never reaches
     it); ``seed_speedups`` divide the same baseline figure by each seed's own crossing, and their range
     (``speedup_spread``) is the seed spread a change of ``speedup`` is judged against; ``time_speedup`` is the
     same ratio for training wall-clock (validation excluded) interpolated at the same crossing;
     ``step_overhead`` = mean seconds in ``optimizer.step()`` / the baseline's;
   * **verdict**: ``"faster"`` or ``"slower"`` only if Welch's two-sample t-test on the seeds' final validation
     losses rejects equal means at level ``alpha`` (two-sided; default 0.01) **and** the ``mean ± std`` intervals do
     not overlap; otherwise ``"inconclusive"`` (always so with fewer than two seeds on either side). "Faster" means a
     significantly lower final loss at the same step budget, i.e. the baseline's final loss is reached earlier.
     ``"baseline"`` marks the baseline itself, ``"failed"`` an optimizer without any ``"ok"`` trial and
     ``"missing"`` one without any trial in the results. There is no "same" verdict: failing to detect a
     difference is not evidence of equality, so that case stays ``"inconclusive"``.

The t-test needs no scipy: critical values of Student's t come from a table (df 1-30, two-sided 0.05 and 0.01),
linearly interpolated in ``1/df`` for the fractional Welch-Satterthwaite degrees of freedom. The quantile is convex
in ``1/df``, so the interpolation overestimates it slightly: the test errs on the conservative side. Beyond 30
degrees of freedom the df-30 value is used (also conservative).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from precond.bench import trial as _trial
from precond.bench.environment import RunConditions, timing_warnings
from precond.bench.search import LRSearch, SearchTrace, bracket_search
from precond.bench.store import Store
from precond.bench.trial import CurvePoint, HParamValue, TrialResult, TrialSpec, WorkloadLike, run_trial
from precond.bench.tuning import sweep_ranges
from precond.optim.registry import spec as optimizer_spec

__all__ = [
    "ALPHAS",
    "Comparison",
    "OnResult",
    "OptimizerSummary",
    "Plan",
    "PlanProgress",
    "Summary",
    "SweepPoint",
    "Verdict",
    "mean_curve",
    "run_plan",
    "select_best",
    "steps_to_target",
    "summarize",
    "t_critical",
    "welch_test",
]

Verdict = Literal["baseline", "faster", "slower", "inconclusive", "failed", "missing"]
#: ``progress(spec, step_done, total_steps, train_loss)`` while a trial of a plan trains.
PlanProgress = Callable[[TrialSpec, int, int, float], None]
#: ``on_result(result, reused)`` after each trial of a plan; ``reused`` when it came from the store.
OnResult = Callable[[TrialResult, bool], None]

# Two-sided critical values of Student's t, df = 1..30 (standard tables).
# fmt: off
_T_05 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_T_01 = (
    63.657, 9.925, 5.841, 4.604, 4.032, 3.707, 3.499, 3.355, 3.250, 3.169,
    3.106, 3.055, 3.012, 2.977, 2.947, 2.921, 2.898, 2.878, 2.861, 2.845,
    2.831, 2.819, 2.807, 2.797, 2.787, 2.779, 2.771, 2.763, 2.756, 2.750,
)
# fmt: on
_T_TABLE: dict[float, tuple[float, ...]] = {0.05: _T_05, 0.01: _T_01}
ALPHAS: tuple[float, ...] = tuple(sorted(_T_TABLE))


def _round(value: float) -> float:
    return float(f"{value:.4g}")


# ------------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    """What to compare, and how hard to tune it.

    Attributes:
        workload, preset: the workload (``precond.bench.workloads.get_workload(workload, preset)``).
        optimizers: registry names; the ``baseline`` is put first if it is not among them.
        lr_points: start points of the lr search (log grid over the range in :mod:`precond.bench.tuning`).
        lr_extend: at most this many log-steps added beyond each end of the range while the best is at it.
        lr_refine: refinement rounds around the best, each halving the log-step (:mod:`precond.bench.search`).
        sweep_weight_decay: after the lr search, try ``wd_points`` weight decays at the best lr for optimizers
            whose tuning ranges have a ``weight_decay`` range; the others keep their default.
        tune_baseline: after its lr search, give the baseline a β2 pass (the ``beta2`` values of its
            :class:`~precond.bench.tuning.SweepRanges`) and then the weight-decay pass at the best so far.
        tune_seed: seed of the sweep.
        seeds: seeds of the winning setting, the tuning seed included.
        baseline: the optimizer that sets the target loss.
        alpha: two-sided level of the seed-based significance test (one of :data:`ALPHAS`).
        fixed_hparams: per optimizer, hyperparameters passed to every trial besides the swept ones
            (e.g. ``{"sgd": {"momentum": 0.0}}``); they are part of each trial's key.
        budget_seconds: equal-time mode: every trial trains for this many seconds of training wall-clock
            (validation excluded) instead of the workload's step budget; ``None``: equal steps.
    """

    workload: str
    optimizers: tuple[str, ...]
    preset: str = "quick"
    lr_points: int = 3
    lr_extend: int = 4
    lr_refine: int = 2
    sweep_weight_decay: bool = False
    wd_points: int = 3
    tune_baseline: bool = False
    tune_seed: int = 0
    seeds: int = 3
    baseline: str = "adamw"
    alpha: float = 0.01
    fixed_hparams: Mapping[str, Mapping[str, HParamValue]] = field(default_factory=dict, hash=False)
    budget_seconds: float | None = None

    def __post_init__(self) -> None:
        given = (self.optimizers,) if isinstance(self.optimizers, str) else tuple(self.optimizers)
        names = [optimizer_spec(n).name for n in given]
        baseline = optimizer_spec(self.baseline).name
        if baseline not in names:
            names.insert(0, baseline)
        for name in names:
            sweep_ranges(name)  # ValueError now, not after the first optimizers have trained
        object.__setattr__(self, "optimizers", tuple(dict.fromkeys(names)))
        object.__setattr__(self, "baseline", baseline)
        fixed = {optimizer_spec(k).name: dict(v) for k, v in self.fixed_hparams.items()}
        object.__setattr__(self, "fixed_hparams", fixed)
        for name in ("lr_points", "wd_points", "seeds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Plan.{name} must be an integer >= 1, got {value!r}")
        if self.alpha not in _T_TABLE:
            raise ValueError(f"Plan.alpha must be one of {ALPHAS}, got {self.alpha!r}")
        if self.tune_baseline:
            s = sweep_ranges(baseline)
            if not s.beta2 and "weight_decay" not in s:
                raise ValueError(
                    f"Plan.tune_baseline: the baseline {baseline!r} has neither beta2 values nor a weight_decay "
                    "range in precond.bench.tuning; add them there or drop tune_baseline"
                )
        self.search  # noqa: B018 - ValueError now for a bad lr_extend / lr_refine
        if self.budget_seconds is not None:
            TrialSpec(self.workload, self.preset, "adamw", (), 0, self.budget_seconds)  # the same check as trials'
            object.__setattr__(self, "budget_seconds", float(self.budget_seconds))

    @property
    def search(self) -> LRSearch:
        """The lr search rule of this plan."""
        return LRSearch(start_points=self.lr_points, max_extend=self.lr_extend, refine=self.lr_refine)

    def describe_search(self) -> str:
        """One sentence on the tuning this plan runs (printed by the CLI and the report)."""
        text = self.search.describe()
        if self.lr_extend == 0 and self.lr_refine == 0:
            text = f"a fixed grid of {self.lr_points} log-spaced lrs over the tuning range"
        if self.tune_baseline:
            s = sweep_ranges(self.baseline)
            parts = []
            if s.beta2:
                parts.append(f"beta2 in {{{', '.join(f'{b:g}' for b in s.beta2)}}} (beta1 {s.beta1:g}) at its best lr")
            if "weight_decay" in s:
                parts.append(f"{self.wd_points} weight decays at its best setting")
            text += f"; then for the baseline {self.baseline}: {', then '.join(parts)}"
        if self.sweep_weight_decay:
            text += f"; then {self.wd_points} weight decays at the best lr, where the optimizer has a range"
        budget = f"{self.budget_seconds:g} s of training" if self.budget_seconds else "the workload's steps"
        return f"{text}; every trial runs {budget}, seed {self.tune_seed}; best by final validation loss"

    def grid(self, optimizer: str) -> list[dict[str, HParamValue]]:
        """The search's start points for ``optimizer`` (lr ascending), fixed hyperparameters included: the whole
        sweep when ``lr_extend = lr_refine = 0`` and no weight-decay pass."""
        s = sweep_ranges(optimizer)
        fixed = dict(self.fixed_hparams.get(s.name, {}))
        return [{**fixed, "lr": _round(v)} for v in s.grid("lr", self.lr_points)]

    def spec_for(self, optimizer: str, hparams: Mapping[str, HParamValue], seed: int | None = None) -> TrialSpec:
        """The trial of ``optimizer`` with ``hparams`` (on top of the plan's fixed ones) and ``seed`` (default the
        tuning seed) under this plan's workload and budget."""
        name = optimizer_spec(optimizer).name
        point = {**self.fixed_hparams.get(name, {}), **hparams}
        chosen = self.tune_seed if seed is None else seed
        return TrialSpec.make(self.workload, self.preset, name, point, chosen, self.budget_seconds)

    def sweep(
        self, optimizer: str, lookup: Callable[[TrialSpec], TrialResult | None]
    ) -> tuple[list[TrialSpec], list[TrialResult], SearchTrace]:
        """Run the search of ``optimizer`` against ``lookup`` (which trains a trial, or finds it among results,
        or answers ``None``: the search stops there). The specs asked for (in order, the missing one included),
        the results found, and the lr search's trace."""
        s = sweep_ranges(optimizer)
        specs: list[TrialSpec] = []
        found: list[TrialResult] = []

        def ask(spec: TrialSpec) -> TrialResult | None:
            specs.append(spec)
            result = lookup(spec)
            if result is not None:
                found.append(result)
            return result

        def evaluate(lr: float) -> float | None:
            result = ask(self.spec_for(s.name, {"lr": lr}))
            if result is None:
                return None
            return result.final_val if result.ok and result.final_val is not None else math.inf

        low, high = s.ranges["lr"]
        trace = bracket_search(low, high, self.search, evaluate)
        if not trace.complete or trace.best is None:
            return specs, found, trace
        point: dict[str, HParamValue] = {"lr": trace.best}
        baseline_pass = self.tune_baseline and s.name == self.baseline
        if baseline_pass and s.beta2:
            for beta2 in s.beta2:
                if ask(self.spec_for(s.name, {**point, "betas": s.betas(beta2)})) is None:
                    return specs, found, trace
            winner = select_best(found)
            if winner is not None:
                point = {k: v for k, v in winner.spec.hparams_dict.items() if k in ("lr", "betas")}
        if (self.sweep_weight_decay or baseline_pass) and "weight_decay" in s:
            for wd in s.grid("weight_decay", self.wd_points):
                if ask(self.spec_for(s.name, {**point, "weight_decay": _round(wd)})) is None:
                    break
        return specs, found, trace

    def sweep_specs(self, optimizer: str) -> list[TrialSpec]:
        """The search's start trials of ``optimizer`` (the later ones depend on their results: :meth:`sweep`)."""
        name = optimizer_spec(optimizer).name
        return [self.spec_for(name, hp) for hp in self.grid(name)]

    def expected_trials(self, optimizer: str) -> int:
        """Trials of ``optimizer`` when its optimum lies inside the range (no extension): start + 2 per refinement
        (at most; fewer when a point was tried already) (+ the weight-decay pass) + seed reruns."""
        s = sweep_ranges(optimizer)
        baseline_pass = self.tune_baseline and s.name == self.baseline
        wd = self.wd_points if (self.sweep_weight_decay or baseline_pass) and "weight_decay" in s else 0
        beta2 = len(s.beta2) if baseline_pass else 0
        return self.lr_points + 2 * self.lr_refine + beta2 + wd + self.seeds - 1

    def extra_seeds(self) -> tuple[int, ...]:
        """The seeds the winner is rerun with: the ``seeds - 1`` smallest non-negative ints other than
        ``tune_seed``."""
        out: list[int] = []
        candidate = 0
        while len(out) < self.seeds - 1:
            if candidate != self.tune_seed:
                out.append(candidate)
            candidate += 1
        return tuple(out)

    def seed_specs(self, best: TrialSpec) -> list[TrialSpec]:
        """The reruns of the winning trial ``best`` with :meth:`extra_seeds`."""
        return [best.with_seed(s) for s in self.extra_seeds()]

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "fixed_hparams"}
        out["optimizers"] = list(self.optimizers)
        out["fixed_hparams"] = {k: dict(v) for k, v in self.fixed_hparams.items()}
        out["search"] = self.describe_search()
        return out


# ------------------------------------------------------------------------------------------------ pure pieces


def select_best(results: Iterable[TrialResult]) -> TrialResult | None:
    """The ``"ok"`` result with the lowest final validation loss; ties go to the smaller lr, then the smaller
    weight decay. ``None`` when no result is ``"ok"``."""

    def number(value: object) -> float:
        return float(value) if isinstance(value, (int, float)) else 0.0

    def order(r: TrialResult) -> tuple[float, float, float]:
        hp = r.spec.hparams_dict
        assert r.final_val is not None
        return (r.final_val, number(hp.get("lr")), number(hp.get("weight_decay")))

    ok = [r for r in results if r.ok]
    return min(ok, key=order) if ok else None


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (``n - 1``); ``None`` for fewer than two values."""
    if len(values) < 2:
        return None
    m = _mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def mean_curve(curves: Sequence[Sequence[CurvePoint]], *, by_index: bool = False) -> tuple[CurvePoint, ...]:
    """Pointwise mean ``(step, val_loss, seconds)`` over ``curves``, at the steps every curve evaluated; with
    ``by_index`` (equal-time trials, evaluated at the same fractions of the budget but at different steps), the
    mean of the ``i``-th points, step rounded, over the length of the shortest curve."""
    if not curves:
        return ()
    if by_index:
        length = min(len(c) for c in curves)
        return tuple(
            (
                round(_mean([c[i][0] for c in curves])),
                _mean([c[i][1] for c in curves]),
                _mean([c[i][2] for c in curves]),
            )
            for i in range(length)
        )
    common = set.intersection(*({p[0] for p in c} for c in curves))
    maps = [{p[0]: p for p in c} for c in curves]
    return tuple(
        (step, _mean([m[step][1] for m in maps]), _mean([m[step][2] for m in maps])) for step in sorted(common)
    )


def steps_to_target(curve: Sequence[CurvePoint], target: float) -> tuple[float, float] | None:
    """``(steps, seconds)`` at which ``curve`` first reaches ``val_loss <= target``, linearly interpolated between
    the evaluation before the crossing and the first one at or below the target; ``None`` if it never does."""
    for i, (step, val, seconds) in enumerate(curve):
        if val <= target:
            if i == 0:
                return float(step), float(seconds)
            prev_step, prev_val, prev_seconds = curve[i - 1]
            frac = (prev_val - target) / (prev_val - val)
            return prev_step + frac * (step - prev_step), prev_seconds + frac * (seconds - prev_seconds)
    return None


def t_critical(df: float, alpha: float = 0.01) -> float:
    """Two-sided critical value of Student's t at level ``alpha`` for ``df`` degrees of freedom (table, linear in
    ``1/df`` between integers; conservative, see the module docstring)."""
    table = _T_TABLE[alpha]
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df!r}")
    if df >= len(table):
        return table[-1]
    lo = math.floor(df)
    if lo == df:
        return table[lo - 1]
    w = (1 / lo - 1 / df) / (1 / lo - 1 / (lo + 1))
    return table[lo - 1] + w * (table[lo] - table[lo - 1])


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of an optimizer's final validation losses against the baseline's.

    ``delta`` = optimizer mean - baseline mean (negative: lower loss); ``t`` = ``delta / se`` (``None`` when both
    samples are constant and equal); ``df`` the Welch-Satterthwaite degrees of freedom; ``significant`` when
    ``|t| > critical``; ``overlap`` when ``|delta| <= std_optimizer + std_baseline``.
    """

    delta: float
    t: float | None
    df: float | None
    critical: float | None
    alpha: float
    significant: bool
    overlap: bool


def welch_test(sample: Sequence[float], baseline: Sequence[float], alpha: float = 0.01) -> Comparison | None:
    """Compare ``sample`` with ``baseline`` (see :class:`Comparison`); ``None`` if either has fewer than 2 values."""
    na, nb = len(sample), len(baseline)
    if na < 2 or nb < 2:
        return None
    ma, mb = _mean(sample), _mean(baseline)
    sa, sb = _std(sample), _std(baseline)
    assert sa is not None and sb is not None
    delta = ma - mb
    va, vb = sa * sa / na, sb * sb / nb
    se2 = va + vb
    overlap = abs(delta) <= sa + sb
    if se2 == 0.0:
        if delta == 0.0:
            return Comparison(delta, None, None, None, alpha, False, True)
        return Comparison(delta, math.copysign(math.inf, delta), None, None, alpha, True, overlap)
    denom = (va * va / (na - 1) if va else 0.0) + (vb * vb / (nb - 1) if vb else 0.0)
    df = se2 * se2 / denom
    t = delta / math.sqrt(se2)
    critical = t_critical(max(1.0, df), alpha)
    return Comparison(delta, t, df, critical, alpha, abs(t) > critical, overlap)


# --------------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class SweepPoint:
    """One tuning trial as the report shows it."""

    hparams: dict[str, HParamValue]
    status: str
    final_val: float | None
    message: str


@dataclass(frozen=True)
class OptimizerSummary:
    """Everything the report says about one optimizer (see the module docstring for the definitions).

    Seed statistics are over the ``"ok"`` trials of the best setting (``n`` of them); ``final_std`` is the sample
    standard deviation (``None`` for one seed); ``steps_run`` their mean number of steps (in equal-time mode, how
    many steps the budget bought). ``lr_at_edge``: the searched best lr is still the smallest or largest tried
    (the optimum may lie beyond); ``lr_extended``: log-steps the search added below and above the range. Times
    are seconds, memory bytes; ``state_bytes`` and ``model_bytes`` are those of the best setting's tuning trial.
    ``conditions`` are the run conditions (threads, load) of those seed runs, whose wall-clock the time figures
    average (``None`` where not recorded).
    """

    optimizer: str
    verdict: Verdict
    best_hparams: dict[str, HParamValue] | None
    sweep: tuple[SweepPoint, ...]
    trials_planned: int
    trials_found: int
    diverged: int
    errors: int
    seeds: tuple[int, ...] = ()
    final_vals: tuple[float, ...] = ()
    final_mean: float | None = None
    final_std: float | None = None
    n: int = 0
    curve: tuple[CurvePoint, ...] = ()
    steps_to_target: float | None = None
    seed_steps_to_target: tuple[float | None, ...] = ()
    speedup: float | None = None
    seed_speedups: tuple[float | None, ...] = ()
    seconds_to_target: float | None = None
    time_speedup: float | None = None
    train_seconds: float | None = None
    step_seconds: float | None = None
    step_overhead: float | None = None
    state_bytes: int | None = None
    model_bytes: int | None = None
    comparison: Comparison | None = None
    conditions: tuple[RunConditions | None, ...] = ()
    lr_at_edge: bool = False
    lr_extended: tuple[int, int] = (0, 0)
    steps_run: float | None = None

    @property
    def complete(self) -> bool:
        """Whether every planned trial (sweep and seeds) was among the results."""
        return self.trials_found == self.trials_planned

    @property
    def speedup_spread(self) -> float | None:
        """The seed spread of ``speedup``: max - min of :attr:`seed_speedups` (each seed's own curve against the
        baseline's mean-curve crossing); ``None`` unless every seed reached the target and there are two or more."""
        values = [v for v in self.seed_speedups if v is not None]
        if len(values) < 2 or len(values) != len(self.seed_speedups):
            return None
        return max(values) - min(values)


@dataclass(frozen=True)
class Summary:
    """The outcome of a :class:`Plan`: the target and one :class:`OptimizerSummary` per optimizer (plan order).

    ``timing_warnings``: why the wall-clock figures should not be trusted, when the compared runs' conditions
    differ (:func:`precond.bench.environment.timing_warnings`); empty when they are comparable.
    """

    plan: Plan
    target: float | None
    optimizers: tuple[OptimizerSummary, ...]
    code_version: str | None = None
    timing_warnings: tuple[str, ...] = ()

    def get(self, optimizer: str) -> OptimizerSummary:
        for o in self.optimizers:
            if o.optimizer == optimizer:
                return o
        raise KeyError(optimizer)

    @property
    def baseline(self) -> OptimizerSummary:
        return self.get(self.plan.baseline)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dicts and lists; non-finite floats (an infinite ``t``) become ``None``."""
        return {
            "plan": self.plan.to_dict(),
            "target": self.target,
            "code_version": self.code_version,
            "timing_warnings": list(self.timing_warnings),
            "optimizers": [_jsonable({**asdict(o), "complete": o.complete}) for o in self.optimizers],
        }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _summarize_one(
    plan: Plan, name: str, by_spec: Mapping[TrialSpec, TrialResult]
) -> tuple[OptimizerSummary, list[TrialResult]]:
    """The target-independent part of an optimizer's summary, and the ``"ok"`` runs of its best setting."""
    sweep_specs, found, trace = plan.sweep(name, by_spec.get)
    sweep = tuple(
        SweepPoint(s.hparams_dict, by_spec[s].status, by_spec[s].final_val, by_spec[s].message)
        if s in by_spec
        else SweepPoint(s.hparams_dict, "missing", None, "")
        for s in sweep_specs
    )
    best = select_best(found)
    planned = len(sweep_specs) + len(plan.extra_seeds())
    if not trace.complete:  # the search stopped at a missing trial: it would have run at least the usual number
        planned = max(planned, plan.expected_trials(name))
    base: dict[str, Any] = {
        "optimizer": name,
        "sweep": sweep,
        "diverged": sum(r.status == "diverged" for r in found),
        "errors": sum(r.status == "error" for r in found),
        "trials_planned": planned,
        "lr_at_edge": trace.at_edge,
        "lr_extended": trace.extended,
    }
    if best is None:
        verdict: Verdict = "failed" if found else "missing"
        return OptimizerSummary(verdict=verdict, best_hparams=None, trials_found=len(found), **base), []
    reruns = [by_spec[s] for s in plan.seed_specs(best.spec) if s in by_spec]
    base["diverged"] += sum(r.status == "diverged" for r in reruns)
    base["errors"] += sum(r.status == "error" for r in reruns)
    runs = [best] + [r for r in reruns if r.ok]
    finals = [r.final_val for r in runs if r.final_val is not None]
    summary = OptimizerSummary(
        verdict="inconclusive",
        best_hparams=best.spec.hparams_dict,
        trials_found=len(found) + len(reruns),
        seeds=tuple(r.spec.seed for r in runs),
        final_vals=tuple(finals),
        final_mean=_mean(finals),
        final_std=_std(finals),
        n=len(runs),
        curve=mean_curve([r.curve for r in runs], by_index=plan.budget_seconds is not None),
        steps_run=_mean([float(r.steps_run) for r in runs]),
        train_seconds=_mean([r.train_seconds for r in runs]),
        step_seconds=_mean([r.step_seconds for r in runs]),
        state_bytes=best.state_bytes,
        model_bytes=best.model_bytes,
        conditions=tuple(r.conditions for r in runs),
        **base,
    )
    return summary, runs


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def summarize(plan: Plan, results: Iterable[TrialResult], code_version: str | None = None) -> Summary:
    """Summarise ``results`` under ``plan`` (results of trials the plan does not name are ignored; trials it names
    but ``results`` lacks are counted as missing). Pure: no training, no store."""
    by_spec: dict[TrialSpec, TrialResult] = {}
    for r in results:
        if (r.spec.workload, r.spec.preset) == (plan.workload, plan.preset):
            by_spec[r.spec] = r
    raw = {name: _summarize_one(plan, name, by_spec) for name in plan.optimizers}
    base = raw[plan.baseline][0]
    target = base.final_mean
    base_cross = steps_to_target(base.curve, target) if target is not None else None
    out = []
    for name, (o, runs) in raw.items():
        if o.best_hparams is None:
            out.append(o)
            continue
        cross = steps_to_target(o.curve, target) if target is not None else None
        seed_crosses = [steps_to_target(r.curve, target) if target is not None else None for r in runs]
        seed_steps = tuple(None if c is None else c[0] for c in seed_crosses)
        comparison = None
        verdict: Verdict = "baseline" if name == plan.baseline else "inconclusive"
        if name != plan.baseline and base.final_vals:
            comparison = welch_test(o.final_vals, base.final_vals, plan.alpha)
            if comparison is not None and comparison.significant and not comparison.overlap:
                verdict = "faster" if comparison.delta < 0 else "slower"
        out.append(
            replace(
                o,
                verdict=verdict,
                steps_to_target=None if cross is None else cross[0],
                seconds_to_target=None if cross is None else cross[1],
                seed_steps_to_target=seed_steps,
                seed_speedups=tuple(_ratio(base_cross[0] if base_cross else None, c) for c in seed_steps),
                speedup=_ratio(base_cross[0] if base_cross else None, cross[0] if cross else None),
                time_speedup=_ratio(base_cross[1] if base_cross else None, cross[1] if cross else None),
                step_overhead=_ratio(o.step_seconds, base.step_seconds),
                comparison=comparison,
            )
        )
    compared = [c for o in out for c in o.conditions]
    warnings = tuple(timing_warnings(compared, "runs"))
    return Summary(plan=plan, target=target, optimizers=tuple(out), code_version=code_version, timing_warnings=warnings)


# --------------------------------------------------------------------------------------------------- running


def run_plan(
    plan: Plan,
    store: Store,
    *,
    workload: WorkloadLike | None = None,
    code_version: str | None = None,
    progress: PlanProgress | None = None,
    on_result: OnResult | None = None,
    rerun_errors: bool = False,
) -> Summary:
    """Run ``plan``: every trial is taken from ``store`` when it holds one with the same key (same spec and code
    version), else run and stored at once, so an interrupted plan resumes where it stopped.

    ``workload`` defaults to ``get_workload(plan.workload, plan.preset)``; ``code_version`` to
    :func:`precond.bench.trial.code_version`. ``rerun_errors`` reruns stored trials whose status is ``"error"``
    (diverged trials are results and are always reused). A ``KeyboardInterrupt`` propagates; the store then holds
    every trial finished before it.
    """
    if workload is None:
        from precond.bench.workloads import get_workload

        workload = get_workload(plan.workload, plan.preset)
    if (workload.name, workload.preset) != (plan.workload, plan.preset):
        raise ValueError(
            f"plan is for {plan.workload}/{plan.preset} but the workload is {workload.name}/{workload.preset}"
        )
    version = code_version if code_version is not None else _trial.code_version()
    results: list[TrialResult] = []

    def obtain(spec: TrialSpec) -> TrialResult:
        result = store.get(spec.key(version))
        reused = result is not None and not (rerun_errors and result.status == "error")
        if result is None or not reused:
            bound = None if progress is None else (lambda step, total, loss: progress(spec, step, total, loss))
            result = run_trial(workload, spec, bound)
            store.put(result, version)
        if on_result is not None:
            on_result(result, reused)
        results.append(result)
        return result

    winners = []
    for name in plan.optimizers:
        _, found, _ = plan.sweep(name, obtain)
        best = select_best(found)
        if best is not None:
            winners.append(best.spec)
    for seed in plan.extra_seeds():  # interleaved across optimizers (module docstring, step 3)
        for spec in winners:
            obtain(spec.with_seed(seed))
    return summarize(plan, results, version)
