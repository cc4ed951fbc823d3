"""Benchmark policy: the ranges ``precond bench`` tunes each registry optimizer over, and why.

The registry (:mod:`precond.optim.registry`) says how to *build* an optimizer; this module says how the benchmark
*tunes* it: per registry name, ``{hyperparameter: (low, high)}`` ranges for a log-spaced grid
(:meth:`SweepRanges.grid`). Every entry has ``lr``, and ``weight_decay`` where decoupled decay matters. The comments
record where each range comes from and how it was moved after a measurement. Optimizers with Adam-style
``betas=(0.9, 0.999)`` defaults (adamw, conda, dct_adamw, adamp) also list the β2 values ``0.95, 0.98, 0.99`` that
the optional baseline pass (``Plan.tune_baseline``, ``precond bench --tune-baseline``) tries at the best lr.

=========  =====================================  ===========================
name       lr                                     weight_decay
=========  =====================================  ===========================
adamw      1e-4…1e-2                              1e-3…1e-1
adafactor  1e-3…1e-1 (relative step cap)          --
sgd        1e-3…1e-1                              --
lion       1e-5…1e-3                              1e-2…1
soap       1e-3…1e-1                              1e-3…1e-1
shampoo    1e-4…1e-2                              1e-3…1e-1
muon       3e-4…3e-2 (``match_adamw`` scaling)    1e-3…1e-1
mfac       1e-4…1e-2                              --
conda      1e-4…1e-2                              1e-3…1e-1
dct_adamw  1e-4…1e-2                              1e-3…1e-1
trion      3e-4…3e-2 (``match_adamw`` scaling)    1e-3…1e-1
adamp      1e-4…1e-2                              1e-3…1e-1
sgdp       1e-3…1e-1                              --
fismo      3e-4…3e-2 (``match_adamw`` scaling)    1e-3…1e-1
auon       3e-4…3e-2 (``match_adamw`` scaling)    1e-3…1e-1
=========  =====================================  ===========================

A registry option variant (``soap_drift``, ``soap_stagger``, ``soap_cholqr``: ``variant_of="soap"``) is tuned
exactly as its base: it gets a copy of the base's :class:`SweepRanges` under its own name, so that its final
loss compares with the default's under the same search (issue 18).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from precond.optim.registry import REGISTRY
from precond.optim.registry import spec as optimizer_spec

__all__ = ["TUNING", "SweepRanges", "sweep_ranges"]


@dataclass(frozen=True)
class SweepRanges:
    """The tuning ranges of one registry optimizer.

    Attributes:
        name: registry key (lower case).
        ranges: ``{hyperparameter: (low, high)}``, ``0 < low <= high``; always has ``lr``.
        beta2: β2 values the baseline pass of ``precond bench --tune-baseline`` tries (besides the default the lr
            search ran with), for optimizers taking Adam-style ``betas=(β1, β2)``; empty: no β2 pass.
        beta1: the β1 that pass keeps (the optimizer's default).
    """

    name: str
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict, hash=False)
    beta2: tuple[float, ...] = ()
    beta1: float = 0.9

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", MappingProxyType(dict(self.ranges)))
        object.__setattr__(self, "beta2", tuple(self.beta2))
        if not all(0 < b < 1 for b in self.beta2) or not 0 <= self.beta1 < 1:
            raise ValueError(f"sweep ranges of {self.name!r}: beta2 values must lie in (0, 1) and beta1 in [0, 1)")
        if "lr" not in self.ranges:
            raise ValueError(f"sweep ranges of {self.name!r}: must have an 'lr' range")
        for key, (low, high) in self.ranges.items():
            if not 0 < low <= high:
                raise ValueError(f"sweep ranges of {self.name!r}: {key}=({low}, {high}) must be 0 < low <= high")

    def __contains__(self, hyperparameter: object) -> bool:
        return hyperparameter in self.ranges

    def betas(self, beta2: float) -> tuple[float, float]:
        """The ``betas`` hyperparameter of the β2 pass: ``(beta1, beta2)``."""
        return (self.beta1, beta2)

    def grid(self, hyperparameter: str, points: int) -> list[float]:
        """``points`` log-spaced values of ``hyperparameter`` from the low to the high end of its range (both
        included; a single point is the geometric midpoint)."""
        if hyperparameter not in self.ranges:
            raise ValueError(
                f"{self.name}: no sweep range for {hyperparameter!r}; ranges: {', '.join(sorted(self.ranges))}"
            )
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise ValueError(f"{self.name}: invalid points={points!r}: must be an integer >= 1")
        low, high = (math.log(v) for v in self.ranges[hyperparameter])
        if points == 1:
            return [math.exp((low + high) / 2)]
        return [math.exp(low + (high - low) * i / (points - 1)) for i in range(points)]


_ADAM_BETA2 = (0.95, 0.98, 0.99)  # the baseline pass's β2 values for betas=(0.9, 0.999) defaults

_RANGES = (
    SweepRanges(
        "adamw",
        {
            "lr": (1e-4, 1e-2),  # Adam's usable range from small MLPs to transformers
            "weight_decay": (1e-3, 1e-1),  # decoupled decay around torch's 1e-2, a decade each side
        },
        # torch's default β2 = 0.999 is what the lr search runs; Wen et al. 2025 ("Fantastic Pretraining
        # Optimizers", arXiv 2509.02046) tune AdamW's β2 (with lr, wd and more) by coordinate descent; LM
        # practice uses 0.95-0.99, hence these three values
        beta2=_ADAM_BETA2,
    ),
    SweepRanges(
        "adafactor",
        {
            "lr": (1e-3, 1e-1),  # torch's lr caps the *relative* step (× RMS of the weight): a decade around 1e-2
        },
    ),
    SweepRanges(
        "sgd",
        {
            "lr": (1e-3, 1e-1),  # heavy-ball momentum 0.9 amplifies the step 10×, so an order below plain SGD's
        },
    ),
    SweepRanges(
        "lion",
        {
            "lr": (1e-5, 1e-3),  # the paper: 3-10× smaller than AdamW's (every coordinate moves by lr)
            "weight_decay": (1e-2, 1.0),  # the paper: 3-10× larger than AdamW's, to keep lr·λ
        },
    ),
    SweepRanges(
        "soap",
        {
            # Adam-scaled steps in a rotated basis; small models want more than the paper's 3e-3 (measured on the
            # lm/quick workload: best 3e-2, the top of an earlier 3e-4…3e-2 range)
            "lr": (1e-3, 1e-1),
            "weight_decay": (1e-3, 1e-1),  # AdamW's decoupled decay, so AdamW's range
        },
    ),
    SweepRanges(
        "shampoo",
        {
            "lr": (1e-4, 1e-2),  # Adam-grafted step sizes, so AdamW's range
            "weight_decay": (1e-3, 1e-1),  # decoupled decay as in AdamW
        },
    ),
    SweepRanges(
        "muon",
        {
            # AdamW-like (the registry's match_adamw scaling), shifted up: measured on lm/quick, the best was 1e-2,
            # the top of an earlier 1e-4…1e-2 range
            "lr": (3e-4, 3e-2),
            "weight_decay": (1e-3, 1e-1),  # decoupled decay as in AdamW
        },
    ),
    SweepRanges(
        "mfac",
        {
            "lr": (1e-4, 1e-2),  # u = F̂⁻¹g scales like m/|g|, not like g: a decade around the class's 1e-3
        },
    ),
    SweepRanges(
        "conda",
        {
            "lr": (1e-4, 1e-2),  # Adam-sized steps (a rotated Adam, scale 1): AdamW's range
            "weight_decay": (1e-3, 1e-1),  # decoupled decay as in AdamW
        },
        beta2=_ADAM_BETA2,
    ),
    SweepRanges(
        "dct_adamw",
        {
            "lr": (1e-4, 1e-2),  # AdamW in a low-rank DCT subspace: AdamW's range
            "weight_decay": (1e-3, 1e-1),  # decoupled decay as in AdamW
        },
        beta2=_ADAM_BETA2,
    ),
    SweepRanges(
        "trion",
        {
            "lr": (3e-4, 3e-2),  # match_adamw-scaled orthonormal updates: Muon's range
            "weight_decay": (1e-3, 1e-1),  # decoupled decay as in AdamW
        },
    ),
    SweepRanges(
        "adamp",
        {
            "lr": (1e-4, 1e-2),  # Adam with a projection: AdamW's range
            "weight_decay": (1e-3, 1e-1),  # decoupled decay as in AdamW
        },
        beta2=_ADAM_BETA2,
    ),
    SweepRanges(
        "sgdp",
        {
            "lr": (1e-3, 1e-1),  # momentum SGD with a projection: SGD's range
        },
    ),
    SweepRanges(
        "fismo",
        {
            "lr": (3e-4, 3e-2),  # match_adamw-scaled Muon in whitened coordinates: Muon's range
            "weight_decay": (1e-3, 1e-1),  # decoupled decay as in AdamW
        },
    ),
    SweepRanges(
        "auon",
        {
            "lr": (3e-4, 3e-2),  # match_adamw-scaled normalized momentum: Muon's range
            "weight_decay": (1e-3, 1e-1),  # decoupled decay as in AdamW
        },
    ),
)


def _with_variants(ranges: tuple[SweepRanges, ...]) -> dict[str, SweepRanges]:
    """``{name: ranges}``, plus each registry variant's copy of its base's ranges (a variant of an optimizer
    without ranges gets none)."""
    table = {r.name: r for r in ranges}
    for name, s in REGISTRY.items():
        base = table.get(s.variant_of) if s.variant_of else None
        if base is not None:
            table[name] = SweepRanges(name, base.ranges, base.beta2, base.beta1)
    return table


#: The tuning ranges of every registry optimizer, by lower-case registry name.
TUNING: Mapping[str, SweepRanges] = MappingProxyType(_with_variants(_RANGES))


def sweep_ranges(name: str) -> SweepRanges:
    """The :class:`SweepRanges` of registry optimizer ``name`` (case-insensitive); ``ValueError`` if the registry
    does not know it, or if the benchmark has no tuning ranges for it yet."""
    key = optimizer_spec(name).name
    if key not in TUNING:
        raise ValueError(
            f"optimizer {key!r} has no tuning ranges: add a SweepRanges entry to precond.bench.tuning "
            f"(known: {', '.join(sorted(TUNING))})"
        )
    return TUNING[key]
