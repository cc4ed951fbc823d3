"""Ragged segments packed into padded buckets of near-equal length, so per-segment dense work is batched BLAS.

A CSR layout (segment ``i`` owns positions ``indptr[i] … indptr[i+1]−1`` of some flat arrays) is split into
buckets of segments whose lengths round up to the same *width* ``w`` (the smallest ``⌈gᵏ⌉ ≥ count`` for the growth
factor ``g``).  A bucket is then one dense ``[B, w]`` gather index, padded with ``-1``, so that ``A[index]`` of an
array with a zero row appended at its end is a ``[B, w, …]`` tensor whose padding rows are zero.  Per-segment Gram
matrices, normal-equation matvecs and sketches become ``bmm``/``einsum`` calls (BLAS-3 or batched BLAS-2) instead of
per-observation outer products and ``index_add_``; the padding costs at most a factor ``g`` of extra work.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

#: Default growth factor of the bucket widths: at most 25 % padding per segment, about ``log(max)/log(1.25)``
#: buckets (34 for a segment of 2,000).
BUCKET_GROWTH = 1.25


@dataclass(frozen=True)
class Bucket:
    """Segments of one padded width.

    Attributes:
        segments: ``[B]`` segment ids (int64, ascending).
        positions: ``[B, w]`` CSR positions of each segment's entries, ``-1`` for padding.
        counts: ``[B]`` entries per segment (``≤ w``).
    """

    segments: torch.Tensor
    positions: torch.Tensor
    counts: torch.Tensor

    @property
    def width(self) -> int:
        """The padded length ``w``."""
        return int(self.positions.shape[1])

    def select(self, mask: torch.Tensor) -> Bucket:
        """The sub-bucket of the segments with ``mask`` (``[B]`` bool), same width."""
        return Bucket(self.segments[mask], self.positions[mask], self.counts[mask])

    def chunks(self, max_segments: int) -> list[Bucket]:
        """Consecutive sub-buckets of at most ``max_segments ≥ 1`` segments each."""
        step = max(1, int(max_segments))
        n = int(self.segments.numel())
        return [
            Bucket(self.segments[i : i + step], self.positions[i : i + step], self.counts[i : i + step])
            for i in range(0, n, step)
        ]


def padded_widths(counts: torch.Tensor, growth: float = BUCKET_GROWTH) -> torch.Tensor:
    """``w_i``, the smallest ``⌈growthᵏ⌉`` (``k = 0, 1, …``) that is ``≥ counts[i]`` (``0`` for empty segments)."""
    if not growth > 1.0 or not math.isfinite(growth):
        raise ValueError(f"`growth` must be a finite number > 1, got {growth}")
    c = counts.to(torch.float64)
    # ⌈gᵏ⌉ ≥ c  ⇔  gᵏ > c − 1: the smallest such k is ⌊log(c − 1)/log g⌋ + 1 (k = 0 for c = 1)
    k = torch.where(c > 1, torch.floor(torch.log((c - 1).clamp(min=1)) / math.log(growth) + 1e-12) + 1, 0.0)
    w = torch.ceil(growth**k - 1e-9).to(torch.int64)
    w = torch.maximum(w, counts.to(torch.int64))  # guard rounding at the bucket edges
    return torch.where(counts > 0, w, torch.zeros_like(w))


def pad_buckets(counts: torch.Tensor, growth: float = BUCKET_GROWTH) -> list[Bucket]:
    """The non-empty segments of a CSR layout with ``counts`` (``[n_seg]``) grouped into buckets of one padded width
    each (:func:`padded_widths`), in ascending width; segment entries keep their CSR order within a row."""
    counts = counts.to(torch.int64)
    indptr = torch.cumsum(counts, 0) - counts
    widths = padded_widths(counts, growth)
    out = []
    for w in torch.unique(widths[widths > 0]).tolist():
        segs = torch.nonzero(widths == w).reshape(-1)
        cnt = counts[segs]
        offsets = torch.arange(w, device=counts.device)
        pos = indptr[segs, None] + offsets
        pos = torch.where(offsets < cnt[:, None], pos, torch.full_like(pos, -1))
        out.append(Bucket(segs, pos, cnt))
    return out


def block_sign_sketch(W: torch.Tensor, sketch_rows: int, generator: torch.Generator) -> torch.Tensor:
    """``S_i W_i`` ``[B, s, d]`` for a batch of designs ``W [B, w, d]`` (zero padding rows allowed).

    ``S_i`` is a CountSketch (Clarkson–Woodruff 2013) with random signs and the balanced hash ``h(j) = j mod s``:
    the rows of ``W_i`` (zero-padded to a multiple of ``s``) are multiplied by independent random signs and the
    consecutive blocks of ``s`` rows are summed, so ``E[S_iᵀS_i] = I`` and every sketch row receives the same number
    of design rows.  The hash is fixed rather than random: the row order of a design (here: observations sorted by
    column index) is independent of its values.  Cost: one pass over ``W`` (``O(w d)``), no index or sort.
    """
    if sketch_rows < 1:
        raise ValueError(f"`sketch_rows` must be ≥ 1, got {sketch_rows}")
    B, w, d = W.shape
    s = sketch_rows
    wp = -(-w // s) * s
    sign = torch.randint(0, 2, (B, wp), generator=generator).to(W.device, W.dtype) * 2 - 1
    if wp != w:
        W = torch.cat([W, W.new_zeros((B, wp - w, d))], 1)
    return (W * sign[:, :, None]).reshape(B, wp // s, s, d).sum(1)


# --- the same segments as one sparse CSR matrix: matrix-free products without a gathered design ---------------


def compact_indices(indptr: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indptr, columns)`` as int32 when every value fits (else unchanged), for :func:`segment_csr` and
    :func:`segment_dot`: with 32-bit indices torch's CPU sparse kernels skip a conversion of both arrays per call
    (an SpMM and a sampled product run ~20 % faster; same results).  Convert once, reuse for every product."""
    limit = torch.iinfo(torch.int32).max
    if indptr.dtype == columns.dtype == torch.int32:
        return indptr, columns
    if columns.numel() > limit or int(indptr[-1]) > limit or (columns.numel() and int(columns.max()) > limit):
        return indptr, columns
    return indptr.to(torch.int32), columns.to(torch.int32)


def segment_csr(indptr: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, n_columns: int) -> torch.Tensor:
    """The ``[n_seg, n_columns]`` sparse CSR matrix whose row ``i`` holds ``values[indptr[i]:indptr[i+1]]`` at
    ``columns[…]`` (columns ascending within a row; not checked)."""
    with warnings.catch_warnings():  # torch flags its CSR layout as beta once per process
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(indptr, columns, values, (indptr.numel() - 1, n_columns), check_invariants=False)


def segment_dot(
    indptr: torch.Tensor, columns: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``[nnz]``: ``X[i] · Y[columns[e]]`` for every entry ``e`` of segment ``i`` (a sampled dense–dense product,
    ``torch.sparse.sampled_addmm``; ``O(nnz · d)``, no ``[nnz, d]`` gather).

    The product is written in place into the values of a CSR matrix built around ``out`` (a contiguous ``[nnz]``
    tensor of ``X``'s dtype, returned; a new one if ``None``): torch's out-of-place form copies both index arrays and
    the values of its pattern on every call, and a buffer reused across calls saves the fresh allocation too."""
    nnz = columns.numel()
    if X.requires_grad or Y.requires_grad:  # torch's out= forms do not record autograd
        pattern = segment_csr(indptr, columns, X.new_ones(nnz), Y.shape[0])
        return torch.sparse.sampled_addmm(pattern, X, Y.T, beta=0.0).values()
    if out is None:
        out = X.new_zeros(nnz)
    elif out.shape != (nnz,) or out.dtype != X.dtype or out.device != X.device or not out.is_contiguous():
        raise ValueError(
            f"`out` must be a contiguous [{nnz}] {X.dtype} tensor on {X.device}, got {tuple(out.shape)} {out.dtype}"
        )
    else:
        out.zero_()  # torch scales the old values by beta = 0, which keeps a NaN
    pattern = segment_csr(indptr, columns, out, Y.shape[0])
    torch.sparse.sampled_addmm(pattern, X, Y.T, beta=0.0, out=pattern)
    return out


def segment_sign_sketch(
    indptr: torch.Tensor, columns: torch.Tensor, Y: torch.Tensor, sketch_rows: int, generator: torch.Generator
) -> torch.Tensor:
    """``S_i W_i`` ``[n_seg, s, d]`` for the designs ``W_i = Y[columns[indptr[i]:indptr[i+1]]]`` without gathering
    them: the sketch of :func:`block_sign_sketch` (CountSketch, random signs, hash ``h(p) = p mod s`` of the position
    ``p`` in the segment) as one sparse ``[n_seg · s, n_y]`` sign matrix times ``Y`` (``O(nnz · d)``).  A segment of
    at most ``s`` entries is copied, not mixed: its sketched Gram is its exact Gram."""
    if sketch_rows < 1:
        raise ValueError(f"`sketch_rows` must be ≥ 1, got {sketch_rows}")
    s, n_seg, nnz = sketch_rows, indptr.numel() - 1, columns.numel()
    counts = indptr[1:] - indptr[:-1]
    seg = torch.repeat_interleave(torch.arange(n_seg, device=indptr.device), counts, output_size=nnz)
    pos = torch.arange(nnz, device=indptr.device) - indptr[seg]
    q, rem = counts // s, counts % s
    # sketch row h of segment i holds its entries p ≡ h (mod s) in order: it starts at indptr_i + h q_i + min(h, rem_i)
    h = torch.arange(s, device=indptr.device)
    starts = indptr[:-1, None] + h * q[:, None] + torch.minimum(h, rem[:, None])
    hp = pos % s
    dest = indptr[seg] + hp * q[seg] + torch.minimum(hp, rem[seg]) + pos // s
    sk_columns = torch.empty_like(columns)
    sk_columns[dest] = columns
    sk_indptr = torch.cat([starts.reshape(-1), indptr[-1:]])
    signs = torch.randint(0, 2, (nnz,), generator=generator).to(Y.device, Y.dtype) * 2 - 1
    return (segment_csr(sk_indptr, sk_columns, signs, Y.shape[0]) @ Y).reshape(n_seg, s, Y.shape[1])
