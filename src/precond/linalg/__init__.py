"""Shared kernels: Kronecker-factor algebra, eigenbasis refresh, parameter layouts (merging and blocking),
ragged buckets (padded batches of segments) with batched PCG and sketch preconditioners; SOR/SSOR with learned
relaxation (Learning to Relax), sketch-preconditioned least squares."""

from typing import TYPE_CHECKING, Any

from precond.linalg._cg import CGInfo, pcg
from precond.linalg._dct import dct_basis, dct_rows
from precond.linalg._eigen import (
    CHOLQR_ACCEPT,
    CHOLQR_SHIFT,
    EIGH_REL_JITTER,
    Refresh,
    basis_drift,
    eigenbasis_refresh,
    eigh_robust,
    refresh_eigenbasis,
)
from precond.linalg._kron import accumulate_gram_, change_basis, contract_all_but, project, project_back
from precond.linalg._layout import BlockLayout, merge_greedy, plan_layout
from precond.linalg._newton_schulz import MUON_COEFFICIENTS, newton_schulz
from precond.linalg._ragged import (
    BUCKET_GROWTH,
    Bucket,
    block_sign_sketch,
    compact_indices,
    pad_buckets,
    padded_widths,
    segment_csr,
    segment_dot,
    segment_sign_sketch,
)
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

# The SciPy-based solvers load on first use, so that `import precond.optim` / `precond.completion` stay SciPy-free.
_LAZY = {
    "DEFAULT_GRID": "_tuner",
    "ChebCB": "_tuner",
    "LinearSystem": "_tuner",
    "OmegaTuner": "_tuner",
    "SequenceResult": "_tuner",
    "TsallisINF": "_tuner",
    "replay": "_tuner",
    "solve_sequence": "_tuner",
    "tsallis_probabilities": "_tuner",
    "IC0": "_ic0",
    "ic0": "_ic0",
    "BatchSolveResult": "_sor",
    "LstsqResult": "_lstsq",
    "SolveResult": "_sor",
    "SparseFamily": "_sor",
    "jacobi_radius": "_sor",
    "lstsq": "_lstsq",
    "sor": "_sor",
    "sor_batch": "_sor",
    "ssor_pcg": "_sor",
    "ssor_pcg_batch": "_sor",
    "young_omega": "_sor",
}

if TYPE_CHECKING:
    from precond.linalg._ic0 import IC0, ic0
    from precond.linalg._lstsq import LstsqResult, lstsq
    from precond.linalg._sor import (
        BatchSolveResult,
        SolveResult,
        SparseFamily,
        jacobi_radius,
        sor,
        sor_batch,
        ssor_pcg,
        ssor_pcg_batch,
        young_omega,
    )
    from precond.linalg._tuner import (
        DEFAULT_GRID,
        ChebCB,
        LinearSystem,
        OmegaTuner,
        SequenceResult,
        TsallisINF,
        replay,
        solve_sequence,
        tsallis_probabilities,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"precond.linalg.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'precond.linalg' has no attribute {name!r}")


__all__ = [
    "BUCKET_GROWTH",
    "CHOLQR_ACCEPT",
    "CHOLQR_SHIFT",
    "CHOL_REL_JITTER",
    "DEFAULT_GRID",
    "EIGH_REL_JITTER",
    "IC0",
    "MUON_COEFFICIENTS",
    "BatchSolveResult",
    "BlockLayout",
    "Bucket",
    "CGInfo",
    "ChebCB",
    "LinearSystem",
    "LstsqResult",
    "OmegaTuner",
    "Refresh",
    "SequenceResult",
    "SlidingWindow",
    "SolveResult",
    "SparseFamily",
    "TsallisINF",
    "accumulate_gram_",
    "basis_drift",
    "block_sign_sketch",
    "change_basis",
    "compact_indices",
    "contract_all_but",
    "damped_cholesky",
    "dct_basis",
    "dct_rows",
    "eigenbasis_refresh",
    "eigh_robust",
    "ic0",
    "inverse_root",
    "jacobi_radius",
    "lstsq",
    "merge_greedy",
    "newton_schulz",
    "pad_buckets",
    "padded_widths",
    "pcg",
    "plan_layout",
    "project",
    "project_back",
    "refresh_eigenbasis",
    "replay",
    "segment_csr",
    "segment_dot",
    "segment_pcg",
    "segment_sign_sketch",
    "solve_sequence",
    "sor",
    "sor_batch",
    "ssor_pcg",
    "ssor_pcg_batch",
    "tsallis_probabilities",
    "window_filled",
    "window_ihvp",
    "window_ihvp_newest",
    "window_new",
    "window_update_",
    "young_omega",
]
