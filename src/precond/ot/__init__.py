"""Entropic optimal transport: stabilized Sinkhorn and Sinkhorn–Newton–Sparse (SNS), with POT's conventions.

>>> from precond.ot import dist, sinkhorn
>>> res = sinkhorn(None, None, dist(x, y), reg=1e-2, method="sns")   # doctest: +SKIP
>>> res.plan, res.cost, res.converged, res.iterations                   # doctest: +SKIP

POT users: :mod:`precond.ot.pot` has ``ot.sinkhorn``/``ot.sinkhorn2``'s signature and returns plain arrays.
"""

from precond.ot import pot
from precond.ot.dist import dist, unif
from precond.ot.result import ConvergenceWarning, HistoryEntry, OTResult
from precond.ot.sinkhorn import METHODS, sinkhorn, sinkhorn2

__all__ = [
    "METHODS",
    "ConvergenceWarning",
    "HistoryEntry",
    "OTResult",
    "dist",
    "pot",
    "sinkhorn",
    "sinkhorn2",
    "unif",
]
