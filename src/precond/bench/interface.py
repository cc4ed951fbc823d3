"""The workload interface of ``precond bench``: what a model, its data and its loss must offer to be compared.

The four built-in workloads (:mod:`precond.bench.workloads`) and a user's own model go through the same path:
anything with the attributes of :class:`Workload` is trained by :func:`precond.bench.trial.run_trial`.

A workload is

* ``name``, ``preset``: its identity in the results database (a stored trial is reused only for the same name,
  preset, optimizer, hyperparameters and seed, so change ``preset``, e.g. to ``"v2"``, when the workload changes);
* ``steps``, ``warmup``, ``eval_every``: the step budget, the linear-warmup length and how often to validate;
* ``build(seed)``: a :class:`Task` (or anything with its attributes) whose model is freshly initialised from
  ``seed``; ``train_loss(step)`` must be a deterministic function of ``(seed, step)`` (draw the batch of step ``t``
  from a generator seeded with ``(seed, t)``, not from a shared iterator), ``validate()`` the mean loss on a held-out
  set that does not depend on the seed.

:func:`check_workload` says what an object lacks; :func:`load_workload` imports ``package.module:factory`` or
``path/to/file.py:factory`` (the CLI's ``--workload``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Task", "TaskLike", "Workload", "WorkloadError", "check_task", "check_workload", "load_workload"]


@dataclass(frozen=True)
class Task:
    """One trial's model and losses.

    Attributes:
        model: the freshly initialised model (its parameters are what the optimizer trains).
        train_loss: ``train_loss(step)``: the loss of step ``step``'s batch, with grad.
        validate: the mean validation loss (called under ``no_grad``'s spirit: the caller does not backprop).
        adamw_params: routing hint: names (as in ``model.named_parameters()``) of parameters that Muon-style
            optimizers must leave to their AdamW part, on top of their own rule (embeddings, heads, 1-D
            parameters). Ignored by the other optimizers.
    """

    model: nn.Module
    train_loss: Callable[[int], torch.Tensor]
    validate: Callable[[], float]
    adamw_params: tuple[str, ...] = ()


class TaskLike(Protocol):
    """What a built task must have (:class:`Task` has it; ``adamw_params`` is optional)."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def train_loss(self) -> Callable[[int], torch.Tensor]: ...

    @property
    def validate(self) -> Callable[[], float]: ...


@runtime_checkable
class Workload(Protocol):
    """What ``precond bench`` needs from a workload (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def preset(self) -> str: ...

    @property
    def steps(self) -> int: ...

    @property
    def warmup(self) -> int: ...

    @property
    def eval_every(self) -> int: ...

    def build(self, seed: int) -> TaskLike: ...


class WorkloadError(TypeError):
    """An object that is not a usable workload, or a ``--workload`` reference that cannot be loaded; the message
    names what is missing or wrong and how to fix it."""


_INTS = ("steps", "warmup", "eval_every")
_TEXTS = ("name", "preset")


def check_workload(obj: object) -> Workload:
    """``obj`` itself if it satisfies :class:`Workload`, else :class:`WorkloadError` naming every missing or
    ill-typed attribute. Cheap: ``build`` is not called (:func:`check_task` checks what it returns)."""
    problems: list[str] = []
    missing = [a for a in (*_TEXTS, *_INTS, "build") if not hasattr(obj, a)]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    for attr in _TEXTS:
        value = getattr(obj, attr, None)
        if hasattr(obj, attr) and not (isinstance(value, str) and value and "/" not in value):
            problems.append(f"{attr} must be a non-empty str without '/', got {value!r}")
    for attr in _INTS:
        value = getattr(obj, attr, None)
        if hasattr(obj, attr) and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            problems.append(f"{attr} must be an int >= 0, got {value!r}")
    if not problems:
        steps, warmup, every = (getattr(obj, a) for a in _INTS)
        if steps < 1:
            problems.append(f"steps must be >= 1, got {steps}")
        if warmup > steps:
            problems.append(f"warmup={warmup} exceeds steps={steps}")
        if every < 1:
            problems.append(f"eval_every must be >= 1, got {every}")
    if hasattr(obj, "build") and not callable(obj.build):
        problems.append("build must be a method build(seed) returning a Task")
    if problems:
        raise WorkloadError(
            f"{type(obj).__name__} is not a precond.bench workload: {'; '.join(problems)} "
            "(see precond.bench.interface.Workload)"
        )
    assert isinstance(obj, Workload)
    return obj


def check_task(task: object, where: str = "build(seed)") -> TaskLike:
    """``task`` if it has a module ``model`` and callables ``train_loss``, ``validate``; else
    :class:`WorkloadError` naming what ``where`` returned wrongly."""
    problems = []
    if not isinstance(getattr(task, "model", None), nn.Module):
        problems.append(f"model must be a torch.nn.Module, got {type(getattr(task, 'model', None)).__name__}")
    for attr in ("train_loss", "validate"):
        if not callable(getattr(task, attr, None)):
            problems.append(f"{attr} must be callable")
    hints = getattr(task, "adamw_params", ())
    if not (isinstance(hints, tuple | list) and all(isinstance(h, str) for h in hints)):
        problems.append(f"adamw_params must be a tuple of parameter names, got {hints!r}")
    if problems:
        raise WorkloadError(f"{where} returned {type(task).__name__}, not a Task: {'; '.join(problems)}")
    return task  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------------ loading


def _import_target(module_ref: str) -> Any:
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        if not path.is_file():
            raise WorkloadError(f"--workload {module_ref}: no such file")
        name = f"_precond_user_workload_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - only for odd paths
            raise WorkloadError(f"--workload {module_ref}: cannot import this file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise WorkloadError(f"--workload {module_ref}: importing it failed: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(module_ref)
    except ImportError as exc:
        raise WorkloadError(
            f"--workload {module_ref}: cannot import module {module_ref!r} ({exc}); pass package.module:factory "
            "for an importable module or path/to/file.py:factory for a file"
        ) from exc
    except Exception as exc:
        raise WorkloadError(f"--workload {module_ref}: importing it failed: {type(exc).__name__}: {exc}") from exc


def load_workload(reference: str, **kwargs: Any) -> Workload:
    """The workload named by ``reference``: ``package.module:factory`` or ``path/to/file.py:factory``, where
    ``factory`` is a workload object or a callable returning one (called with ``kwargs``). Every failure is a
    :class:`WorkloadError` saying which part failed (import, attribute, call, interface)."""
    module_ref, sep, attr = reference.rpartition(":")
    if not sep or not module_ref or not attr:
        raise WorkloadError(
            f"--workload {reference!r}: expected a built-in name, package.module:factory or path/to/file.py:factory"
        )
    module = _import_target(module_ref)
    if not hasattr(module, attr):
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise WorkloadError(f"--workload {reference}: {module_ref} has no attribute {attr!r} (it has {public})")
    obj = getattr(module, attr)
    if (callable(obj) and not hasattr(obj, "build")) or inspect.isclass(obj):
        try:
            obj = obj(**kwargs)
        except Exception as exc:
            raise WorkloadError(
                f"--workload {reference}: calling {attr}() failed: {type(exc).__name__}: {exc}"
            ) from exc
    try:
        return check_workload(obj)
    except WorkloadError as err:
        raise WorkloadError(f"--workload {reference}: {err}") from None
