"""Shampoo: Kronecker-factored preconditioning with inverse matrix roots (Gupta et al. 2018, arXiv 1802.09568)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, ClassVar, cast

import torch

from precond.optim._buckets import Bucket
from precond.optim._common import check_choice, check_int, check_lr, check_real
from precond.optim._factored import FactoredOptimizer, apply_update, check_layout, grad_blocks
from precond.optim._shampoo_math import GRAFTINGS, shampoo_block_step_


class Shampoo(FactoredOptimizer):
    r"""Shampoo with grafting, on the same factor machinery as :class:`precond.optim.SOAP`.

    For a matrix block ``G`` the step is ``−lr · graft(L^{-1/4} M̂ R^{-1/4})`` with Kronecker factors
    ``L = EMA(G Gᵀ)``, ``R = EMA(Gᵀ G)``, the filtered (momentum) gradient ``M̂`` and the block rescaled to the
    norm of the grafted method's step (Distributed Shampoo, Shi et al. 2023, arXiv 2309.06497, §3.1).  Tensors
    with ``k`` factored dims use the per-side exponent ``1/(2k)`` (Shampoo's Alg. 2); the inverse roots are
    recomputed every ``precondition_frequency`` steps with a robust batched ``eigh``.  Steps before
    ``start_preconditioning_step`` *are* the grafted method (Adam grafting: AdamW exactly).

    Args:
        params: parameters or param groups; every argument below except ``data_format`` and ``nonfinite``
            may be overridden per group.
        lr: learning rate (default ``3e-3``; with Adam grafting the step has Adam's size, so AdamW's learning
            rates are the right range).
        betas: ``(β1, β2)``: momentum of the filtered gradient and EMA of the factors (default ``(0.95, 0.95)``).
            ``β2 = 1`` accumulates the factors as running sums (the original AdaGrad-style Shampoo).
        eps: damping of the factors *relative to their largest eigenvalue*: roots of ``F + eps·λ_max(F)·I``
            (default ``1e-6``).  Relative damping does not need retuning when the loss scale changes.
        weight_decay: decoupled weight decay, applied like ``torch.optim.AdamW`` (default ``0.01``).
        precondition_frequency: steps between root recomputations (default ``10``).
        start_preconditioning_step: first step (1-based) that uses the roots; before it the step is the
            grafted method's (default ``None`` = ``precondition_frequency``, as in Distributed Shampoo).
        inverse_exponent: per-side exponent ``e`` of ``F^{-e}`` (default ``None`` = ``1/(2k)`` for a block with
            ``k`` factored dims, i.e. ``L^{-1/4} G R^{-1/4}`` for a matrix).  ``0.5`` is the power-1/2 variant
            that Vyas et al. (SOAP, arXiv 2409.11321, §3) relate to Adafactor run in Shampoo's eigenbasis.
        grafting: ``"adam"`` (default), ``"adagrad"``, ``"sgd"`` (the step norm of momentum SGD) or ``"none"``
            (the raw preconditioned step; before ``start_preconditioning_step`` momentum SGD).
        grafting_beta2: Adam grafting's second-moment EMA (default ``0.95``).
        grafting_eps: epsilon of Adam/AdaGrad grafting (default ``1e-8``).
        max_precond_dim, merge_dims, blocking, precondition_1d, data_format: the layout, as for
            :class:`precond.optim.SOAP` (dims above ``max_precond_dim`` are cut into balanced blocks; conv
            kernels are ``[out, in·kh·kw]``; 0-d/1-d parameters get the grafted method).
        nonfinite: ``"skip"`` (default) makes a step with a non-finite gradient a bitwise no-op on parameters
            and state, counted in ``state[p]["nonfinite_skips"]`` (sync-free, except on root-recomputation
            steps, which check on the host and leave the schedule where it was); ``"off"`` skips the check
            (torch.optim's behaviour, e.g. behind a ``GradScaler``, which skips such steps itself); ``"raise"`` raises
            ``ValueError`` before touching anything.

    Failure handling: a root whose ``eigh`` fails (after a float64 retry) or comes out non-finite keeps the
    previous root, counted per block and factor in ``state[p]["root_fallbacks"]``.  ``torch.compile(opt.step)``
    raises an error saying to call ``step`` uncompiled (root steps pick the schedule on the host).

    State per parameter (views into batched buffers; lists run over blocks): ``step``, ``calls``,
    ``exp_avg`` (filtered gradient), ``graft_sq`` (Adam/AdaGrad grafting only), ``GG`` (factors) and
    ``root`` (inverse roots; ``None`` = identity) per dim, ``root_fallbacks``, ``nonfinite_skips``.
    """

    optimizer_name = "Shampoo"
    matrix_kinds: ClassVar[dict[str, str]] = {"GG": "zeros", "root": "eye"}
    counter_dtypes: ClassVar[dict[str, torch.dtype]] = {
        "step": torch.float32,
        "root_fallbacks": torch.int64,
        "nonfinite_skips": torch.int64,
    }

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        start_preconditioning_step: int | None = None,
        inverse_exponent: float | None = None,
        grafting: str = "adam",
        grafting_beta2: float = 0.95,
        grafting_eps: float = 1e-8,
        max_precond_dim: int = 1024,
        merge_dims: bool | str = "fan_in",
        blocking: bool = True,
        precondition_1d: bool = False,
        data_format: str = "channels_first",
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            precondition_frequency=precondition_frequency,
            start_preconditioning_step=start_preconditioning_step,
            inverse_exponent=inverse_exponent,
            grafting=grafting,
            grafting_beta2=grafting_beta2,
            grafting_eps=grafting_eps,
            max_precond_dim=max_precond_dim,
            merge_dims=merge_dims,
            blocking=blocking,
            precondition_1d=precondition_1d,
        )
        super().__init__(params, defaults, data_format=data_format, nonfinite=nonfinite)

    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        check_lr(group, where)
        betas = group["betas"]
        if not (
            isinstance(betas, (tuple, list))
            and len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)
            and 0.0 <= betas[0] < 1.0
            and 0.0 <= betas[1] <= 1.0
        ):
            raise ValueError(f"{where}: invalid betas={betas!r}: must be (β1 in [0, 1), β2 in [0, 1])")
        check_real(group, "eps", where, low=0.0)
        check_real(group, "weight_decay", where, low=0.0)
        check_int(group, "precondition_frequency", where, low=1)
        if group["start_preconditioning_step"] is not None:
            check_int(group, "start_preconditioning_step", where, low=1)
        if group["inverse_exponent"] is not None:
            check_real(group, "inverse_exponent", where, low=0.0, low_open=True)
        check_choice(group, "grafting", where, GRAFTINGS)
        check_real(group, "grafting_beta2", where, low=0.0, high=1.0, high_open=True)
        check_real(group, "grafting_eps", where, low=0.0, low_open=True)
        check_layout(group, where)

    def _moment_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "graft_sq") if group["grafting"] in ("adam", "adagrad") else ("exp_avg",)

    def _layout_key(self, group: dict[str, Any]) -> tuple:
        # grafting decides which state exists, so it is fixed after the first step like the layout
        return (*super()._layout_key(group), group["grafting"] in ("adam", "adagrad"))

    def _phase(self, p: torch.Tensor, group: dict[str, Any]) -> tuple[bool, bool]:
        """(refresh, precondition) for ``p``'s next step."""
        t = self.state[p]["calls"] + 1
        start = group["start_preconditioning_step"] or group["precondition_frequency"]
        precondition = t >= start
        return precondition and (t - start) % group["precondition_frequency"] == 0, precondition

    def _needs_host_check(self, phase: Hashable) -> bool:
        return cast(tuple[bool, bool], phase)[0]

    def _step_bucket(
        self, bucket: Bucket, group: dict[str, Any], ok: torch.Tensor | None, phases: dict[torch.Tensor, Hashable]
    ) -> None:
        beta1, beta2 = group["betas"]
        exponent = group["inverse_exponent"]
        if exponent is None:
            exponent = 1.0 / (2 * max(1, sum(bucket.factored)))
        for sl, key in bucket.runs(lambda m: phases.get(m.param)):
            refresh, precondition = cast(tuple[bool, bool], key)
            members = bucket.members[sl]
            moments, counters, matrices = bucket.sliced(sl)
            delta = shampoo_block_step_(
                grad_blocks(members),
                moments["exp_avg"],
                moments.get("graft_sq"),
                counters["step"],
                matrices["GG"],
                matrices["root"],
                counters["root_fallbacks"],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                exponent=exponent,
                grafting=group["grafting"],
                grafting_beta2=group["grafting_beta2"],
                grafting_eps=group["grafting_eps"],
                precondition=precondition,
                refresh=refresh,
                ok=ok,
            )
            if ok is not None:
                counters["nonfinite_skips"].add_(~ok)
            apply_update(members, delta)
