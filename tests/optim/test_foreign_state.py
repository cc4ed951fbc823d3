"""Loading another optimizer's state dict: a ValueError naming it, for every (registry source, our target) pair.

torch's ``load_state_dict`` swaps in the saved param groups, so before this check a SOAP state dict loaded into
Muon only failed at the next step, with ``KeyError: 'use_muon'`` (and Muon's into SOAP with
``KeyError: 'max_precond_dim'``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from precond.optim import REGISTRY, available, create

OURS = ["lion", "soap", "shampoo", "muon", "mfac"]
#: Sources are algorithms: an option variant's state (``soap_drift``) *is* its base's (tested below).
PAIRS = [(source, target) for target in OURS for source in available(variants=False) if source != target]
VARIANTS = [n for n in available() if REGISTRY[n].variant_of]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def _step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)
    opt.zero_grad()
    (model(x) - y).square().mean().backward()
    opt.step()


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_another_optimizers_state_dict_is_refused_by_name(source, target):
    src_model = _model()
    src = create(source, src_model)
    _step(src_model, src, 0)
    model, twin = _model(), _model()
    opt, twin_opt = create(target, model), create(target, twin)
    _step(model, opt, 1)
    _step(twin, twin_opt, 1)
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])

    with pytest.raises(ValueError, match=rf"looks like the state of '{source}'") as info:
        opt.load_state_dict(src.state_dict())
    saved_keys = set(src.state_dict()["param_groups"][0]) - {"params", "param_names"}
    required = set(opt.defaults) - set(getattr(opt, "optional_group_defaults", {}))
    missing, alien = required - saved_keys, saved_keys - set(opt.defaults)
    assert all(repr(k) in str(info.value) for k in missing)  # every missing hyperparameter is named ...
    assert missing or any(repr(k) in str(info.value) for k in alien)  # ... or, if none is, the foreign ones

    # nothing was replaced: the refused optimizer steps exactly like its twin that never saw the foreign dict
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups_before
    _step(model, opt, 2)
    _step(twin, twin_opt, 2)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("target", OURS)
def test_own_state_dict_still_loads_with_a_scheduler_key(target):
    model = _model()
    opt = create(target, model)
    torch.optim.lr_scheduler.StepLR(opt, step_size=1)  # adds "initial_lr" to every group
    _step(model, opt, 0)
    fresh = create(target, _model())
    fresh.load_state_dict(opt.state_dict())
    assert fresh.param_groups[0]["initial_lr"] == opt.param_groups[0]["initial_lr"]


@pytest.mark.parametrize("target", OURS)
def test_not_a_state_dict_is_a_type_error(target):
    opt = create(target, _model())
    with pytest.raises(TypeError, match="state_dict\\(\\)"):
        opt.load_state_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})


def test_unknown_source_is_called_another_optimizer():
    opt = create("muon", _model())
    saved = opt.state_dict()
    saved["param_groups"] = [{"params": g["params"], "rho": 0.5} for g in saved["param_groups"]]
    with pytest.raises(ValueError, match=r"saved by another optimizer.*'use_muon'"):
        opt.load_state_dict(saved)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_variants_state_is_its_bases_state_both_ways(variant):
    """soap <-> soap_drift: the same class, so neither is refused; torch's rule that the saved groups'
    hyperparameters win (as for ``lr``) carries the option with the state, and the loaded optimizer then steps
    bitwise as the one that saved it."""
    base = REGISTRY[variant].variant_of
    ((option, value),) = REGISTRY[variant].defaults.items()
    for source, target in ((base, variant), (variant, base)):
        model = _model()
        saver = create(source, model)
        for seed in range(11):  # past the refreshes at steps 1 and 10
            _step(model, saver, seed)
        twin = copy.deepcopy(model)
        loader = create(target, twin)
        loader.load_state_dict(saver.state_dict())
        assert loader.param_groups[0][option] == saver.param_groups[0][option]
        assert (loader.param_groups[0][option] == value) is (source == variant)
        for seed in range(11, 22):
            _step(model, saver, seed)
            _step(twin, loader, seed)
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_variants_state_elsewhere_is_named_after_its_base(variant):
    model = _model()
    src = create(variant, model)
    _step(model, src, 0)
    opt = create("lion", _model())
    with pytest.raises(ValueError, match=rf"looks like the state of '{REGISTRY[variant].variant_of}'"):
        opt.load_state_dict(src.state_dict())
