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
    """``(name, hyperparameter keys of a param group)`` of every registry optimizer, built on a dummy tensor.

    Option variants (``soap_drift``) are left out: their groups are their base's, so a SOAP state is named
    ``'soap'``, not whichever variant sorts last."""
    from precond.optim.registry import REGISTRY  # lazy: the registry imports the optimizers' modules lazily

    out = []
    for name, spec in REGISTRY.items():
        if spec.variant_of:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt = spec.load()([torch.zeros(2, 2, requires_grad=True)])  # type: ignore[call-arg]
        except Exception:  # a guess only: an optimizer that cannot be built is not a candidate
            continue
        out.append((name, frozenset(opt.param_groups[0]) - NEUTRAL_GROUP_KEYS))
    return tuple(out)


def _best_fit(keys: set[str]) -> tuple[str, frozenset[str]] | None:
    fits = [(len(k), name, k) for name, k in _registry_group_keys() if k <= keys]
    return max(fits)[1:] if fits else None


def guess_source(keys: set[str]) -> str | None:
    """The registry optimizer whose param groups have the most keys, all of them among ``keys``, if any."""
    fit = _best_fit(keys)
    return fit[0] if fit else None


def check_state_dict(optimizer: torch.optim.Optimizer, state_dict: Any) -> dict[str, Any]:
    """``TypeError`` unless ``state_dict`` looks like an optimizer's ``state_dict()``; ``ValueError`` if a param
    group lacks one of ``optimizer``'s hyperparameters, or has those of the registry optimizer it fits best
    that ``optimizer`` does not have (AdamW's groups hold all of Lion's keys and more), naming both.

    Keys of ``optimizer.optional_group_defaults`` (hyperparameters newer than the first saved checkpoints) may be
    missing: the returned state dict has them filled with those defaults, the values such checkpoints ran with.
    """
    name = getattr(optimizer, "optimizer_name", type(optimizer).__name__)
    if not (isinstance(state_dict, Mapping) and "state" in state_dict and "param_groups" in state_dict):
        raise TypeError(
            f"{name}.load_state_dict: expected the dict returned by an optimizer's state_dict() (keys 'state' and "
            f"'param_groups'), got {type(state_dict).__name__}"
        )
    own = set(optimizer.defaults)
    optional: dict[str, Any] = getattr(optimizer, "optional_group_defaults", {})
    required = own - set(optional)
    for i, group in enumerate(state_dict["param_groups"]):
        keys = set(group) - NEUTRAL_GROUP_KEYS
        missing = sorted(required - keys)
        fit = _best_fit(keys)
        alien = sorted(fit[1] - own) if fit else []
        if not (missing or alien):
            continue
        origin = f"looks like the state of {fit[0]!r}" if fit else "was saved by another optimizer"
        why = []
        if missing:
            why.append(
                f"lacks {name}'s hyperparameter{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
            )
        if alien:
            why.append(f"has {', '.join(map(repr, alien))}, which {name} does not have")
        raise ValueError(
            f"{name}.load_state_dict: param group {i} of this state dict {origin}, not {name}'s: it "
            f"{' and '.join(why)} (its keys: {', '.join(sorted(keys))}).  Load a state dict saved by {name}, or "
            f"start {name} from fresh state."
        )
    if not optional:
        return dict(state_dict)
    return {**state_dict, "param_groups": [{**optional, **g} for g in state_dict["param_groups"]]}
