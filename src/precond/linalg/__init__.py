"""Shared kernels: Kronecker-factor algebra, eigenbasis refresh, parameter layouts (merging and blocking),
segmented (per-row) ridge operators with batched PCG and sketch preconditioners."""

from precond.linalg._cg import CGInfo, pcg
from precond.linalg._dct import dct_basis, dct_rows
from precond.linalg._eigen import EIGH_REL_JITTER, eigh_robust, refresh_eigenbasis
from precond.linalg._kron import contract_all_but, project, project_back
from precond.linalg._layout import BlockLayout, merge_greedy, plan_layout
from precond.linalg._newton_schulz import MUON_COEFFICIENTS, newton_schulz
from precond.linalg._roots import inverse_root
from precond.linalg._segmented import segment_gram_matvec, segment_pcg, segment_sketch_factor, triangular_precond
from precond.linalg._woodbury import (
    CHOL_REL_JITTER,
    SlidingWindow,
    damped_cholesky,
    window_filled,
    window_ihvp,
    window_ihvp_newest,
    window_new,
    window_update_,
)

__all__ = [
    "CHOL_REL_JITTER",
    "EIGH_REL_JITTER",
    "MUON_COEFFICIENTS",
    "BlockLayout",
    "CGInfo",
    "SlidingWindow",
    "contract_all_but",
    "damped_cholesky",
    "dct_basis",
    "dct_rows",
    "eigh_robust",
    "inverse_root",
    "merge_greedy",
    "newton_schulz",
    "pcg",
    "plan_layout",
    "project",
    "project_back",
    "refresh_eigenbasis",
    "segment_gram_matvec",
    "segment_pcg",
    "segment_sketch_factor",
    "triangular_precond",
    "window_filled",
    "window_ihvp",
    "window_ihvp_newest",
    "window_new",
    "window_update_",
]
