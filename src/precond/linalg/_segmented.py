"""Segment-wise (ragged, CSR-grouped) ridge normal operators, a batched PCG with per-segment tolerances, and a
sketch-and-precondition factor per segment.

A *segmented* design is ``A [N, d]`` whose rows are grouped into ``n_seg`` segments by ``seg [N]`` (sorted: CSR
order); segment ``i`` owns the design matrix ``A_i`` (its rows of ``A``) and the ridge operator

    H_i = A_iᵀ A_i + λ_i I.

Everything is matrix-free and batched over segments: ``H_i x_i`` for all ``i`` is one gather, one row-wise dot and
one ``index_add_`` (``O(N d)``), never a ``d × d`` Gram matrix.  The preconditioner is the sketch-and-precondition
factor of Rokhlin–Tygert (2008) / Avron–Maymounkov–Toledo (Blendenpik, 2010), used per row by Gu–Song–Yin–Zhang
(ICLR 2024, "FastMultiReg"): ``R_i`` from the QR of ``[S_i A_i; √λ_i I]`` for a sparse sign sketch ``S_i``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def segment_gram_matvec(seg: torch.Tensor, A: torch.Tensor, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``(A_iᵀ A_i + λ_i I) x_i`` for every segment ``i``; ``x`` is ``[n_seg, d]``, cost ``O(N d)``.

    Args:
        seg: ``[N]`` segment id of each design row (int64, any order).
        A: ``[N, d]`` design rows.
        x: ``[n_seg, d]`` one vector per segment.
        lam: ``[n_seg]`` ridge weights.
    """
    y = (A * x[seg]).sum(1)
    out = lam[:, None] * x
    out.index_add_(0, seg, A * y[:, None])
    return out


def segment_pcg(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    tol: float | torch.Tensor,
    max_iter: int,
    x0: torch.Tensor | None = None,
    precond: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preconditioned CG on ``n_seg`` independent SPD systems ``H_i x_i = b_i`` at once (Hestenes–Stiefel 1952).

    Each system stops on its own relative residual ``‖b_i − H_i x_i‖₂ ≤ tol_i ‖b_i‖₂`` (masked: a converged
    system no longer moves while the others go on), or after ``max_iter`` iterations.  Each iteration costs one
    batched ``matvec`` and one ``precond`` for all systems.  CG never increases the quadratic ``½xᵀHx − bᵀx`` of
    a system relative to its start ``x0``, so a warm start can only help.

    Args:
        matvec: ``[n_seg, d] → [n_seg, d]``, ``x ↦ (H_i x_i)_i``.
        b: ``[n_seg, d]`` right-hand sides.
        tol: relative tolerance, a float or ``[n_seg]`` per system (``0`` runs ``max_iter`` iterations).
        max_iter: iteration cap ``≥ 0``.
        x0: warm start ``[n_seg, d]`` (default zero).
        precond: ``r ↦ P⁻¹ r`` batched like ``matvec`` (default: none).

    Returns:
        ``(x, iterations, converged)``: the solutions, the iterations each system ran ``[n_seg]`` (int64) and
        whether it met its tolerance ``[n_seg]`` (bool).  A breakdown ``pᵢᵀ H_i pᵢ ≤ 0`` freezes that system
        (reported as not converged unless its residual is already within tolerance).
    """
    if max_iter < 0:
        raise ValueError(f"`max_iter` must be ≥ 0, got {max_iter}")
    tol_t = torch.as_tensor(tol, dtype=b.dtype, device=b.device)
    if bool((tol_t < 0).any()) or not bool(torch.isfinite(tol_t).all()):
        raise ValueError(f"`tol` must be finite and ≥ 0, got {tol}")

    def apply_p(r: torch.Tensor) -> torch.Tensor:
        return r if precond is None else precond(r)

    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    threshold = (tol_t * torch.linalg.vector_norm(b, dim=1)).reshape(-1)
    threshold = threshold.expand(b.shape[0])
    iterations = torch.zeros(b.shape[0], dtype=torch.int64, device=b.device)
    rnorm = torch.linalg.vector_norm(r, dim=1)
    active = rnorm > threshold
    z = apply_p(r)
    p = z.clone()
    rz = (r * z).sum(1)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        hp = matvec(p)
        php = (p * hp).sum(1)
        ok = active & (php > 0)
        alpha = torch.where(ok, rz / torch.where(ok, php, torch.ones_like(php)), torch.zeros_like(php))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * hp
        iterations += ok.to(torch.int64)
        rnorm = torch.linalg.vector_norm(r, dim=1)
        active = ok & (rnorm > threshold)
        z = apply_p(r)
        rz_new = (r * z).sum(1)
        beta = torch.where(active, rz_new / torch.where(rz != 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta[:, None] * p
        rz = rz_new
    return x, iterations, rnorm <= threshold


def segment_sketch_factor(
    seg: torch.Tensor,
    A: torch.Tensor,
    lam: torch.Tensor,
    sketch_rows: int,
    nnz: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Upper-triangular ``R_i [n_seg, d, d]`` with ``R_iᵀ R_i ≈ A_iᵀ A_i + λ_i I``, by one batched QR.

    ``R_i`` is the R factor of ``[S_i A_i; √λ_i I]`` with ``S_i`` an ``s × |A_i|`` sparse sign sketch (OSNAP,
    Nelson–Nguyễn 2013: every design row goes to ``nnz`` random buckets of ``s`` with random signs, scaled
    ``1/√nnz``).  A segment with at most ``s`` rows is not sketched (``S_i`` = identity, ``R_i`` exact).  If
    ``S_i`` is a subspace embedding with distortion ``ε`` then ``κ(R_i⁻ᵀ H_i R_i⁻¹) ≤ ((1+ε)/(1−ε))²``
    (Rokhlin–Tygert 2008), so PCG needs a number of iterations independent of ``κ(A_i)``.

    Cost: ``O(nnz · N d)`` for the sketch plus ``O(n_seg (s + d) d²)`` for the QR (the paper's ``n k³`` term);
    memory ``n_seg (s + d) d`` numbers.  A segment whose ``R_i`` is numerically singular (``λ_i = 0`` with rank
    deficient ``A_i``, or an empty one) gets ``R_i = I`` (no preconditioning).

    Args:
        seg: ``[N]`` segment ids, sorted ascending (CSR order).
        A: ``[N, d]`` design rows.
        lam: ``[n_seg]`` ridge weights ``≥ 0``.
        sketch_rows: ``s ≥ 1``, rows of each sketch.
        nnz: nonzeros per sketch column, ``1 ≤ nnz ≤ s``.
        generator: CPU generator of the buckets and signs (the factor is deterministic given it).
    """
    if sketch_rows < 1 or not 1 <= nnz <= sketch_rows:
        raise ValueError(f"need `sketch_rows` ≥ 1 and 1 ≤ `nnz` ≤ `sketch_rows`, got {sketch_rows} and {nnz}")
    n_seg, (N, d) = lam.shape[0], A.shape
    s = sketch_rows
    counts = torch.bincount(seg, minlength=n_seg)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(N, device=A.device) - start[seg]
    small = counts[seg] <= s
    sketched = torch.zeros(n_seg * s, d, dtype=A.dtype, device=A.device)
    buckets = torch.randint(0, s, (nnz, N), generator=generator).to(A.device)
    signs = (torch.randint(0, 2, (nnz, N), generator=generator).to(A.device, A.dtype) * 2 - 1) / nnz**0.5
    for t in range(nnz):
        if t == 0:
            bucket = torch.where(small, pos, buckets[0])
            weight = torch.where(small, torch.ones_like(signs[0]), signs[0])
        else:
            bucket, weight = buckets[t], torch.where(small, torch.zeros_like(signs[t]), signs[t])
        sketched.index_add_(0, seg * s + bucket, A * weight[:, None])
    eye = torch.eye(d, dtype=A.dtype, device=A.device)
    stacked = torch.cat([sketched.reshape(n_seg, s, d), lam.clamp(min=0).sqrt()[:, None, None] * eye], 1)
    R = torch.linalg.qr(stacked, mode="r").R
    diag = torch.diagonal(R, dim1=1, dim2=2).abs()
    scale = diag.amax(1, keepdim=True).clamp(min=torch.finfo(A.dtype).tiny)
    singular = (diag <= 1e3 * torch.finfo(A.dtype).eps * scale).any(1) | ~torch.isfinite(R).all(2).all(1)
    if bool(singular.any()):
        R[singular] = eye
    return R


def triangular_precond(R: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``r_i ↦ (R_iᵀ R_i)⁻¹ r_i`` for batched upper-triangular ``R [n_seg, d, d]`` (two triangular solves)."""

    def apply(r: torch.Tensor) -> torch.Tensor:
        y = torch.linalg.solve_triangular(R.transpose(1, 2), r[:, :, None], upper=False)
        return torch.linalg.solve_triangular(R, y, upper=True)[:, :, 0]

    return apply
