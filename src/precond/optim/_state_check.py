"""Refuse a state dict saved by another optimizer, naming it, instead of a ``KeyError`` in the next ``step``.

torch's ``Optimizer.load_state_dict`` replaces the param groups by the saved ones, so a SOAP state dict loaded
into Muon leaves groups without ``use_muon`` and the next step fails with ``KeyError: 'use_muon'``.  Every
``precond`` optimizer keeps all its hyperparameters in every group, so a saved group that lacks one of them was
saved by another optimizer (or by a version without that hyperparameter).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any

import torch

#: Group keys that say nothing about the optimizer: torch's own and those LR schedulers add.
NEUTRAL_GROUP_KEYS = frozenset({"params", "param_names", "initial_lr"})


@functools.lru_cache(maxsize=1)
def _registry_group_keys() -> tuple[tuple[str, frozenset[str]], ...]:
    """``(name, hyperparameter keys of a param group)`` of every registry optimizer, built on a dummy tensor."""
    from precond.optim.registry import REGISTRY  # lazy: the registry imports the optimizers' modules lazily

    out = []
    for name, spec in REGISTRY.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt = spec.load()([torch.zeros(2, 2, requires_grad=True)])  # type: ignore[call-arg]
        except Exception:  # a guess only: an optimizer that cannot be built is not a candidate
            continue
        out.append((name, frozenset(opt.param_groups[0]) - NEUTRAL_GROUP_KEYS))
    return tuple(out)


def guess_source(keys: set[str]) -> str | None:
    """The registry optimizer whose param groups have the most keys, all of them among ``keys``, if any."""
    fits = [(len(k), name) for name, k in _registry_group_keys() if k <= keys]
    return max(fits)[1] if fits else None


def check_state_dict(optimizer: torch.optim.Optimizer, state_dict: Any) -> None:
    """``TypeError`` unless ``state_dict`` looks like an optimizer's ``state_dict()``; ``ValueError`` naming the
    missing hyperparameters (and the optimizer it looks saved by) if a param group lacks one of ``optimizer``'s.

    Keys in ``optimizer.optional_group_keys`` (newer hyperparameters) may be missing: the caller fills them.
    """
    name = getattr(optimizer, "optimizer_name", type(optimizer).__name__)
    if not (isinstance(state_dict, Mapping) and "state" in state_dict and "param_groups" in state_dict):
        raise TypeError(
            f"{name}.load_state_dict: expected the dict returned by an optimizer's state_dict() (keys 'state' and "
            f"'param_groups'), got {type(state_dict).__name__}"
        )
    required = set(optimizer.defaults) - set(getattr(optimizer, "optional_group_keys", ()))
    for i, group in enumerate(state_dict["param_groups"]):
        missing = sorted(required - set(group))
        if not missing:
            continue
        keys = set(group) - NEUTRAL_GROUP_KEYS
        source = guess_source(keys)
        origin = f"looks like the state of {source!r}" if source else "was saved by another optimizer"
        raise ValueError(
            f"{name}.load_state_dict: param group {i} of this state dict {origin}, not {name}'s: it lacks "
            f"{name}'s hyperparameter{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} (its keys: "
            f"{', '.join(sorted(keys))}).  Load a state dict saved by {name}, or start {name} from fresh state."
        )
