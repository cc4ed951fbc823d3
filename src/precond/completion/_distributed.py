"""``distributed_complete``: the row-partitioned ALS of :func:`~precond.completion.complete` on ``torch.distributed``.

Layout (Zhou et al. 2008, "Large-scale parallel collaborative filtering for the Netflix Prize", §3: each worker
owns a slice of ``U`` and of ``V`` and the ratings that touch them).  With ``W`` workers, rank ``p`` owns the
contiguous rows ``[a_p, a_{p+1})`` of ``U`` and columns ``[c_p, c_{p+1})`` of ``V`` (``row_bounds``,
``col_bounds``; by default cut so that each rank holds about ``|Ω|/W`` observations of each side).  Each rank holds
two copies of the observations it needs: those of its rows (for the ``U`` half-step) and those of its columns (for
the ``V`` half-step).  The input observations may be spread over the ranks in any way; they are routed to their two
owners once, by ``all_to_all_single`` (uneven splits work on gloo).

One iteration = ``U`` half-step on the local rows (the exact batched-Cholesky solver of :mod:`._solve`, or the CG
solvers), one ``all_gather`` of the new ``U`` slices (with the row biases as an extra column), the same for ``V``,
and one ``all_gather`` of ``W`` scalars (partial residual sums, CG counters).  gloo refuses list ``all_gather`` of
uneven tensors, so each slice is zero-padded to the largest slice and gathered by ``all_gather_into_tensor`` into a
``[W · S, d]`` buffer.  The objective is then the same number on every rank (partial sums added in rank order,
penalties from the replicated factors), so every rank takes the same stopping decision: no rank ever skips a
collective.

Initialization: the observations are sent to rank 0, which runs exactly the single-process start (bias-only
ridge model and randomized SVD, :mod:`._biases`, :mod:`._init`) and broadcasts ``μ``, the biases and ``V₀``.
Broadcasting, rather than recomputing on every rank, keeps the replicas bitwise equal (batched QR on CPU can
depend on the thread count).  Rank 0 then needs the single-process memory of the start, ``O(|Ω| (k + 10))``; the
iterations do not.  With ``solver="exact"`` or ``"cg"`` the factors equal those of ``complete`` up to rounding (the
per-row solves are the same; only summation orders differ).  With ``"auto"`` a row's solver follows its bucket
(width, conditioning) and its half-step's share of CG observations, and a rank's buckets are not the single
process's, so a row may be solved exactly on one and by CG on the other (equal to the CG tolerance).  With
``"sketch_cg"`` each rank draws its own sketches (stream seeded by ``seed + rank``), so the result is as good but
not equal.

Scaling, Netflix (m = 480,189 users, n = 17,770 movies, |Ω| = 1.0e8), k = 64, float64 (8 B), int64 indices, rows
and columns cut into equal-observation slices, per worker per iteration (W = 8 | W = 64):

* Communication.  The ring all-gather of ``U`` receives (W−1)/W of the padded ``m k`` numbers:
  ``m k · 8 B = 480,189 · 64 · 8 = 245.9 MB``, so ``7/8 · 245.9 = 215.1 MB`` | ``63/64 · 245.9 = 242.0 MB``;
  ``V``: ``n k · 8 B = 17,770 · 64 · 8 = 9.10 MB``, so ``7.96 MB`` | ``8.96 MB``; the scalars ``W · 5 · 8 B``.
  Total ≈ **223 MB** | **251 MB** per iteration (sent and received), about ``(m + n) k · 8 B = 255 MB`` whatever
  ``W``: the exchanged volume does not shrink with more workers (half of it in float32; +1/64 with biases;
  padding adds at most one row per rank with the default row cut since Netflix rows are short).
* Compute per worker shrinks as 1/W: the exact half-steps form ``|Ω|/W`` outer products of ``k²``
  (``2 · 1.25e7 · 4096 ≈ 1.0e11`` flop | ``1.3e10``) plus ``(m + n)/W`` Cholesky solves of ``k³/3``
  (``6.2e4 · 8.7e4 ≈ 5.4e9`` | ``6.8e8``); so from about W = 64 on, communication rather than compute bounds an
  iteration on commodity networks.
* Memory.  Observations, both copies: per observation and copy 24 B for (row, col, value) plus 24 B for the sorted
  index (:class:`~._solve.RowIndex`: order, index, other), ``2 · 48 B · |Ω|/W`` = ``96 B · 1.25e7 = 1.20 GB`` |
  ``96 B · 1.5625e6 = 150 MB``.  Replicated factors (the design of the other side must be complete):
  ``(m + n) k · 8 B = 255 MB``, plus a transient copy of ``U`` with a zero row appended (the padding row of the
  exact solver's gathers, 246 MB), the right-hand sides of the local rows (``m k · 8 B / W`` = 30.7 MB | 3.8 MB)
  and the solver's blocks (≤ ``2¹⁸`` numbers of gathered design and ``2¹⁷`` of Gram matrices, 3 MB; the CG
  solvers gather no design).  Total ≈ **1.7 GB** | **0.66 GB**; from W ≈ 16 on the replicated factors, not the
  observations, dominate, and their 255 MB is what a worker needs at any ``W``.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from precond.completion._biases import fit_biases
from precond.completion._complete import SOLVERS, Progress, _HalfStep, cg_tolerance, rounding_floor
from precond.completion._init import spectral_init
from precond.completion._result import CompletionResult, HistoryEntry, SolveEntry
from precond.completion._solve import RowIndex
from precond.completion._validate import (
    DUPLICATES,
    REG_SCALINGS,
    check_choice,
    check_int,
    check_observations,
    check_real,
    check_shape,
)

T = TypeVar("T")


@dataclass(frozen=True)
class LocalFactors:
    """What one rank owns after :func:`distributed_complete` with ``gather=False``.

    Attributes:
        row_range, col_range: ``(start, stop)`` of the rows of ``U`` and columns of ``V`` this rank owns.
        U, V: ``U[start:stop]`` ``[rows, k]`` and ``V[start:stop]`` ``[cols, k]``.
        row_bias, col_bias: the matching bias slices with ``biases=True``, else ``None``.
        mean, history, iterations, converged, objective, solves: as in :class:`CompletionResult` (the same on every
            rank).
    """

    row_range: tuple[int, int]
    col_range: tuple[int, int]
    U: torch.Tensor
    V: torch.Tensor
    row_bias: torch.Tensor | None
    col_bias: torch.Tensor | None
    mean: float | None
    history: list[HistoryEntry] = field(repr=False)
    iterations: int
    converged: bool
    objective: float
    solves: list[SolveEntry] = field(default_factory=list, repr=False)


def _agree(group: Any, fn: Callable[[], T]) -> T:
    """Run the local check ``fn`` on every rank; if any rank refuses its input, every rank raises (no hang)."""
    error: Exception | None = None
    out: Any = None
    try:
        out = fn()
    except (ValueError, TypeError) as err:
        error = err
    flags = torch.tensor([0 if error is None else 1], dtype=torch.int64)
    dist.all_reduce(flags, group=group)
    if error is not None:
        raise error
    if int(flags) > 0:
        raise ValueError(f"distributed_complete: {int(flags)} other rank(s) refused their input (see their error)")
    return out


def _bounds(value: Any, name: str, size: int, world: int, counts: torch.Tensor) -> list[int]:
    """``world + 1`` slice boundaries ``0 = a_0 ≤ … ≤ a_W = size``; by default equal observation counts."""
    if value is None:
        cum = torch.cumsum(counts, 0)
        total = int(cum[-1])
        targets = torch.tensor([(p * total) // world for p in range(1, world)], dtype=cum.dtype)
        inner = (torch.searchsorted(cum, targets, right=False) + 1).clamp(max=size).tolist()
        return [0, *inner, size]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"`{name}` must be a sequence of {world + 1} integers (slice boundaries), got {value!r}")
    out = [check_int(x, f"{name}[{i}]", 0) for i, x in enumerate(value)]
    if len(out) != world + 1 or out[0] != 0 or out[-1] != size or any(a > b for a, b in itertools.pairwise(out)):
        raise ValueError(
            f"`{name}` must be {world + 1} non-decreasing boundaries from 0 to {size} (one slice per rank), got {out}"
        )
    return out


def _route(dest: torch.Tensor, tensors: Sequence[torch.Tensor], world: int, group: Any) -> list[torch.Tensor]:
    """Send entry ``t`` of every tensor to rank ``dest[t]`` (one ``all_to_all_single`` per tensor)."""
    order = torch.argsort(dest, stable=True)
    send = torch.bincount(dest, minlength=world)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    ins, outs = send.tolist(), recv.tolist()
    result = []
    for t in tensors:
        got = t.new_empty(sum(outs))
        dist.all_to_all_single(got, t[order].contiguous(), outs, ins, group=group)
        result.append(got)
    return result


class _Gather:
    """All-gather of uneven row slices ``[a_p, a_{p+1})`` by padding each to the largest slice."""

    def __init__(self, bounds: list[int], rank: int, group: Any) -> None:
        self.sizes = [b - a for a, b in itertools.pairwise(bounds)]
        self.pad = max(self.sizes)
        self.own = self.sizes[rank]
        self.group = group
        keep = [torch.arange(p * self.pad, p * self.pad + s) for p, s in enumerate(self.sizes)]
        self.keep = torch.cat(keep)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        buf = x.new_zeros(self.pad, x.shape[1])
        buf[: self.own] = x
        out = x.new_empty(len(self.sizes) * self.pad, x.shape[1])
        with warnings.catch_warnings():  # torch 2.13 suggests all_gather_single, absent from older torch
            warnings.simplefilter("ignore", FutureWarning)
            dist.all_gather_into_tensor(out, buf, group=self.group)
        return out[self.keep.to(x.device)]


def distributed_complete(
    rows: Any,
    cols: Any,
    values: Any,
    shape: tuple[int, int],
    rank: int,
    *,
    reg: float = 0.1,
    solver: str = "auto",
    max_iter: int = 50,
    tol: float = 1e-6,
    biases: bool = False,
    seed: int = 0,
    reg_scaling: str = "none",
    duplicates: str = "error",
    dtype: torch.dtype | None = None,
    row_bounds: Sequence[int] | None = None,
    col_bounds: Sequence[int] | None = None,
    gather: bool = True,
    group: Any = None,
) -> CompletionResult | LocalFactors:
    """:func:`~precond.completion.complete` on every rank of a ``torch.distributed`` group, rows partitioned.

    Call it on every rank with that rank's share of the observations (any share: the union over the ranks is
    ``Ω``; a rank may pass none) and the same other arguments; layout, collectives and the scaling analysis in
    :mod:`precond.completion._distributed`.  The process group must be initialized (gloo on CPU).

    Args:
        rows, cols, values, shape, rank, reg, solver, max_iter, tol, biases, seed, reg_scaling, duplicates, dtype:
            as in :func:`~precond.completion.complete` (``validation`` is not offered).  Duplicates are found across
            ranks.  ``dtype`` defaults to float32 only if every rank's ``values`` are float32.
        row_bounds, col_bounds: ``W + 1`` boundaries of the contiguous row (column) slices owned by ranks
            ``0 … W−1``; default: slices with about equal observation counts.
        gather: ``True`` (default): every rank returns the full :class:`CompletionResult`; ``False``: a
            :class:`LocalFactors` with this rank's slices only.
        group: the process group (default: the world).

    Raises:
        RuntimeError: ``torch.distributed`` is not initialized.
        ValueError / TypeError: as in ``complete``, raised on every rank when any rank's input is bad; also when the
            ranks disagree on the arguments or the bounds are not valid.
    """
    start = time.perf_counter()
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("distributed_complete needs torch.distributed: call torch.distributed.init_process_group")
    world, me = dist.get_world_size(group), dist.get_rank(group)
    src = dist.get_global_rank(group, 0) if group is not None else 0

    def scalars() -> tuple[Any, ...]:
        m, n = check_shape(shape)
        k = check_int(rank, "rank", 1)
        if k > min(m, n):
            raise ValueError(f"`rank` must be ≤ min(shape) = {min(m, n)}, got {k}")
        if not isinstance(solver, str) or solver not in SOLVERS:
            raise ValueError(f"`solver` must be one of {', '.join(map(repr, SOLVERS))}, got {solver!r}")
        if not isinstance(biases, bool) or not isinstance(gather, bool):
            raise TypeError(f"`biases` and `gather` must be True or False, got {biases!r} and {gather!r}")
        check_choice(reg_scaling, "reg_scaling", REG_SCALINGS)
        check_choice(duplicates, "duplicates", DUPLICATES)
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}")
        return (
            (m, n),
            k,
            check_real(reg, "reg", minimum=0.0),
            check_real(tol, "tol", minimum=0.0),
            check_int(max_iter, "max_iter", 1),
            check_int(seed, "seed", 0),
            solver,
            biases,
            reg_scaling,
            duplicates,
            str(dtype),
            gather,
            None if row_bounds is None else list(row_bounds),
            None if col_bounds is None else list(col_bounds),
        )

    args = _agree(group, scalars)
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, args, group=group)
    if any(other != args for other in everyone):
        raise ValueError("distributed_complete must be called with the same arguments (except the data) on every rank")
    (m, n), k, reg_f, tol_f, iters, seed_i = args[:6]

    def local() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = torch.as_tensor(values) if not isinstance(values, torch.Tensor) else values
        if v.ndim == 1 and v.numel() == 0:  # this rank holds no observations
            empty = torch.empty(0, dtype=torch.int64)
            dt0 = dtype or (torch.float32 if v.dtype == torch.float32 else torch.float64)
            return empty, empty, torch.empty(0, dtype=dt0)
        return check_observations(rows, cols, values, (m, n), dtype, "keep")

    r, c, v = _agree(group, local)
    if r.numel() and v.device.type != "cpu":
        raise ValueError(f"`values` must be on the CPU for distributed_complete (gloo), got {v.device}")
    single = torch.tensor([1 if v.dtype == torch.float32 else 0], dtype=torch.int64)
    dist.all_reduce(single, op=dist.ReduceOp.MIN, group=group)
    dt = dtype or (torch.float32 if int(single) else torch.float64)
    v = v.to(dt)

    # Route to the row owners, drop/refuse duplicates there (all copies of a pair meet at its row's owner).
    counts_r = torch.bincount(r, minlength=m)
    dist.all_reduce(counts_r, group=group)
    rb = _agree(group, lambda: _bounds(row_bounds, "row_bounds", m, world, counts_r))
    r, c, v = _route(torch.searchsorted(torch.tensor(rb[1:]), r, right=True), (r, c, v), world, group)
    total = torch.tensor([r.numel()], dtype=torch.int64)
    dist.all_reduce(total, group=group)
    if int(total) == 0:
        raise ValueError("`values` is empty on every rank: at least one observation is needed")
    if r.numel():
        r, c, v = _agree(group, lambda: check_observations(r, c, v, (m, n), dt, duplicates))
    else:
        _agree(group, lambda: None)
    counts_r = torch.bincount(r, minlength=m)
    counts_c = torch.bincount(c, minlength=n)
    dist.all_reduce(counts_r, group=group)
    dist.all_reduce(counts_c, group=group)
    cbnd = _agree(group, lambda: _bounds(col_bounds, "col_bounds", n, world, counts_c))
    rc, cc, vc = _route(torch.searchsorted(torch.tensor(cbnd[1:]), c, right=True), (r, c, v), world, group)

    if reg_scaling == "count":
        lam_u, lam_v = reg_f * counts_r.to(dt), reg_f * counts_c.to(dt)
    else:
        lam_u, lam_v = torch.full((m,), reg_f, dtype=dt), torch.full((n,), reg_f, dtype=dt)

    # Start: the single-process one, on rank 0, broadcast.
    r0, c0, v0 = _route(torch.zeros_like(r), (r, c, v), world, group)
    start_vec = torch.zeros(m + n + n * k, dtype=dt)
    scal = torch.zeros(2, dtype=torch.float64)
    if me == 0:
        mean0 = float(v0.double().mean()) if biases else 0.0
        cent0 = v0 - mean0
        if biases:
            b0, cb0 = fit_biases(r0, c0, cent0, (counts_r, counts_c), (lam_u, lam_v))
        else:
            b0, cb0 = torch.zeros(m, dtype=dt), torch.zeros(n, dtype=dt)
        V0 = spectral_init(r0, c0, cent0 - b0[r0] - cb0[c0], (m, n), k, torch.Generator().manual_seed(seed_i))
        start_vec = torch.cat([b0, cb0, V0.reshape(-1)])
        floor0 = rounding_floor(cent0, dt)
        scal = torch.tensor([mean0, floor0], dtype=torch.float64)
    del r0, c0, v0
    dist.broadcast(start_vec, src, group=group)
    dist.broadcast(scal, src, group=group)
    mean, floor = float(scal[0]), float(scal[1])
    b, cb, V = start_vec[:m], start_vec[m : m + n], start_vec[m + n :].reshape(n, k)
    U = torch.zeros(m, k, dtype=dt)

    ra, rz, ca, cz = rb[me], rb[me + 1], cbnd[me], cbnd[me + 1]
    cent_r, cent_c = v - mean, vc - mean
    d = k + 1 if biases else k
    sketch_gen = torch.Generator().manual_seed(seed_i + me)
    row_step = _HalfStep(solver, RowIndex(r - ra, c, rz - ra), lam_u[ra:rz], d, sketch_gen)
    col_step = _HalfStep(solver, RowIndex(cc - ca, rc, cz - ca), lam_v[ca:cz], d, sketch_gen)
    gather_u, gather_v = _Gather(rb, me, group), _Gather(cbnd, me, group)
    stats = _Gather(list(range(world + 1)), me, group)
    ones_m, ones_n = torch.ones(m, 1, dtype=dt), torch.ones(n, 1, dtype=dt)

    progress = Progress(floor, tol_f, dt, start)
    for iterations in range(1, iters + 1):
        cg_tol = 0.0 if solver == "exact" else cg_tolerance(iterations, dt)
        if biases:
            x0 = torch.cat([U, b[:, None]], 1)[ra:rz]
            x, s_row = row_step(torch.cat([V, ones_n], 1), cent_r - cb[c], x0, cg_tol, sse=False)
            full = gather_u(x)
            U, b = full[:, :k], full[:, k]
            x0 = torch.cat([V, cb[:, None]], 1)[ca:cz]
            y, s_col = col_step(torch.cat([U, ones_m], 1), cent_c - b[rc], x0, cg_tol, sse=False)
            full = gather_v(y)
            V, cb = full[:, :k], full[:, k]
        else:
            x, s_row = row_step(V, cent_r, U[ra:rz], cg_tol, sse=False)
            U = gather_u(x)
            y, s_col = col_step(U, cent_c, V[ca:cz], cg_tol, sse=False)
            V = gather_v(y)
        resid = (cent_r - (U[r] * V[c]).sum(1) - b[r] - cb[c]).double()
        mine = [float(resid.square().sum()), s_row.iterations, s_col.iterations]
        mine += [s_row.unconverged + s_col.unconverged, s_row.exact_rows + s_col.exact_rows]
        parts = stats(torch.tensor([mine], dtype=torch.float64))
        sse = float(sum(float(x) for x in parts[:, 0]))
        its = int(parts[:, 1:3].max())
        progress.solves.append(SolveEntry(iterations, cg_tol, its, int(parts[:, 3].sum()), int(parts[:, 4].sum())))
        if progress.record(iterations, sse, int(total), (U, V, b, cb), (lam_u, lam_v), solver, cg_tol):
            break

    if not gather:
        return LocalFactors(
            row_range=(ra, rz),
            col_range=(ca, cz),
            U=U[ra:rz].clone(),
            V=V[ca:cz].clone(),
            row_bias=b[ra:rz].clone() if biases else None,
            col_bias=cb[ca:cz].clone() if biases else None,
            mean=mean if biases else None,
            history=progress.history,
            iterations=progress.iterations,
            converged=progress.converged,
            objective=progress.objective,
            solves=progress.solves,
        )
    return progress.result(
        (U, V, b, cb), mean, biases=biases, solver=solver, shape=(m, n), reg=reg_f, reg_scaling=reg_scaling
    )
