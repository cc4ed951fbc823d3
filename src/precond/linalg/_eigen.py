"""Eigenbases of symmetric PSD factors: a robust batched ``eigh`` and the warm-started QR refresh."""

from __future__ import annotations

from typing import NamedTuple

import torch

#: Relative diagonal jitter added before ``eigh``: ``jitter = EIGH_REL_JITTER * trace(A)/d`` (plus a tiny
#: absolute floor for all-zero factors).  A shift by a multiple of the identity leaves eigenvectors unchanged,
#: so this only conditions the solver; unlike the reference's absolute 1e-30 it is not lost in fp32 rounding.
EIGH_REL_JITTER = 1e-7
_ABS_FLOOR = 1e-30


#: Entries below this (relative to the factor's mean eigenvalue) are flushed to zero before ``eigh``: they are
#: 23 orders below the jitter, and as float32 subnormals they make LAPACK crawl (seen: 5 s instead of 0.2 s).
_FLUSH = 1e-30


def _jittered(a: torch.Tensor) -> torch.Tensor:
    """``A / s + jitter·I`` with ``s = trace(A)/d``: same eigenvectors, unit scale, no subnormal entries."""
    d = a.shape[-1]
    scale = a.diagonal(dim1=-2, dim2=-1).sum(-1).abs() / d + _ABS_FLOOR
    a = a / scale[..., None, None]
    a = torch.where(a.abs() < _FLUSH, 0.0, a)
    eye = torch.eye(d, dtype=a.dtype, device=a.device)
    return a + EIGH_REL_JITTER * eye


def _eigh_descending(a: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigh(a).eigenvectors.flip(-1)


def eigh_robust(factors: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors of a batch of symmetric matrices, columns ordered by descending eigenvalue.

    The chain: relative jitter → ``eigh`` in the input dtype → on error, ``eigh`` in float64 → for members
    that still fail (error or non-finite output) the ``previous`` basis is kept.  Returns ``(basis, failed)``
    where ``failed`` is a bool tensor ``[B]``.  No host synchronisation unless ``eigh`` raises.
    """
    a = _jittered(factors)
    try:
        vecs = _eigh_descending(a)
    except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
        vecs = _eigh_members_float64(a, previous)
    vecs = vecs.to(previous.dtype)
    finite = torch.isfinite(vecs).flatten(1).all(1)
    basis = torch.where(finite[:, None, None], vecs, previous)
    return basis, ~finite


def _eigh_members_float64(a: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    try:
        return _eigh_descending(a.double())
    except RuntimeError:
        pass
    out = []
    for member, prev in zip(a.double(), previous, strict=True):
        try:
            out.append(_eigh_descending(member[None])[0])
        except RuntimeError:
            out.append(torch.full_like(prev, float("nan"), dtype=torch.float64))
    return torch.stack(out)


#: CholeskyQR2 (:func:`eigenbasis_refresh` with ``cholesky_qr=True``) works on ``(A + c·I) Q`` with
#: ``c = CHOLQR_SHIFT · trace(A)/d``: the same eigenvectors and eigenvalue order, but the columns of null
#: directions of a rank-deficient factor stay near their (orthogonal) old columns instead of being round-off, so
#: the Gram matrix is well conditioned.  Directions with eigenvalue below ``c`` then barely rotate.
CHOLQR_SHIFT = 1e-3
#: CholeskyQR2 is accepted for a member when its second Gram matrix is this close to the identity,
#: ``‖Q₁ᵀQ₁ − I‖_F ≤ CHOLQR_ACCEPT`` (so ``κ(Q₁)² ≤ 3`` and the second pass is orthogonal to float precision);
#: otherwise (or when a Cholesky factorisation fails) the member is redone with Householder QR.
CHOLQR_ACCEPT = 0.5


class Refresh(NamedTuple):
    """Result of :func:`eigenbasis_refresh`: the new ``basis`` ``[B, d, d]``; ``failed`` ``[B]`` (non-finite
    result, previous basis kept); ``refreshed`` ``[B]`` (members whose basis was recomputed; ``None``: all)."""

    basis: torch.Tensor
    failed: torch.Tensor
    refreshed: torch.Tensor | None


def refresh_eigenbasis(factors: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One warm-started step of orthogonal (power) iteration, column order preserved.

    SOAP's refresh (Vyas et al. 2024, Alg. 4): estimate eigenvalues ``diag(Qᵀ A Q)``, orthogonalise the
    columns of ``A Q`` in descending order of that estimate (``qr``), and put each new column back in the slot
    of the column it came from.  Keeping slots fixed means the Adam second moment, which is indexed by slot,
    stays aligned with no permutation (the reference instead sorts ``Q`` and permutes ``v``; the two are the
    same up to a relabelling).  A member whose result is non-finite keeps its old basis; returns
    ``(basis, failed)``.  :func:`eigenbasis_refresh` has the opt-in cheaper variants.
    """
    out = eigenbasis_refresh(factors, basis)
    return out.basis, out.failed


def basis_drift(power: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """``‖offdiag(QᵀAQ)‖_F / ‖diag(QᵀAQ)‖_F`` per member from ``power = A Q`` and ``estimate = diag(QᵀAQ)``.

    No extra matmul: for orthogonal ``Q``, ``‖QᵀAQ‖_F = ‖AQ‖_F``, so column ``j``'s off-diagonal mass is
    ``‖A q_j‖² − (q_jᵀ A q_j)²`` (summed in float64).  0 for an exact eigenbasis (and for a zero factor).
    """
    est2 = estimate.double().square()
    off = (power.double().square().sum(-2) - est2).clamp_min(0.0).sum(-1)
    diag = est2.sum(-1)
    return torch.where(diag > 0, off / diag.clamp_min(_ABS_FLOOR), 0.0).sqrt()


def eigenbasis_refresh(
    factors: torch.Tensor,
    basis: torch.Tensor,
    *,
    cholesky_qr: bool = False,
    drift_tolerance: float = 0.0,
) -> Refresh:
    """:func:`refresh_eigenbasis` with two opt-in savings (both off by default: then it is exactly that step).

    ``cholesky_qr``: orthogonalise with CholeskyQR2 (Yamamoto et al. 2015; two passes of ``Gram → Cholesky →
    triangular solve``, all matrix-matrix work) on the shifted power ``(A + c·I) Q`` (:data:`CHOLQR_SHIFT`)
    instead of Householder QR; a member whose Cholesky fails or whose first pass is too far from orthogonal
    (:data:`CHOLQR_ACCEPT`) is redone with Householder QR.  Same eigenvectors in the limit; column signs may
    differ from Householder's (SOAP's update does not depend on them).

    ``drift_tolerance > 0``: only members whose :func:`basis_drift` exceeds it are recomputed (the others keep
    their basis bitwise; ``refreshed`` says which).  That check reuses ``A Q``, so it saves the QR (and, in
    SOAP, the momentum transport) of factors whose basis still diagonalises them.  Syncs with the host once.
    """
    # (A Q)ᵀ, whose row j is A q_j: the column norms, the reordering and Householder QR's column-major input are
    # then row operations, with no transposing copy (each ~10 ms at d = 2048) when ``basis`` is column-major, as
    # SOAP stores it.  Any layout gives the same numbers up to rounding.
    power_t = basis.mT @ factors.mT
    work = torch.empty_like(power_t)  # with ``power_t``, the only d×d buffers the refresh allocates
    estimate = torch.mul(basis.mT, power_t, out=work).sum(-1)
    if drift_tolerance > 0:
        refreshed = basis_drift(power_t.mT, estimate) > drift_tolerance
        count = int(refreshed.sum())
        if count == 0:
            return Refresh(basis, torch.zeros_like(refreshed), refreshed)
        if count < refreshed.numel():
            idx = refreshed.nonzero().squeeze(1)
            new, failed = _power_qr(factors[idx], basis[idx], power_t[idx], estimate[idx], cholesky_qr)
            all_failed = torch.zeros_like(refreshed).index_copy_(0, idx, failed)
            return Refresh(basis.index_copy(0, idx, new), all_failed, refreshed)
        new, failed = _power_qr(factors, basis, power_t, estimate, cholesky_qr, work)
        return Refresh(new, failed, refreshed)
    new, failed = _power_qr(factors, basis, power_t, estimate, cholesky_qr, work)
    return Refresh(new, failed, None)


def _power_qr(
    factors: torch.Tensor,
    basis: torch.Tensor,
    power_t: torch.Tensor,
    estimate: torch.Tensor,
    cholesky_qr: bool,
    work: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonalise the columns of ``A Q`` (given as ``power_t = (A Q)ᵀ``) in descending order of ``estimate``
    and put each back in its slot; returns ``(new basis, failed)``, column-major for Householder QR.

    ``power_t`` and ``work`` (a contiguous buffer of its shape, allocated if not given) are overwritten: the
    Householder path runs in them (QR in place, the result in ``power_t``'s memory), so that a refresh touches no
    freshly allocated d×d memory beyond those two (each first touch of 16 MB costs ~4 ms of page faults)."""
    if work is None:
        work = torch.empty_like(power_t)
    batch, d = estimate.shape
    order = estimate.argsort(dim=-1, descending=True)
    if cholesky_qr:
        shift = CHOLQR_SHIFT * factors.diagonal(dim1=-2, dim2=-1).sum(-1).abs() / d
        power_t = power_t.add_(basis.mT * shift[:, None, None])
    # Unit columns: QR's Q is invariant to positive column scaling, and columns of tiny eigen-directions would
    # otherwise sink into float32 subnormals, where LAPACK runs ~5x slower.
    power_t = power_t.div_(torch.linalg.vector_norm(power_t, dim=-1, keepdim=True).clamp_min(_ABS_FLOOR))
    offsets = torch.arange(batch, device=order.device)[:, None] * d
    # the columns of A Q in order, column-major (LAPACK's layout): the rows of (A Q)ᵀ, gathered into ``work``
    torch.index_select(power_t.view(batch * d, d), 0, (order + offsets).flatten(), out=work.view(batch * d, d))
    ordered = work.mT
    if cholesky_qr:
        q = _cholesky_qr2(ordered)
    else:
        tau = torch.empty(batch, d, dtype=power_t.dtype, device=power_t.device)
        q = torch.linalg.householder_product(*torch.geqrf(ordered, out=(ordered, tau)), out=ordered)
    # back to the slots: the rows of Qᵀ in the inverse permutation, into ``power_t``'s memory (no longer needed)
    inverse = (order.argsort(dim=-1) + offsets).flatten()
    torch.index_select(q.mT.reshape(batch * d, d), 0, inverse, out=power_t.view(batch * d, d))
    new = power_t.mT
    # the sum of an orthogonal Q's entries is 1ᵀQ1, at most d in magnitude: non-finite exactly when an entry is
    finite = torch.isfinite(new.sum((-2, -1)))
    if new.device.type == "cpu":  # the flag is read without a device sync: copy back only the failed members
        if not bool(finite.all()):
            bad = (~finite).nonzero().squeeze(1)
            new.index_copy_(0, bad, basis[bad])
        return new, ~finite
    return torch.where(finite[:, None, None], new, basis), ~finite


def _householder_q(a: torch.Tensor) -> torch.Tensor:
    """The ``Q`` of ``torch.linalg.qr(a)`` (bitwise: the same ``geqrf`` + ``orgqr``) without forming ``R``."""
    h, tau = torch.geqrf(a)
    return torch.linalg.householder_product(h, tau)


def _cholesky_qr2(a: torch.Tensor) -> torch.Tensor:
    """Orthonormal ``Q`` with ``a = Q R`` by CholeskyQR2; members that fail it get Householder QR instead."""
    gram = a.mT @ a
    chol, info = torch.linalg.cholesky_ex(gram)
    q1 = torch.linalg.solve_triangular(chol.mT, a, upper=True, left=False)  # a · L⁻ᵀ
    gram = q1.mT @ q1
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    close = torch.linalg.matrix_norm(gram - eye) <= CHOLQR_ACCEPT
    chol, info2 = torch.linalg.cholesky_ex(gram)
    q = torch.linalg.solve_triangular(chol.mT, q1, upper=True, left=False)
    ok = (info == 0) & (info2 == 0) & close & torch.isfinite(q).flatten(1).all(1)
    bad = (~ok).nonzero().squeeze(1)
    if bad.numel():  # host sync: only refresh steps come here
        q = q.index_copy(0, bad, _householder_q(a[bad]))
    return q
