"""AdamP and SGDP: remove the radial component of the update of scale-invariant weights (Heo et al., ICLR 2021,
"AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights", arXiv 2006.08217)."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from precond.optim._adam import bias_correction
from precond.optim._common import (
    PrecondOptimizer,
    check_betas,
    check_bool,
    check_lr,
    check_real,
    masked,
    state_dtype,
)


def project_radial(
    param: torch.Tensor, grad: torch.Tensor, update: torch.Tensor, delta: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The official projection (clovaai/AdamP ``_projection``), sync-free: ``(update', scale_invariant)``.

    For the channel view (``W.view(out, -1)``) and then the layer view (``W.view(1, -1)``): if every row's
    ``|cos(g_row, W_row)| < δ / sqrt(row length)`` the weight is taken as scale-invariant and the radial part is
    removed, ``u ← u − Ŵ ⟨Ŵ, u⟩_row`` with ``Ŵ = W/(‖W_row‖ + eps)``; the first view that passes wins.  The
    tests are selected with ``torch.where`` instead of the official ``.max() <`` host syncs, so the result is the
    same and a non-projected update is returned bitwise.  ``param``, ``grad`` and ``update`` share a dtype;
    ``scale_invariant`` is a 0-d bool tensor.
    """
    out = update
    hit = torch.zeros((), dtype=torch.bool, device=param.device)
    for rows in (param.shape[0], 1):  # channel view, then layer view
        w = param.reshape(rows, -1)
        cosine = F.cosine_similarity(grad.reshape(rows, -1), w, dim=1, eps=eps).abs()
        passes = cosine.max() < delta / math.sqrt(w.shape[1])
        unit = w / (w.norm(dim=1, keepdim=True) + eps)
        u = update.reshape(rows, -1)
        projected = (u - unit * (unit * u).sum(dim=1, keepdim=True)).view(update.shape)
        take = passes & ~hit
        out = torch.where(take, projected, out)
        hit = hit | passes
    return out, hit


def _decayed(param: torch.Tensor, rate: float, wd_ratio: float, hit: torch.Tensor, keep: torch.Tensor | None) -> None:
    """``p ← p·(1 − rate·ratio)`` with ``ratio = wd_ratio`` on scale-invariant weights, ``1`` otherwise."""
    if rate == 0:
        return
    invariant = torch.full((), 1.0 - rate * wd_ratio, dtype=param.dtype, device=param.device)
    factor = torch.where(hit, invariant, 1.0 - rate)  # in the parameter's dtype (float64 keeps the full constant)
    param.mul_(masked(factor, keep, 1.0))


class _Projected(PrecondOptimizer):
    """Shared plumbing of AdamP and SGDP (state in the state dtype, the per-tensor loop of the projection)."""

    def _validate_projection(self, group: dict[str, Any], where: str) -> None:
        check_lr(group, where)
        check_real(group, "weight_decay", where, low=0.0)
        check_real(group, "eps", where, low=0.0, low_open=True)
        check_real(group, "delta", where, low=0.0)
        check_real(group, "wd_ratio", where, low=0.0)
        check_bool(group, "nesterov", where)

    def _step_groups(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]], ok: torch.Tensor | None) -> None:
        counters = []
        for group, params in groups:
            for p in params:
                state = self.state[p]
                if not state:
                    self._init_state(p, state)
                counters.append(state["nonfinite_skips"])
                assert p.grad is not None
                sdt = state_dtype(p)
                g = p.grad.to(sdt)
                if ok is not None:
                    g = torch.where(ok, g, 0.0)
                work = p if p.dtype == sdt else p.to(sdt)
                self._update(work, g, state, group, ok)
                if work is not p:
                    p.copy_(work)
        self._count_skips(counters, ok)

    @abstractmethod
    def _init_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        """Create ``p``'s state entries (AdamP: moments; SGDP: the momentum buffer)."""

    @abstractmethod
    def _update(
        self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any], group: dict[str, Any], ok: torch.Tensor | None
    ) -> None:
        """Apply one projected step to ``p`` (in the state dtype) from gradient ``g``, masked by ``ok``."""


class AdamP(_Projected):
    r"""AdamP (Heo et al. 2021, arXiv 2006.08217, Algorithm 2; the official clovaai/AdamP update).

    Adam, except that for a weight with ``ndim > 1`` whose gradient is (nearly) orthogonal to the weight in every
    output channel — or as a whole — the radial component of the step is removed and the weight decay is
    multiplied by ``wd_ratio`` (:func:`project_radial`).  Such weights are scale-invariant (followed by a
    normalization layer), and the radial part only grows their norm, shrinking the effective step.  Per step::

        m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
        u = m / (sqrt(v)/sqrt(1 − β2ᵗ) + eps)                 (nesterov: (β1 m + (1 − β1) g) / …)
        u, invariant = project_radial(W, g, u, delta, eps)   (ndim > 1 only)
        W ← W·(1 − lr·λ·(wd_ratio if invariant else 1)) − lr/(1 − β1ᵗ)·u

    On weights that are not scale-invariant it is exactly ``torch.optim.AdamW`` (bitwise for float32
    parameters: the moments, the denominator and the decay are computed in its order).  Differences from the
    official code: the scale-invariance test is selected on the device instead of ``.max()`` host syncs (same
    result); ``m`` is formed by ``lerp`` as torch's AdamW does (the official ``mul_/add_``, a rounding
    difference); ``pytorch_optimizer.AdamP`` puts ``eps`` on the raw ``sqrt(v)``.

    Args:
        params: parameters or param groups.
        lr: default ``1e-3``.  betas: default ``(0.9, 0.999)``.  eps: default ``1e-8``.
        weight_decay: decoupled (default ``0``; the official README shows ``1e-2``).
        delta: threshold ``δ`` of the cosine test (default ``0.1``).
        wd_ratio: weight-decay factor on scale-invariant weights (default ``0.1``).
        nesterov: default ``False``.
        nonfinite: ``"skip"`` (default): a step with a non-finite gradient is a bitwise no-op, without a host
            sync, counted in ``state[p]["nonfinite_skips"]``; ``"off"`` skips the check (torch.optim's behaviour, e.g.
            behind a ``GradScaler``, which skips such steps itself); ``"raise"``: ``ValueError`` before any change.

    State per parameter: ``step`` (float32), ``exp_avg``, ``exp_avg_sq`` (float32 for bf16/fp16 parameters),
    ``nonfinite_skips``.
    """

    optimizer_name = "AdamP"

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, delta=delta, wd_ratio=wd_ratio, nesterov=nesterov
        )
        super().__init__(params, defaults, nonfinite)

    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        self._validate_projection(group, where)
        check_betas(group, where)

    def _init_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros(p.shape, dtype=state_dtype(p), device=p.device)
        state["exp_avg_sq"] = torch.zeros(p.shape, dtype=state_dtype(p), device=p.device)
        state["nonfinite_skips"] = torch.zeros((), dtype=torch.int64, device=p.device)

    def _update(
        self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any], group: dict[str, Any], ok: torch.Tensor | None
    ) -> None:
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        m, v, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
        step.add_(1.0 if ok is None else ok.to(step.dtype))
        t = step.to(torch.float64)
        step_size_neg = masked((-lr / bias_correction(beta1, t)).to(p.dtype), ok, 0.0)
        bc2_sqrt = bias_correction(beta2, t).sqrt().to(p.dtype)
        m.lerp_(g, masked(1.0 - beta1, ok, 0.0, p.dtype))
        v.mul_(masked(beta2, ok, 1.0, p.dtype)).addcmul_(g, g, value=1.0 - beta2)
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        numer = m.mul(beta1).add_(g, alpha=1.0 - beta1) if group["nesterov"] else m
        # −step·u in torch AdamW's addcdiv_ order (bitwise for float32); the projection is linear in u
        update = (numer * step_size_neg) / denom
        if p.ndim > 1:
            update, hit = project_radial(p, g, update, group["delta"], eps)
        else:
            hit = torch.zeros((), dtype=torch.bool, device=p.device)
        _decayed(p, lr * group["weight_decay"], group["wd_ratio"], hit, ok)
        p.add_(update)


class SGDP(_Projected):
    r"""SGDP (Heo et al. 2021, arXiv 2006.08217; the official clovaai/AdamP ``SGDP``): momentum SGD with AdamP's
    projection of the (Nesterov) momentum on scale-invariant weights::

        b ← μ b + (1 − dampening) g;    d = g + μ b  (nesterov)  else  d = b
        d, invariant = project_radial(W, g, d, delta, eps)        (ndim > 1 only)
        W ← W·(1 − lr·λ·ratio/(1 − μ)) − lr·d,   ratio = wd_ratio if invariant else 1

    (the official decay divides by ``1 − μ``; with ``μ = 0`` and no scale-invariant weight it is plain SGD with
    decoupled decay).

    Args:
        params: parameters or param groups.
        lr: learning rate (default ``0.1``, the README's example; the official class requires it).
        momentum: ``μ`` in ``[0, 1)`` (default ``0.9``, the README's; the official default is ``0``).
        dampening: default ``0``.  nesterov: default ``True`` (the README's example).
        weight_decay: decoupled as above (default ``0``).  eps, delta, wd_ratio: as :class:`AdamP`.
        nonfinite: as :class:`AdamP`.

    State per parameter: ``momentum_buffer`` (float32 for bf16/fp16 parameters), ``nonfinite_skips``.
    """

    optimizer_name = "SGDP"

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        eps: float = 1e-8,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            eps=eps,
            delta=delta,
            wd_ratio=wd_ratio,
        )
        super().__init__(params, defaults, nonfinite)

    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        self._validate_projection(group, where)
        check_real(group, "momentum", where, low=0.0, high=1.0, high_open=True)
        check_real(group, "dampening", where, low=0.0, high=1.0)

    def _init_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        state["momentum_buffer"] = torch.zeros(p.shape, dtype=state_dtype(p), device=p.device)
        state["nonfinite_skips"] = torch.zeros((), dtype=torch.int64, device=p.device)

    def _update(
        self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any], group: dict[str, Any], ok: torch.Tensor | None
    ) -> None:
        mu, lr = group["momentum"], group["lr"]
        buf = state["momentum_buffer"]
        buf.mul_(masked(mu, ok, 1.0, p.dtype)).add_(g, alpha=1.0 - group["dampening"])
        d = g + mu * buf if group["nesterov"] else buf
        rate = lr * group["weight_decay"] / (1.0 - mu)
        if p.ndim > 1:
            d, hit = project_radial(p, g, d, group["delta"], group["eps"])
        else:
            hit = torch.zeros((), dtype=torch.bool, device=p.device)
        _decayed(p, rate, group["wd_ratio"], hit, ok)
        p.add_(d * masked(-lr, ok, 0.0, p.dtype))
