"""The registry: every entry builds and steps through ``create``; errors, names and case; no benchmark policy."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from precond.optim import REGISTRY, OptimizerSpec, available, create, registry
from precond.optim.registry import spec
from tests.problems import batches, mlp

NAMES = sorted(REGISTRY)
#: The option variants, with the option each sets (issue 18): SOAP's class with one opt-in refresh option on.
VARIANTS = {
    "soap_drift": ("drift_tolerance", 0.1),
    "soap_stagger": ("stagger_refresh", True),
    "soap_cholqr": ("cholesky_qr", True),
}


def test_available_lists_the_registry_sorted() -> None:
    assert available() == NAMES
    assert set(NAMES) == {
        "adamw",
        "adafactor",
        "sgd",
        "lion",
        "soap",
        "shampoo",
        "muon",
        "mfac",
        "conda",
        "dct_adamw",
        "trion",
        "adamp",
        "sgdp",
        "fismo",
        "auon",
        "soap_drift",
        "soap_stagger",
        "soap_cholqr",
    }
    assert available(variants=False) == sorted(set(NAMES) - set(VARIANTS))


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_builds_from_a_module_and_steps(name: str) -> None:
    model = mlp()
    opt = create(name, model)
    assert isinstance(opt, torch.optim.Optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batches(model, 1)[0]
    loss = (model(x) - y).square().mean()
    loss.backward()
    opt.step()
    moved = [not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True)]
    assert all(moved), f"{name}: parameters {[i for i, m in enumerate(moved) if not m]} did not move"
    assert all(torch.isfinite(p).all() for p in model.parameters()), f"{name}: non-finite parameters"


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_consistent_with_its_target(name: str) -> None:
    s = REGISTRY[name]
    assert s.name == name and s.description and s.paper
    accepted = s.hyperparameters()
    assert set(s.defaults) <= set(accepted), f"{name}: defaults {set(s.defaults) - set(accepted)} not accepted"
    opt = create(name, [nn.Parameter(torch.ones(2, 2))])
    for key, value in s.defaults.items():
        assert opt.defaults[key] == value, f"{name}: default {key}={value!r} not passed on"


def test_the_registry_holds_no_tuning_policy() -> None:
    """Sweep ranges are benchmark policy (``precond.bench.tuning``): a spec is name, target, defaults, docs."""
    fields = {f.name for f in dataclasses.fields(OptimizerSpec)}
    assert fields == {"name", "target", "defaults", "description", "paper", "named_params", "variant_of"}
    assert not hasattr(spec("adamw"), "grid")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_is_soap_with_its_option_and_steps_as_soap_given_it(name: str) -> None:
    """The variant is the SOAP class with one option on (the rest SOAP's defaults), and trains bitwise as SOAP
    built directly with that option, over 12 steps (past the refreshes at steps 1 and 10)."""
    from precond.optim import SOAP

    option, value = VARIANTS[name]
    s = REGISTRY[name]
    assert s.variant_of == "soap" and s.target == REGISTRY["soap"].target and dict(s.defaults) == {option: value}
    assert option in s.description
    model, twin = mlp(), mlp()
    opt, oracle = create(name, model), SOAP(twin.parameters(), **{option: value})
    plain = SOAP([nn.Parameter(torch.ones(2, 2))])
    assert type(opt) is SOAP and opt.param_groups[0][option] == value != plain.defaults[option]
    assert {k: v for k, v in opt.defaults.items() if k != option} == {
        k: v for k, v in plain.defaults.items() if k != option
    }
    for x, y in batches(model, 12):
        for net, o in ((model, opt), (twin, oracle)):
            o.zero_grad()
            (net(x) - y).square().mean().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b) and torch.isfinite(a).all()


def test_a_variant_must_name_an_algorithm_entry_of_its_class() -> None:
    base = OptimizerSpec("base", "m:A")
    for bad in (
        OptimizerSpec("v", "m:A", variant_of="nowhere"),
        OptimizerSpec("v", "m:B", variant_of="base"),  # another class
        OptimizerSpec("v", "m:A", variant_of="w"),  # a variant of a variant
    ):
        with pytest.raises(ValueError, match="variant_of"):
            registry._check_variants([base, OptimizerSpec("w", "m:A", variant_of="base"), bad])
    assert sorted(registry._check_variants([base, OptimizerSpec("v", "m:A", variant_of="base")])) == ["base", "v"]


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match="'adamx'") as info:
        create("adamx", mlp())
    for name in NAMES:
        assert name in str(info.value)


def test_unknown_hyperparameter_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="'momentun'") as info:
        create("sgd", mlp(), momentun=0.5)
    assert "momentum" in str(info.value) and "nesterov" in str(info.value)
    with pytest.raises(ValueError, match="'nonfinite'"):
        create("adamw", mlp(), nonfinite="skip")  # a precond option torch's AdamW does not take


def test_names_are_case_insensitive() -> None:
    assert spec("AdamW") is spec("adamw")
    opt = create("SGD", mlp(), lr=0.5)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.5 and opt.defaults["momentum"] == 0.9


def test_names_are_stripped_for_optimizers_that_do_not_want_them() -> None:
    model = mlp()
    named = list(model.named_parameters())
    opt = create("lion", named)
    assert all(isinstance(p, torch.Tensor) for p in opt.param_groups[0]["params"])
    assert "param_names" not in opt.param_groups[0]
    groups = [{"params": named[:2], "lr": 1e-3}, {"params": named[2:]}]
    opt = create("adamw", groups)
    assert [len(g["params"]) for g in opt.param_groups] == [2, len(named) - 2]
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[1]["lr"] == 1e-3  # create's default for adamw
    assert all("param_names" not in g for g in opt.param_groups)


def test_params_may_be_tensors_groups_or_a_single_tensor() -> None:
    model = mlp()
    assert len(create("soap", list(model.parameters())).param_groups) == 1
    assert len(create("soap", [{"params": [p]} for p in model.parameters()]).param_groups) == 6
    assert len(create("lion", model[0].weight).param_groups[0]["params"]) == 1


def test_specs_are_immutable() -> None:
    s = spec("adamw")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.defaults["lr"] = 1.0  # type: ignore[index]


def test_importing_the_registry_imports_no_optimizer_module() -> None:
    """``target`` strings are resolved on demand: loading registry.py imports nothing from ``precond``."""
    path = Path(registry.__file__)
    before = set(sys.modules)
    module_spec = importlib.util.spec_from_file_location("_registry_alone", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["_registry_alone"] = module  # dataclasses look their module up while the class is built
    try:
        module_spec.loader.exec_module(module)
    finally:
        del sys.modules["_registry_alone"]
    new = sorted(m for m in set(sys.modules) - before if m.startswith("precond"))
    assert new == [], f"importing registry.py imported {new}"
    assert sorted(module.REGISTRY) == NAMES
