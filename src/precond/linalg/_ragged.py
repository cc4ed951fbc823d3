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
