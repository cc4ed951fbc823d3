"""Eigenbases of symmetric PSD factors: a robust batched ``eigh`` and the warm-started QR refresh."""

from __future__ import annotations

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


def refresh_eigenbasis(factors: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One warm-started step of orthogonal (power) iteration, column order preserved.

    SOAP's refresh (Vyas et al. 2024, Alg. 4): estimate eigenvalues ``diag(Qᵀ A Q)``, orthogonalise the
    columns of ``A Q`` in descending order of that estimate (``qr``), and put each new column back in the slot
    of the column it came from.  Keeping slots fixed means the Adam second moment, which is indexed by slot,
    stays aligned with no permutation (the reference instead sorts ``Q`` and permutes ``v``; the two are the
    same up to a relabelling).  A member whose result is non-finite keeps its old basis; returns
    ``(basis, failed)``.
    """
    power = factors @ basis
    estimate = (basis * power).sum(-2)
    order = estimate.argsort(dim=-1, descending=True)
    index = order[:, None, :].expand_as(power)
    # Unit columns: QR's Q is invariant to positive column scaling, and columns of tiny eigen-directions would
    # otherwise sink into float32 subnormals, where LAPACK runs ~5x slower.
    power = power / power.norm(dim=-2, keepdim=True).clamp_min(_ABS_FLOOR)
    q = torch.linalg.qr(power.gather(-1, index)).Q
    new = torch.empty_like(q).scatter_(-1, index, q)
    finite = torch.isfinite(new).flatten(1).all(1)
    return torch.where(finite[:, None, None], new, basis), ~finite
