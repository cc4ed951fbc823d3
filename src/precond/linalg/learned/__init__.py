"""Learned solvers: the deep conjugate direction method (DCDM; Kaneda, Akar, Chen, Kala, Hyde, Teran, ICML 2023)
for 2-D pressure-Poisson problems with obstacles: the direction network, its unsupervised training on Ritz-vector
right-hand sides, save/load, the solver loop, and a small pretrained checkpoint (:func:`pretrained`).

Needs torch and SciPy (import ``precond.linalg.learned`` explicitly; ``precond.linalg`` does not load it).
"""

from pathlib import Path

from precond.linalg.learned._grid import PoissonGrid
from precond.linalg.learned._net import DirectionNet, load_direction_net, save_direction_net
from precond.linalg.learned._solver import DCDMResult, dcdm
from precond.linalg.learned._train import TrainReport, lanczos_ritz, line_search_loss, ritz_rhs, train_direction_net

#: The shipped checkpoint: trained by ``benchmarks/train_dcdm.py`` on 32×32 grids with random obstacles.
PRETRAINED = Path(__file__).with_name("dcdm_poisson32.pt")


def pretrained() -> DirectionNet:
    """The shipped :class:`DirectionNet` (see :data:`PRETRAINED`)."""
    return load_direction_net(PRETRAINED)


__all__ = [
    "PRETRAINED",
    "DCDMResult",
    "DirectionNet",
    "PoissonGrid",
    "TrainReport",
    "dcdm",
    "lanczos_ritz",
    "line_search_loss",
    "load_direction_net",
    "pretrained",
    "ritz_rhs",
    "save_direction_net",
    "train_direction_net",
]
