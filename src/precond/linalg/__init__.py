"""Shared kernels: Kronecker-factor algebra, eigenbasis refresh, parameter layouts (merging and blocking)."""

from precond.linalg._eigen import EIGH_REL_JITTER, eigh_robust, refresh_eigenbasis
from precond.linalg._kron import contract_all_but, project, project_back
from precond.linalg._layout import BlockLayout, merge_greedy, plan_layout

__all__ = [
    "EIGH_REL_JITTER",
    "BlockLayout",
    "contract_all_but",
    "eigh_robust",
    "merge_greedy",
    "plan_layout",
    "project",
    "project_back",
    "refresh_eigenbasis",
]
