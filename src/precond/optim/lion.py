"""Lion: EvoLved Sign Momentum (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", arXiv 2302.06675).

One step (the paper's Algorithm 2, decoupled weight decay ``λ``)::

    u = sign(β1·m + (1 − β1)·g)
    p ← p·(1 − lr·λ) − lr·u
    m ← β2·m + (1 − β2)·g

Every coordinate moves by exactly ``lr`` (plus decay), so Lion wants a learning rate 3-10× smaller than AdamW's
and a weight decay 3-10× larger for the same effective ``lr·λ`` (paper §3.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from precond.optim._common import (
    PrecondOptimizer,
    cache_sized_batches,
    check_betas,
    check_lr,
    check_real,
    masked,
    state_dtype,
)

#: Elements per batch of the CPU step (1 MiB per float32 tensor list: three lists stay in a core's cache).
CPU_BATCH = 1 << 18


def lion_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    ok: torch.Tensor | None = None,
) -> None:
    """One Lion step over lists of tensors, in place on ``params`` and ``exp_avgs``.

    ``exp_avgs`` share one floating dtype (the state dtype, float32 for bf16/fp16 parameters); the gradient is
    cast to it, the update is computed in it and the parameter is rounded once.  Both interpolations are fused
    ``torch._foreach_lerp`` passes (``m + w·(g − m)``, the same math as ``β·m + (1 − β)·g`` with different
    rounding; pytorch_optimizer's Lion forms them the same way).  ``sign(0) = 0``: a coordinate
    whose interpolation ``β1·m + (1 − β1)·g`` is exactly zero (e.g. a parameter that has never had a non-zero
    gradient) is not moved, apart from weight decay.

    ``ok`` (0-d bool, from :func:`precond.optim._common.nonfinite_flag`) turns the call into a no-op when false,
    without a host sync: the gradient is replaced by ``-0.0`` (the one masked pass over the gradients), the
    momentum's interpolation weight and the step size become 0 and the weight decay 1.  Parameters and momenta
    are then bitwise unchanged (an exactly-zero entry may flip the sign of its zero).
    """
    if not params:
        return
    dtype = exp_avgs[0].dtype
    g = [x if x.dtype == dtype else x.to(dtype) for x in grads]
    if ok is not None:
        g = [torch.where(ok, x, -0.0) for x in g]  # the one masked pass; the rest is masked by its constants
    work = [p if p.dtype == dtype else p.to(dtype) for p in params]
    decay = masked(1.0 - lr * weight_decay, ok, 1.0, dtype) if weight_decay != 0 else None
    step = None if ok is None else torch.where(ok, torch.full((), -lr, dtype=dtype, device=ok.device), 0.0)
    weight = masked(1.0 - beta2, ok, 0.0, dtype)
    # On the CPU, every pass below runs batch by batch (each batch's tensors stay in cache across the passes);
    # an accelerator's fused multi-tensor kernels take the whole list at once.
    if work[0].device.type == "cpu":
        batches = cache_sized_batches([work, g, exp_avgs], CPU_BATCH)
    else:
        batches = [[work, g, exp_avgs]]
    for pb, gb, m in batches:
        # p ← p·(1 − lr·λ), in the state dtype
        if decay is not None:
            torch._foreach_mul_(pb, decay)
        # u = sign(β1·m + (1 − β1)·g) = sign(lerp(m, g, 1 − β1)): one fused pass and the sign
        u = torch._foreach_lerp(m, gb, 1.0 - beta1)
        torch._foreach_sign_(u)
        # p ← p − lr·u (u ∈ {−1, 0, 1}, so lr·u is exact), rounded once into the parameter
        if step is None:
            torch._foreach_add_(pb, u, alpha=-lr)
        else:
            torch._foreach_addcmul_(pb, u, [step] * len(u))
        # m ← β2·m + (1 − β2)·g = lerp(m, g, 1 − β2)
        if isinstance(weight, torch.Tensor):
            torch._foreach_lerp_(m, gb, [weight] * len(gb))
        else:
            torch._foreach_lerp_(m, gb, weight)
    for p, w in zip(params, work, strict=True):
        if w is not p:
            p.copy_(w)


class Lion(PrecondOptimizer):
    r"""Lion (Chen et al. 2023, arXiv 2302.06675): the sign of an interpolated momentum, applied with decoupled
    weight decay.

    Args:
        params: parameters or param groups (``lr``, ``betas`` and ``weight_decay`` may be set per group).
        lr: learning rate (default ``1e-4``, the paper's).  Every coordinate moves by ``lr`` per step, so use
            3-10× less than for AdamW.
        betas: ``(β1, β2)``: ``β1`` interpolates the update direction, ``β2`` is the momentum's EMA (default
            ``(0.9, 0.99)``, the paper's).
        weight_decay: decoupled weight decay ``λ`` (``p ← p·(1 − lr·λ)``, default ``0.0``, the paper's).  Use
            3-10× more than for AdamW to keep ``lr·λ``.
        nonfinite: ``"skip"`` (default) turns a step with a non-finite gradient into a bitwise no-op on
            parameters and momenta, without a host sync on accelerators (a finite CPU step reads its flag and
            runs unmasked), and counts it in ``state[p]["nonfinite_skips"]``.  The check is GradScaler's fused
            one (it rewrites each dense gradient entry with itself, bitwise unchanged); Lion squares nothing,
            so a finite gradient is never skipped for its size;
            ``"off"`` skips the check (torch.optim's behaviour, e.g. behind a ``GradScaler``, which skips such steps
            itself); ``"raise"`` raises ``ValueError`` before touching anything (one host sync per step).

    ``torch.sign(0) = 0``: a coordinate whose interpolation is exactly zero is not moved (the paper's
    ``sign``).  State per parameter: ``exp_avg`` (float32 for bf16/fp16 parameters, the parameter's dtype for
    float32/float64) and ``nonfinite_skips`` (0-d int64).  The update is computed in the state dtype and
    rounded into the parameter once; with bf16 parameters a step smaller than half a bf16 ulp of a weight is
    lost (no stochastic rounding), so bf16 training wants ``lr`` near the top of Lion's usual range.
    """

    optimizer_name = "Lion"
    _squares_gradients = False  # finiteness alone decides, in one fused pass (``nonfinite_flag``)

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        nonfinite: str = "skip",
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay), nonfinite)

    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        check_lr(group, where)
        check_betas(group, where)
        check_real(group, "weight_decay", where, low=0.0)

    def _init_state(self, p: torch.Tensor) -> dict[str, Any]:
        state = self.state[p]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p, dtype=state_dtype(p), memory_format=torch.preserve_format)
            state["nonfinite_skips"] = torch.zeros((), dtype=torch.int64, device=p.device)
        return state

    def _step_groups(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]], ok: torch.Tensor | None) -> None:
        for group, params in groups:
            if not params:
                continue
            lr = group["lr"]
            lr = float(lr) if isinstance(lr, torch.Tensor) else lr
            beta1, beta2 = group["betas"]
            by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}  # by parameter dtype: one state dtype each
            for p in params:
                by_dtype.setdefault(p.dtype, []).append(p)
            for same in by_dtype.values():
                states = [self.state[p] for p in same]
                if not all("exp_avg" in s for s in states):  # a first step, or a param added since: create it
                    states = [self._init_state(p) for p in same]
                lion_step_(
                    same,
                    [p.grad for p in same if p.grad is not None],  # all of them: ``_grads`` kept only those
                    [s["exp_avg"] for s in states],
                    lr=lr,
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=group["weight_decay"],
                    ok=ok,
                )
                self._count_skips([s["nonfinite_skips"] for s in states], ok)
