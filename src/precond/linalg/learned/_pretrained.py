"""The DCDM checkpoints shipped in the package, one per grid size, each trained by ``benchmarks/train_dcdm.py
--size N`` on ``N × N`` pressure-Poisson grids with random obstacles (the script's docstring gives the commands)."""

from __future__ import annotations

from pathlib import Path

from precond.linalg.learned._net import DirectionNet, load_direction_net

__all__ = ["CHECKPOINTS", "PRETRAINED", "pretrained", "pretrained_direction_net"]

_HERE = Path(__file__).parent

#: Grid size → shipped checkpoint.
CHECKPOINTS: dict[int, Path] = {32: _HERE / "dcdm_poisson32.pt", 64: _HERE / "dcdm_poisson64.pt"}

#: The 32×32 checkpoint (the default of :func:`pretrained_direction_net`).
PRETRAINED = CHECKPOINTS[32]


def pretrained_direction_net(size: int = 32) -> DirectionNet:
    """The shipped :class:`DirectionNet` trained on ``size × size`` grids (see :data:`CHECKPOINTS`)."""
    if isinstance(size, bool) or not isinstance(size, int) or size not in CHECKPOINTS:
        sizes = ", ".join(str(s) for s in sorted(CHECKPOINTS))
        raise ValueError(
            f"no DCDM checkpoint is shipped for grid `size` {size!r} (shipped: {sizes}); train one with "
            f"`python benchmarks/train_dcdm.py --size {size} --out net.pt` and load it with load_direction_net"
        )
    return load_direction_net(CHECKPOINTS[size])


def pretrained() -> DirectionNet:
    """The shipped 32×32 :class:`DirectionNet` (``pretrained_direction_net(32)``)."""
    return pretrained_direction_net(32)
