"""Shared kernels: Kronecker-factor algebra, eigenbasis refresh, parameter layouts (merging and blocking),
ragged buckets (padded batches of segments), segmented (per-row) ridge operators with batched PCG and
sketch preconditioners."""

from precond.linalg._cg import CGInfo, pcg
from precond.linalg._eigen import EIGH_REL_JITTER, eigh_robust, refresh_eigenbasis
from precond.linalg._kron import contract_all_but, project, project_back
from precond.linalg._layout import BlockLayout, merge_greedy, plan_layout
from precond.linalg._newton_schulz import MUON_COEFFICIENTS, newton_schulz
from precond.linalg._ragged import BUCKET_GROWTH, Bucket, block_sign_sketch, gather_padded, pad_buckets, padded_widths
from precond.linalg._roots import inverse_root
from precond.linalg._segmented import segment_pcg
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
    "BUCKET_GROWTH",
    "CHOL_REL_JITTER",
    "EIGH_REL_JITTER",
    "MUON_COEFFICIENTS",
    "BlockLayout",
    "Bucket",
    "CGInfo",
    "SlidingWindow",
    "block_sign_sketch",
    "contract_all_but",
    "damped_cholesky",
    "eigh_robust",
    "gather_padded",
    "inverse_root",
    "merge_greedy",
    "newton_schulz",
    "pad_buckets",
    "padded_widths",
    "pcg",
    "plan_layout",
    "project",
    "project_back",
    "refresh_eigenbasis",
    "segment_pcg",
    "window_filled",
    "window_ihvp",
    "window_ihvp_newest",
    "window_new",
    "window_update_",
]
