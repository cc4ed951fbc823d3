"""Learned solvers: the deep conjugate direction method (DCDM; Kaneda, Akar, Chen, Kala, Hyde, Teran, ICML 2023)
for 2-D pressure-Poisson problems with obstacles: the direction network, its unsupervised training on Ritz-vector
right-hand sides, save/load, the solver loop, and small pretrained checkpoints for 32² and 64² grids
(:func:`pretrained_direction_net`).

Needs torch and SciPy (import ``precond.linalg.learned`` explicitly; ``precond.linalg`` does not load it).
"""

from precond.linalg.learned._grid import PoissonGrid
from precond.linalg.learned._net import DirectionNet, load_direction_net, save_direction_net
from precond.linalg.learned._pretrained import CHECKPOINTS, PRETRAINED, pretrained, pretrained_direction_net
from precond.linalg.learned._solver import DCDMResult, dcdm
from precond.linalg.learned._train import TrainReport, lanczos_ritz, line_search_loss, ritz_rhs, train_direction_net

__all__ = [
    "CHECKPOINTS",
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
    "pretrained_direction_net",
    "ritz_rhs",
    "save_direction_net",
    "train_direction_net",
]
