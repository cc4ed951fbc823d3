"""The one door through which benchmarks and tests build optimizers: ``create("soap", model, lr=1e-3)``.

Each entry is an :class:`OptimizerSpec` whose ``target`` is a lazy import path (``"module:Class"``), so
importing this module imports no optimizer; the class is imported by :func:`create` (or
:meth:`OptimizerSpec.load`) the first time it is needed.

=========  ==============================  =========================================
name       target                          defaults passed by ``create``
=========  ==============================  =========================================
adamw      torch.optim:AdamW               lr=1e-3, weight_decay=0.01
adafactor  torch.optim:Adafactor           (torch's: lr=1e-2, relative step cap)
sgd        torch.optim:SGD                 lr=1e-2, momentum=0.9
lion       precond.optim.lion:Lion         (class's: lr=1e-4, betas=(0.9, 0.99))
soap       precond.optim.soap:SOAP         (class's: lr=3e-3, wd=0.01)
shampoo    precond.optim.shampoo:Shampoo   (class's)
muon       precond.optim.muon:Muon         scale="match_adamw", adam_lr_ratio=1, wd
mfac       precond.optim.mfac:MFAC         (class's: lr=1e-3)
conda      precond.optim.conda:Conda       update_proj_gap=50, wd=0.01
dct_adamw  precond.optim.dct:DCTAdamW      rank=0.25, wd=0.01
trion      precond.optim.dct:Trion         rank=0.25, scale="match_adamw", adam_lr_ratio=1, wd
adamp      precond.optim.adamp:AdamP       wd=0.01
sgdp       precond.optim.adamp:SGDP        (class's: lr=0.1, momentum=0.9, nesterov)
fismo      precond.optim.fismo:FISMO       scale="match_adamw", adam_lr_ratio=1, wd
auon       precond.optim.auon:AuON         scale="match_adamw", adam_lr_ratio=1, wd
=========  ==============================  =========================================

Option variants (``variant_of`` set) are an entry's class with one opt-in option on, so that ``precond bench``
can compare it against the default under the same tuning (issue 18):

============  =======================  ===========================
name          target                   defaults passed by ``create``
============  =======================  ===========================
soap_drift    precond.optim.soap:SOAP  drift_tolerance=0.1
soap_stagger  precond.optim.soap:SOAP  stagger_refresh=True
soap_cholqr   precond.optim.soap:SOAP  cholesky_qr=True
============  =======================  ===========================

A variant is the same optimizer: its state dicts load into its base and back (the saved groups' options win, as
torch's ``load_state_dict`` does for ``lr``), and registry-wide sweeps over *algorithms* (the hardening and
foreign-state tests, :func:`precond.optim._state_check.guess_source`) take ``available(variants=False)``.

How the benchmark tunes them (the sweep ranges and their history) is benchmark policy, kept next to the benchmark
in :mod:`precond.bench.tuning`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build one optimizer.

    Attributes:
        name: registry key (lower case).
        target: lazy import path ``"package.module:Class"``.
        defaults: hyperparameters :func:`create` passes unless the caller overrides them (empty: the class's
            own defaults).
        description: one line on what the optimizer does.
        paper: citation.
        named_params: the optimizer wants ``(name, tensor)`` pairs and takes an ``nn.Module`` itself (Muon
            routes parameters by name and finds weights stored ``[in, out]`` by module type).
        variant_of: the registry entry this one is, with the options in ``defaults`` set (same target); empty
            for an algorithm of its own.
    """

    name: str
    target: str
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)
    description: str = ""
    paper: str = ""
    named_params: bool = False
    variant_of: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", _frozen(self.defaults))

    def load(self) -> type[torch.optim.Optimizer]:
        """Import and return the optimizer class."""
        module, _, attr = self.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise TypeError(f"{self.target} is not a torch.optim.Optimizer subclass")
        return cls

    def hyperparameters(self) -> tuple[str, ...]:
        """Names the target's ``__init__`` accepts besides ``params`` (keyword-only ones included)."""
        signature = inspect.signature(self.load().__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return tuple(n for n, p in signature.parameters.items() if p.kind in kinds and n not in ("self", "params"))


_SPECS = (
    OptimizerSpec(
        name="adamw",
        target="torch.optim:AdamW",
        defaults={"lr": 1e-3, "weight_decay": 0.01},
        description="Adam with decoupled weight decay (torch's implementation); the baseline to beat.",
        paper="Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization, arXiv 1711.05101",
    ),
    OptimizerSpec(
        name="adafactor",
        target="torch.optim:Adafactor",
        defaults={},
        description="Adam with a rank-1 factored second moment and relative step sizes (torch's implementation).",
        paper="Shazeer & Stern 2018, Adafactor: Adaptive Learning Rates with Sublinear Memory Cost, arXiv 1804.04235",
    ),
    OptimizerSpec(
        name="sgd",
        target="torch.optim:SGD",
        defaults={"lr": 1e-2, "momentum": 0.9},
        description="SGD with heavy-ball momentum 0.9 (torch's implementation); the plain baseline.",
        paper="Polyak 1964; Sutskever et al. 2013, On the importance of initialization and momentum in deep learning",
    ),
    OptimizerSpec(
        name="lion",
        target="precond.optim.lion:Lion",
        defaults={},
        description="Sign of an interpolated momentum with decoupled weight decay; one state tensor.",
        paper="Chen et al. 2023, Symbolic Discovery of Optimization Algorithms, arXiv 2302.06675",
    ),
    OptimizerSpec(
        name="soap",
        target="precond.optim.soap:SOAP",
        defaults={},
        description="Adam in the eigenbasis of Shampoo's Kronecker factors, refreshed every few steps.",
        paper="Vyas et al. 2024, SOAP: Improving and Stabilizing Shampoo using Adam, arXiv 2409.11321",
    ),
    OptimizerSpec(
        name="soap_drift",
        target="precond.optim.soap:SOAP",
        # 0.1: the middle of the 0.05-0.2 range SOAP's docstring gives, the value the step benchmark measures
        defaults={"drift_tolerance": 0.1},
        description="SOAP with drift_tolerance=0.1: a refresh recomputes only the factors whose basis drifted.",
        paper="Vyas et al. 2024, SOAP: Improving and Stabilizing Shampoo using Adam, arXiv 2409.11321",
        variant_of="soap",
    ),
    OptimizerSpec(
        name="soap_stagger",
        target="precond.optim.soap:SOAP",
        defaults={"stagger_refresh": True},
        description="SOAP with stagger_refresh=True: the parameters' refreshes spread over the period's steps.",
        paper="Vyas et al. 2024, SOAP: Improving and Stabilizing Shampoo using Adam, arXiv 2409.11321",
        variant_of="soap",
    ),
    OptimizerSpec(
        name="soap_cholqr",
        target="precond.optim.soap:SOAP",
        defaults={"cholesky_qr": True},
        description="SOAP with cholesky_qr=True: the refresh orthogonalises by CholeskyQR2, not Householder QR.",
        paper="Vyas et al. 2024, SOAP: Improving and Stabilizing Shampoo using Adam, arXiv 2409.11321",
        variant_of="soap",
    ),
    OptimizerSpec(
        name="shampoo",
        target="precond.optim.shampoo:Shampoo",
        defaults={},
        description="Kronecker-factored preconditioner L^(-1/4) G R^(-1/4) with Adam grafting.",
        paper="Gupta, Koren & Singer 2018, Shampoo: Preconditioned Stochastic Tensor Optimization, arXiv 1802.09568",
    ),
    OptimizerSpec(
        name="muon",
        target="precond.optim.muon:Muon",
        # Moonshot's recipe (arXiv 2502.16982): updates scaled to AdamW's RMS, so one AdamW-like lr serves the
        # Muon matrices and the AdamW params (embeddings, head, gains) alike, and a one-knob lr sweep is fair.
        defaults={"scale": "match_adamw", "adam_lr_ratio": 1.0, "weight_decay": 0.01, "adam_weight_decay": 0.01},
        description="Momentum orthogonalised by Newton-Schulz for 2-D weights; AdamW for the rest (chosen by name).",
        paper="Jordan et al. 2024, Muon: An optimizer for hidden layers in neural networks (kellerjordan.github.io)",
        named_params=True,
    ),
    OptimizerSpec(
        name="mfac",
        target="precond.optim.mfac:MFAC",
        defaults={},
        description="Matrix-free inverse empirical Fisher from a window of past gradients (dynamic algorithm).",
        paper="Frantar, Kurtic & Alistarh 2021, M-FAC: Efficient Matrix-Free Approximations of Second-Order "
        "Information, arXiv 2107.03356",
    ),
    OptimizerSpec(
        name="conda",
        target="precond.optim.conda:Conda",
        # The paper refreshes the basis every 2000 of 10k-100k steps (5-50 refreshes); the benchmark's quick runs
        # are 300-500 steps, so every 50 keeps a comparable number of refreshes.  wd as the adamw entry.
        defaults={"update_proj_gap": 50, "weight_decay": 0.01},
        description="Adam with its second moment in the momentum's singular basis (column-normalized Adam).",
        paper="Wang et al. 2025, Conda: Column-Normalized Adam for Training Large Language Models Faster, "
        "arXiv 2509.24218",
        named_params=True,
    ),
    OptimizerSpec(
        name="dct_adamw",
        target="precond.optim.dct:DCTAdamW",
        # rank a quarter of the shorter side: GaLore/DCT's LLaMA-60M ratio (rank 128 of d_model 512)
        defaults={"rank": 0.25, "weight_decay": 0.01},
        description="AdamW with low-rank moments in a subspace of DCT columns picked by l1 norm (no SVD).",
        paper="Modoranu et al. 2025, FFT-based Dynamic Subspace Selection for Low-Rank Adaptive Optimization of "
        "LLMs, arXiv 2505.17967",
        named_params=True,
    ),
    OptimizerSpec(
        name="trion",
        target="precond.optim.dct:Trion",
        defaults={
            "rank": 0.25,
            "scale": "match_adamw",
            "adam_lr_ratio": 1.0,
            "weight_decay": 0.01,
            "adam_weight_decay": 0.01,
        },
        description="Dion's low-rank orthonormal update with DCT column selection and Newton-Schulz; AdamW for the "
        "rest.",
        paper="Modoranu et al. 2025, FFT-based Dynamic Subspace Selection for Low-Rank Adaptive Optimization of "
        "LLMs, arXiv 2505.17967",
        named_params=True,
    ),
    OptimizerSpec(
        name="adamp",
        target="precond.optim.adamp:AdamP",
        defaults={"weight_decay": 0.01},
        description="Adam without the radial update component of scale-invariant weights.",
        paper="Heo et al. 2021, AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant "
        "Weights, arXiv 2006.08217",
    ),
    OptimizerSpec(
        name="sgdp",
        target="precond.optim.adamp:SGDP",
        defaults={},
        description="Nesterov momentum SGD without the radial update component of scale-invariant weights.",
        paper="Heo et al. 2021, AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant "
        "Weights, arXiv 2006.08217",
    ),
    OptimizerSpec(
        name="fismo",
        target="precond.optim.fismo:FISMO",
        defaults={"scale": "match_adamw", "adam_lr_ratio": 1.0, "weight_decay": 0.01, "adam_weight_decay": 0.01},
        description="Muon in coordinates whitened by a Kronecker-factored Fisher (algorithm from secondary sources).",
        paper="Xu, Yan & Zhang 2026, FISMO: Fisher-Structured Momentum-Orthogonalized Optimizer, arXiv 2601.21750",
        named_params=True,
    ),
    OptimizerSpec(
        name="auon",
        target="precond.optim.auon:AuON",
        defaults={"scale": "match_adamw", "adam_lr_ratio": 1.0, "weight_decay": 0.01, "adam_weight_decay": 0.01},
        description="Frobenius-normalized Nesterov momentum (its cosh rescaling is a numerical no-op); a baseline.",
        paper="Maity 2025, AuON: Alternative Unit-norm momentum updates by Normalized nonlinear scaling, "
        "arXiv 2509.24320",
        named_params=True,
    ),
)


def _check_variants(specs: Iterable[OptimizerSpec]) -> Mapping[str, OptimizerSpec]:
    """``{name: spec}`` of ``specs``; ``ValueError`` unless every ``variant_of`` names an algorithm entry (not a
    variant) with the same target."""
    table = {s.name: s for s in specs}
    for s in table.values():
        base = table.get(s.variant_of) if s.variant_of else None
        if s.variant_of and (base is None or base.variant_of or base.target != s.target):
            raise ValueError(f"registry entry {s.name!r}: variant_of={s.variant_of!r} is not an entry of {s.target}")
    return MappingProxyType(table)


#: Every optimizer the benchmark knows, by lower-case name.
REGISTRY: Mapping[str, OptimizerSpec] = _check_variants(_SPECS)


def available(variants: bool = True) -> list[str]:
    """The registry's names, sorted; ``variants=False``: without the option variants (one name per algorithm)."""
    return sorted(n for n, s in REGISTRY.items() if variants or not s.variant_of)


def spec(name: str) -> OptimizerSpec:
    """The :class:`OptimizerSpec` of ``name`` (case-insensitive); ``ValueError`` listing the names if unknown."""
    key = name.lower() if isinstance(name, str) else name
    if key not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(available())}")
    return REGISTRY[key]


def _is_named(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


def _prepare(params: Any, named: bool) -> Any:
    """What the optimizer accepts: a module stays a module for optimizers that want names, else becomes its
    parameters; names are stripped from ``(name, tensor)`` pairs (also inside param groups) when the optimizer
    does not want them."""
    if isinstance(params, nn.Module):
        return params if named else list(params.parameters())
    if isinstance(params, torch.Tensor):
        return [params]
    items = list(params) if isinstance(params, Iterable) else [params]
    if named:
        return items
    out: list[Any] = []
    for item in items:
        if _is_named(item):
            out.append(item[1])
        elif isinstance(item, dict) and "params" in item:
            inner = item["params"]
            inner = [inner] if isinstance(inner, torch.Tensor) else list(inner)
            out.append({**item, "params": [p[1] if _is_named(p) else p for p in inner]})
        else:
            out.append(item)
    return out


def create(name: str, params: Any, **hparams: Any) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (case-insensitive) over ``params`` with its spec's defaults, overridden by
    ``hparams``.

    ``params`` may be an ``nn.Module`` (passed as is to optimizers that want names, else its ``parameters()``),
    tensors, param-group dicts or ``(name, tensor)`` pairs (names are stripped for optimizers that do not want
    them).  An unknown ``name`` or hyperparameter raises ``ValueError`` listing what is
    accepted.
    """
    s = spec(name)
    accepted = s.hyperparameters()
    unknown = [k for k in hparams if k not in accepted]
    if unknown:
        raise ValueError(
            f"{s.name}: unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    return s.load()(_prepare(params, s.named_params), **{**s.defaults, **hparams})
