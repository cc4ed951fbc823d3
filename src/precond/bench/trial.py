"""One benchmark trial: train one optimizer with one hyperparameter setting and one seed on one workload.

A trial is named by a :class:`TrialSpec` and its outcome is a :class:`TrialResult`. :func:`run_trial` runs it under
the protocol every optimizer shares:

* **seeding**: ``torch.manual_seed(seed)`` before the task is built, inside :func:`torch.random.fork_rng` (workloads
  seed their own generators too);
* **schedule**: the learning rate of every param group is multiplied by :func:`schedule_factor`: linear warmup over
  ``workload.warmup`` steps, then a cosine decay that reaches 0 at ``workload.steps``; the same for every optimizer;
* **evaluation**: ``task.validate()`` at step 0, every ``workload.eval_every`` steps and after the last step;
  validation time is excluded from the trial's clock;
* **divergence**: a non-finite training loss, a training loss above ``divergence_factor`` times the first step's
  (when that is positive) or a non-finite validation loss stops the trial with status ``"diverged"``;
* **errors**: any exception while building the task or the optimizer, or while training, gives status ``"error"``
  with the exception in ``message``, so a sweep goes on. ``KeyboardInterrupt`` is not caught: an interrupted trial
  has no result (and so is never stored).

Trials are keyed by :meth:`TrialSpec.key` together with :func:`code_version`, so results computed by different code
are never mixed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from precond.bench import interface as _interface
from precond.bench import versions as _versions
from precond.bench.environment import RunConditions
from precond.optim.registry import create
from precond.optim.registry import spec as _optimizer_spec

__all__ = [
    "CurvePoint",
    "HParamValue",
    "Progress",
    "Status",
    "TaskLike",
    "TrialResult",
    "TrialSpec",
    "WorkloadLike",
    "code_version",
    "optimizer_state_bytes",
    "run_trial",
    "schedule_factor",
    "time_schedule_factor",
]

#: A hyperparameter value a trial may carry (tuples for e.g. ``betas``).
HParamValue = bool | int | float | str | tuple[Any, ...]
Status = Literal["ok", "diverged", "error"]
STATUSES: tuple[Status, ...] = ("ok", "diverged", "error")
#: ``progress(step_done, total_steps, train_loss)``, called after every optimizer step.
Progress = Callable[[int, int, float], None]


#: What :func:`run_trial` needs from a built task and from a workload: the user-facing interface
#: (:mod:`precond.bench.interface`), which the built-in workloads implement too.
TaskLike = _interface.TaskLike
WorkloadLike = _interface.Workload


def _freeze_value(name: str, value: Any) -> HParamValue:
    """A hashable, JSON-representable hyperparameter value (lists become tuples; NaN/inf are refused)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_value(name, v) for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"hyperparameter {name}={value!r} must be finite")
    if isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"hyperparameter {name}={value!r}: expected bool, int, float, str or a tuple of them")


@dataclass(frozen=True)
class TrialSpec:
    """What a trial runs: ``optimizer`` with ``hparams`` (on top of the registry's defaults) on ``workload`` at
    ``preset``, seeded with ``seed``.

    ``hparams`` is stored as a tuple of ``(name, value)`` pairs sorted by name, so equal settings give equal (and
    equally hashed) specs; a mapping is accepted and converted (:meth:`make` is the typed way to pass one).
    """

    workload: str
    preset: str
    optimizer: str
    hparams: tuple[tuple[str, HParamValue], ...]
    seed: int
    budget_seconds: float | None = None

    def __post_init__(self) -> None:
        items = self.hparams.items() if isinstance(self.hparams, Mapping) else self.hparams
        pairs = [(str(k), _freeze_value(str(k), v)) for k, v in items]
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate hyperparameter names in {names}")
        object.__setattr__(self, "hparams", tuple(sorted(pairs)))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        object.__setattr__(self, "optimizer", self.optimizer.lower())
        if self.budget_seconds is not None:
            budget = self.budget_seconds
            if isinstance(budget, bool) or not isinstance(budget, int | float) or not (0 < budget < math.inf):
                raise ValueError(f"budget_seconds must be a positive finite number of seconds, got {budget!r}")
            object.__setattr__(self, "budget_seconds", float(budget))

    @classmethod
    def make(
        cls,
        workload: str,
        preset: str,
        optimizer: str,
        hparams: Mapping[str, Any],
        seed: int,
        budget_seconds: float | None = None,
    ) -> TrialSpec:
        """A spec from a hyperparameter mapping."""
        return cls(workload, preset, optimizer, tuple(hparams.items()), seed, budget_seconds)

    def with_seed(self, seed: int) -> TrialSpec:
        """The same trial with another seed."""
        return TrialSpec(self.workload, self.preset, self.optimizer, self.hparams, seed, self.budget_seconds)

    @property
    def hparams_dict(self) -> dict[str, HParamValue]:
        """``hparams`` as a fresh dict."""
        return dict(self.hparams)

    def canonical(self, code_version: str) -> str:
        """The canonical JSON text the key hashes: sorted keys, no whitespace, floats in shortest round-trip form."""
        payload: dict[str, Any] = {
            "workload": self.workload,
            "preset": self.preset,
            "optimizer": self.optimizer,
            "hparams": self.hparams_dict,
            "seed": self.seed,
            "code_version": code_version,
        }
        if self.budget_seconds is not None:  # absent for step-budget trials, so their keys never changed
            payload["budget_seconds"] = self.budget_seconds
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def key(self, code_version: str) -> str:
        """Stable identity of this trial run by code ``code_version``: the SHA-256 hex digest of :meth:`canonical`.

        Note that ``lr=1`` and ``lr=1.0`` are different keys (JSON keeps the type); the protocol always passes floats.
        """
        return hashlib.sha256(self.canonical(code_version).encode()).hexdigest()

    def label(self) -> str:
        """Short human-readable form, e.g. ``adamw lr=0.001 seed=0``."""
        hp = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.hparams)
        budget = "" if self.budget_seconds is None else f" budget={self.budget_seconds:g}s"
        return f"{self.optimizer} {hp} seed={self.seed}{budget}".replace("  ", " ")


#: One point of a validation curve: ``(step, validation loss, training seconds up to that step)``.
CurvePoint = tuple[int, float, float]


@dataclass(frozen=True)
class TrialResult:
    """The outcome of one trial.

    Attributes:
        spec: what ran.
        status: ``"ok"``; ``"diverged"`` (stopped early, see ``message``); ``"error"`` (an exception, in ``message``).
        final_val: validation loss after the last step (``None`` unless ``status == "ok"``).
        curve: validation points ``(step, val_loss, train_seconds_so_far)``, from step 0; for a diverged trial,
            the points before the divergence.
        steps_run: optimizer steps taken.
        train_seconds: wall-clock seconds of training (forward, backward, ``optimizer.step()``, scheduler);
            validation excluded.
        step_seconds: mean wall-clock seconds inside ``optimizer.step()``.
        state_bytes: bytes of the optimizer's state tensors after the last step (:func:`optimizer_state_bytes`).
        model_bytes: bytes of the parameters plus their gradients.
        message: why a trial diverged or failed (empty when ``ok``).
        conditions: torch threads, cores and load average at the start and end of the trial
            (:class:`~precond.bench.environment.RunConditions`); ``None`` for trials stored before they were
            recorded. The report warns when compared trials' conditions differ (their wall-clock is then unreliable).

    There is no peak-memory figure: in one process that runs trial after trial on CPU, resident-set growth is
    not a per-trial quantity (the allocator reuses pages that earlier trials left resident, so later trials show
    ~0 while the first pays one-time import costs), ``ru_maxrss`` is process-wide and monotone, ``tracemalloc``
    does not see torch's allocator and torch keeps no peak statistics on CPU. ``state_bytes`` is the exact figure
    of what the optimizer keeps; a true peak would need a fresh process per trial.
    """

    spec: TrialSpec
    status: Status
    final_val: float | None
    curve: tuple[CurvePoint, ...]
    steps_run: int
    train_seconds: float
    step_seconds: float
    state_bytes: int
    model_bytes: int
    message: str = ""
    conditions: RunConditions | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "ok" and self.final_val is None:
            raise ValueError("an 'ok' trial needs a final_val")
        object.__setattr__(self, "curve", tuple((int(s), float(v), float(t)) for s, v, t in self.curve))

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ------------------------------------------------------------------------------------------------------ schedule


def schedule_factor(step: int, warmup: int, steps: int) -> float:
    """Learning-rate multiplier for the update at 0-based ``step``.

    Linear warmup ``(step + 1) / warmup`` for ``step < warmup`` (so the first update is not zero), then a cosine
    decay ``0.5 * (1 + cos(pi * (step - warmup) / (steps - warmup)))`` that would reach 0 at ``step == steps``.
    """
    if step < warmup:
        return (step + 1) / warmup
    span = steps - warmup
    if span <= 0:
        return 1.0
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------------------ memory


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _plain_object(obj: object) -> bool:
    """An instance of a non-torch class with attributes (not a class, function or module)."""
    return (
        hasattr(obj, "__dict__")
        and not isinstance(obj, type)
        and not type(obj).__module__.startswith(("torch", "builtins", "types"))
    )


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the distinct storages behind the tensors in ``optimizer.state`` (nested dicts/lists included, and
    the attributes of plain objects kept there, e.g. pytorch_optimizer's ``PreConditioner`` and ``Graft``).

    Storages are counted once, so state kept as views into shared buffers (precond's bucketed optimizers) is
    counted at its real size; storages shared with the parameters themselves are not counted. Also the step-time
    benchmark's counter (``benchmarks/step``), for anything with ``state`` and ``param_groups``.
    """
    params = {_storage_key(p) for g in optimizer.param_groups for p in g["params"] if isinstance(p, torch.Tensor)}
    seen: dict[tuple[str, int], int] = {}
    objects: set[int] = set()

    def visit(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            key = _storage_key(obj)
            if key not in params and obj.device.type != "meta":
                seen[key] = obj.untyped_storage().nbytes()
        elif isinstance(obj, Mapping):
            for v in obj.values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)
        elif _plain_object(obj) and id(obj) not in objects:
            objects.add(id(obj))
            for v in vars(obj).values():
                visit(v)

    for per_param in optimizer.state.values():
        visit(per_param)
    return sum(seen.values())


def _model_bytes(model: nn.Module) -> int:
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
        if p.grad is not None:
            total += p.grad.numel() * p.grad.element_size()
    return total


# ------------------------------------------------------------------------------------------------ code version


def code_version() -> str:
    """The optimizer benchmark's code version (:func:`precond.bench.versions.code_version` of area
    ``"optimizer"``): editing an optimizer, a kernel, the training loop or a workload invalidates stored trials;
    editing the OT harness, the store, the protocol, the report or the CLI does not. The hashed files are
    :data:`precond.bench.versions.OPTIMIZER` ``.files()``."""
    return _versions.code_version("optimizer")


# ------------------------------------------------------------------------------------------------------ running


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text


def time_schedule_factor(elapsed: float, budget: float, warmup_fraction: float, warmup_steps: int) -> float:
    """Learning-rate multiplier of an equal-time trial, for an update that starts ``elapsed`` training seconds into
    a ``budget``: :func:`schedule_factor` with progress measured in time instead of steps. Linear warmup over the
    first ``warmup_fraction`` of the budget (at least ``1 / warmup_steps``, so the first update is not zero, as in
    step mode), then the cosine decay that reaches 0 at ``elapsed == budget``."""
    u = min(1.0, max(0.0, elapsed / budget))
    if u < warmup_fraction:
        return max(u / warmup_fraction, 1.0 / max(1, warmup_steps))
    span = 1.0 - warmup_fraction
    if span <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (u - warmup_fraction) / span))


def _params_for(optimizer: str, task: Any) -> Any:
    """What the optimizer is built over: the model, or, for an optimizer that routes parameters by name (Muon)
    and a task with ``adamw_params`` hints, two named groups, the hinted parameters with ``use_muon=False``."""
    model: nn.Module = task.model
    hints = tuple(getattr(task, "adamw_params", ()) or ())
    if not hints or not _optimizer_spec(optimizer).named_params:
        return model
    named = list(model.named_parameters())
    unknown = sorted(set(hints) - {n for n, _ in named})
    if unknown:
        raise ValueError(
            f"adamw_params names {unknown} are not parameters of the model; use names from model.named_parameters()"
        )
    hinted = set(hints)
    groups: list[dict[str, Any]] = [{"params": [(n, p) for n, p in named if n not in hinted]}]
    groups.append({"params": [(n, p) for n, p in named if n in hinted], "use_muon": False})
    return [g for g in groups if g["params"]]


def run_trial(
    workload: WorkloadLike,
    spec: TrialSpec,
    progress: Progress | None = None,
    *,
    divergence_factor: float = 10.0,
) -> TrialResult:
    """Train ``spec`` on ``workload`` under the shared protocol (module docstring) and return its result.

    ``progress(step_done, total_steps, train_loss)`` is called after every step (in an equal-time trial,
    ``total_steps`` is the workload's step budget, or the steps done if more). Exceptions other than
    ``KeyboardInterrupt``/``SystemExit`` become a result with status ``"error"``. The global CPU RNG is seeded with
    ``spec.seed`` inside :func:`torch.random.fork_rng`, so the caller's RNG state is left as it was.
    """
    if (spec.workload, spec.preset) != (workload.name, workload.preset):
        raise ValueError(
            f"spec is for {spec.workload}/{spec.preset} but the workload is {workload.name}/{workload.preset}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return _train(workload, spec, progress, divergence_factor)


def _train(workload: WorkloadLike, spec: TrialSpec, progress: Progress | None, divergence_factor: float) -> TrialResult:
    steps, warmup, eval_every = workload.steps, workload.warmup, max(1, workload.eval_every)
    budget = spec.budget_seconds
    # equal-time mode: as many validations as in step mode, at evenly spaced fractions of the budget
    marks = max(1, steps // eval_every)
    next_mark = 1
    curve: list[CurvePoint] = []
    state = {"steps_run": 0, "train_seconds": 0.0, "step_seconds": 0.0}
    optimizer: torch.optim.Optimizer | None = None
    model: nn.Module | None = None
    conditions = RunConditions.now()

    def finish(status: Status, final_val: float | None, message: str = "") -> TrialResult:
        done = state["steps_run"]
        return TrialResult(
            spec=spec,
            status=status,
            final_val=final_val,
            curve=tuple(curve),
            steps_run=int(done),
            train_seconds=state["train_seconds"],
            step_seconds=state["step_seconds"] / done if done else 0.0,
            state_bytes=optimizer_state_bytes(optimizer) if optimizer is not None else 0,
            model_bytes=_model_bytes(model) if model is not None else 0,
            message=message,
            conditions=conditions.ended(),
        )

    try:
        task = _interface.check_task(workload.build(spec.seed), f"{workload.name}.build({spec.seed})")
        model = task.model
        optimizer = create(spec.optimizer, _params_for(spec.optimizer, task), **spec.hparams_dict)
        scheduler = None
        base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        if budget is None:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule_factor(s, warmup, steps))

        val = float(task.validate())
        if not math.isfinite(val):
            return finish("diverged", None, f"non-finite validation loss {val} at step 0")
        curve.append((0, val, 0.0))
        initial: float | None = None
        step = 0
        while step < steps if budget is None else state["train_seconds"] < budget:
            start = time.perf_counter()
            if budget is not None:  # the schedule runs on the training clock, read before the update
                factor = time_schedule_factor(state["train_seconds"], budget, warmup / steps, warmup)
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
            optimizer.zero_grad(set_to_none=True)
            loss = task.train_loss(step)
            value = float(loss.detach())
            if initial is None:
                initial = value
            if not math.isfinite(value):
                return finish("diverged", None, f"non-finite training loss {value} at step {step}")
            if initial > 0 and value > divergence_factor * initial:
                return finish(
                    "diverged",
                    None,
                    f"training loss {value:.6g} at step {step} exceeds {divergence_factor:g}x "
                    f"the initial {initial:.6g}",
                )
            loss.backward()
            before_step = time.perf_counter()
            optimizer.step()
            after_step = time.perf_counter()
            if scheduler is not None:
                scheduler.step()
            state["train_seconds"] += time.perf_counter() - start
            state["step_seconds"] += after_step - before_step
            state["steps_run"] = done = step + 1
            step = done
            if progress is not None:
                progress(done, max(steps, done), value)
            if budget is None:
                due = 1 if done % eval_every == 0 or done == steps else 0
            else:  # one point per mark passed (several if one step passed several), so curves align by index
                passed = min(marks, math.floor(state["train_seconds"] / budget * marks + 1e-12))
                due = max(0, passed - next_mark + 1)
                next_mark += due
            if due:
                val = float(task.validate())
                if not math.isfinite(val):
                    return finish("diverged", None, f"non-finite validation loss {val} after step {done}")
                curve.extend([(done, val, state["train_seconds"])] * due)
        return finish("ok", curve[-1][1])
    except Exception as exc:  # the sweep goes on; KeyboardInterrupt and SystemExit are not Exceptions
        return finish("error", None, _describe(exc))
