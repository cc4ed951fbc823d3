"""The benchmark's tuning ranges: one per registry optimizer, accepted by its class, log grids, validation."""

from __future__ import annotations

import itertools
import math

import pytest

from precond.bench.tuning import TUNING, SweepRanges, sweep_ranges
from precond.optim import REGISTRY

NAMES = sorted(REGISTRY)


def test_every_registry_optimizer_has_tuning_ranges_and_nothing_else_does() -> None:
    assert sorted(TUNING) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_ranges_are_hyperparameters_the_optimizer_accepts(name: str) -> None:
    ranges = sweep_ranges(name)
    accepted = REGISTRY[name].hyperparameters()
    assert ranges.name == name and "lr" in ranges
    assert set(ranges.ranges) <= set(accepted), f"{name}: {set(ranges.ranges) - set(accepted)} not accepted"


@pytest.mark.parametrize("name", NAMES)
def test_grids_are_log_spaced_within_the_range(name: str) -> None:
    s = sweep_ranges(name)
    for key, (low, high) in s.ranges.items():
        assert 0 < low < high, f"{name}.{key}: range ({low}, {high})"
        grid = s.grid(key, 5)
        assert len(grid) == 5
        assert grid[0] == pytest.approx(low, rel=1e-12) and grid[-1] == pytest.approx(high, rel=1e-12)
        ratios = [b / a for a, b in itertools.pairwise(grid)]
        assert ratios == pytest.approx([ratios[0]] * 4, rel=1e-12), f"{name}.{key}: grid {grid} not log-spaced"
        assert s.grid(key, 1) == pytest.approx([math.sqrt(low * high)], rel=1e-12)


@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY[n].variant_of])
def test_a_variant_is_tuned_as_its_base(name: str) -> None:
    """soap_drift & co. sweep exactly soap's ranges (issue 18: the final loss against the default, tuned alike)."""
    mine, base = sweep_ranges(name), sweep_ranges(REGISTRY[name].variant_of)
    assert mine.name == name and mine is not base
    assert dict(mine.ranges) == dict(base.ranges) and (mine.beta2, mine.beta1) == (base.beta2, base.beta1)
    assert mine.grid("lr", 5) == base.grid("lr", 5)


def test_grid_rejects_unknown_names_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="momentum"):
        sweep_ranges("adamw").grid("momentum", 3)
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="points"):
            sweep_ranges("adamw").grid("lr", bad)  # type: ignore[arg-type]


def test_sweep_ranges_follow_the_papers() -> None:
    """Lion wants a 3-10× smaller lr and a larger weight decay than AdamW (Chen et al. 2023, §3.2)."""
    adamw, lion = sweep_ranges("adamw").ranges, sweep_ranges("lion").ranges
    assert 3 <= adamw["lr"][0] / lion["lr"][0] <= 10 or 3 <= adamw["lr"][1] / lion["lr"][1] <= 10
    assert lion["weight_decay"][1] > adamw["weight_decay"][1]


def test_names_are_case_insensitive_and_unknown_ones_are_named() -> None:
    assert sweep_ranges("SOAP") is TUNING["soap"]
    with pytest.raises(ValueError, match="'adamx'"):
        sweep_ranges("adamx")


def test_ranges_are_validated_and_immutable() -> None:
    with pytest.raises(ValueError, match="'lr' range"):
        SweepRanges("x", {"momentum": (0.1, 0.9)})
    for low, high in ((0.0, 1.0), (1e-2, 1e-3), (-1.0, 1.0)):
        with pytest.raises(ValueError, match="0 < low <= high"):
            SweepRanges("x", {"lr": (low, high)})
    with pytest.raises(TypeError):
        TUNING["adamw"].ranges["lr"] = (1.0, 2.0)  # type: ignore[index]
