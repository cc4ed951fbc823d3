"""Muon: momentum orthogonalized by Newton–Schulz for matrices, AdamW for the rest (Jordan et al. 2024)."""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from precond.linalg import MUON_COEFFICIENTS, newton_schulz
from precond.optim._adam import adam_denominators, adam_moments_, bias_correction
from precond.optim._common import (
    PrecondOptimizer,
    check_betas,
    check_bool,
    check_choice,
    check_momentum_like,
    check_ns,
    check_real,
    masked,
    state_dtype,
)

SCALES = ("shape", "match_adamw", "none")

#: ``adam_lr_ratio=None`` (the default) per ``scale``.  ``"match_adamw"``: ``1`` — Moonshot's recipe (arXiv
#: 2502.16982): Muon's updates have AdamW's RMS, so one lr serves both parts.  ``"shape"``/``"none"``: ``0.2``.
#: AdamW's update RMS is 0.2-0.4·lr (Moonshot's 0.2 factor) and a shape-scaled Muon update of a fan-in ``n``
#: matrix (singular values ≈ 1) has RMS ``lr/sqrt(n)``, so the RMS-matched ratio is ``5/sqrt(n)``; 0.2 is that at
#: ``n ≈ 600`` (GPT-2 small's 768: 0.18, a 128-wide model: 0.44).  The previous fixed default, KellerJordan/Muon's
#: aux Adam (3e-4 at lr 0.02, ratio 0.015), moved embeddings and heads >= 10× slower than the matrices.
AUTO_ADAM_LR_RATIO = {"shape": 0.2, "none": 0.2, "match_adamw": 1.0}

#: Class names of modules whose weight is stored ``[in, out]`` (``y = x @ W + b``), transposed from
#: ``nn.Linear``: Hugging Face ``transformers``' ``Conv1D`` (GPT-2, OpenAI GPT).  Their weights get
#: ``transposed=True`` groups from :func:`param_groups_of` (and ``Muon(model)``), so ``scale="shape"`` sees
#: ``[out, in]``.
TRANSPOSED_MODULES = ("Conv1D",)

#: Names routed to AdamW by the automatic rule (matched against the dotted parameter name): a component that
#: contains ``embed`` (``embed``, ``embedding``, ``embed_tokens``, ``tok_embeddings``, ``pos_embed``, ...) or is
#: ``wte``/``wpe``, anywhere in the path; or an *owning module* (the component before the final attribute,
#: skipping numeric ``Sequential`` indices) named ``lm_head``, ``head``, ``output`` or ``classifier``.  The
#: head words only count as the owning module so that hidden layers that merely live under such a name —
#: Hugging Face BERT's ``layer.0.attention.output.dense.weight`` — still get Muon.
AUTO_ADAMW_NAME = re.compile(
    r"(?:^|\.)(?:\w*embed\w*|wte|wpe)(?:\.|$)"
    r"|(?:^|\.)(?:lm_head|head|output|classifier)(?:\.\d+)*\.[^.]+$"
)


@functools.lru_cache(maxsize=4096)
def _looks_like_embedding_or_head(name: str) -> bool:
    return AUTO_ADAMW_NAME.search(name) is not None


def uses_muon(param: torch.Tensor, name: str | None = None, use_muon: bool | None = None) -> bool:
    """The routing rule of :class:`Muon`: explicit ``use_muon`` wins, else ``ndim >= 2`` and not an
    embedding/head by name (:data:`AUTO_ADAMW_NAME`)."""
    if use_muon is not None:
        return use_muon
    return param.ndim >= 2 and (name is None or not _looks_like_embedding_or_head(name))


def route_by_name(group: dict[str, Any], params: list[torch.Tensor], flag: bool | None) -> list[bool]:
    """:func:`uses_muon` for each of ``params`` of ``group``, with their names where the group has
    ``param_names`` and the group's explicit routing ``flag``."""
    names = group.get("param_names")
    name_of = {} if names is None else {id(p): n for p, n in zip(group["params"], names, strict=False)}
    return [uses_muon(p, name_of.get(id(p)), flag) for p in params]


def split_names(param_group: dict[str, Any], where: str) -> dict[str, Any]:
    """``param_group`` with its ``params`` as a list and, where they are given as ``(name, tensor)`` pairs, the
    names moved to ``param_names`` (``ValueError`` naming ``where`` on a mix of pairs and tensors)."""
    params = param_group["params"]
    params = [params] if isinstance(params, torch.Tensor) else list(params)  # may be a generator
    if any(isinstance(p, tuple) for p in params):
        if not all(isinstance(p, tuple) and len(p) == 2 for p in params):
            raise ValueError(f"{where}: give either all params as (name, tensor) pairs or none")
        return {**param_group, "param_names": [n for n, _ in params], "params": [t for _, t in params]}
    return {**param_group, "params": params}


def check_matrices(group: dict[str, Any], where: str, key: str, update: str) -> None:
    """With ``group[key] is True`` (every param routed to the matrix update named ``update``), refuse 0-d/1-d
    params (``ValueError`` naming ``key``)."""
    if group.get(key) is True:
        for p in group.get("params", ()):
            if isinstance(p, torch.Tensor) and p.ndim < 2:
                raise ValueError(
                    f"{where}: {key}=True but a parameter has shape {tuple(p.shape)}; {update} needs >= 2 dims: put "
                    f"0-d/1-d params in a group with {key}=False (or None)"
                )


def param_groups_of(model: nn.Module) -> list[dict[str, Any]]:
    """``model``'s named parameters as Muon param groups: the weights of :data:`TRANSPOSED_MODULES` (stored
    ``[in, out]``) in a group with ``transposed=True``, everything else in one plain group."""
    flipped_ids = {
        id(m.weight)
        for m in model.modules()
        if type(m).__name__ in TRANSPOSED_MODULES and isinstance(getattr(m, "weight", None), torch.Tensor)
    }
    plain: list[tuple[str, torch.Tensor]] = []
    flipped: list[tuple[str, torch.Tensor]] = []
    for name, p in model.named_parameters():
        (flipped if id(p) in flipped_ids else plain).append((name, p))
    groups: list[dict[str, Any]] = [{"params": plain}] if plain else []
    if flipped:
        groups.append({"params": flipped, "transposed": True})
    return groups


def aux_adam_lr(group: dict[str, Any]) -> float:
    """The learning rate of a Muon param group's AdamW part: ``lr · adam_lr_ratio``, the ratio ``None`` taken
    from :data:`AUTO_ADAM_LR_RATIO` by the group's ``scale``."""
    ratio = group["adam_lr_ratio"]
    if ratio is None:
        ratio = AUTO_ADAM_LR_RATIO[group["scale"]]
    return group["lr"] * ratio


def update_scale(rows: int, cols: int, scale: str) -> float:
    """Factor applied to ``NS(u)`` of a ``rows × cols`` matrix (see :class:`Muon` ``scale``)."""
    if scale == "shape":
        return math.sqrt(max(1.0, rows / cols))
    if scale == "match_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if scale == "none":
        return 1.0
    raise ValueError(f"Muon: invalid scale={scale!r}: must be one of {', '.join(repr(s) for s in SCALES)}")


def _matrix_shape(p: torch.Tensor) -> tuple[int, int]:
    """Muon's 2-D view of a parameter: ``[shape[0], prod(rest)]`` (conv kernels as ``[out, in·kh·kw]``)."""
    if p.ndim < 2:
        raise ValueError(f"Muon: a parameter of shape {tuple(p.shape)} has no matrix view (needs >= 2 dims)")
    return p.shape[0], p[0].numel()


def muon_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    *,
    lr: float,
    momentum: float = 0.95,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    ns_steps: int = 5,
    ns_coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
    eps: float = 1e-7,
    scale: str = "shape",
    transposed: bool = False,
    keep: torch.Tensor | None = None,
) -> None:
    """One Muon step on ``params`` in place (the math of :class:`Muon`, no optimizer bookkeeping).

    ``momentum_buffers[i]`` has ``params[i]``'s shape and the state dtype (float32, float64 for float64
    params).  Parameters whose matrix view (``[shape[0], prod(rest)]``), dtype and device agree are stacked
    and orthogonalised by one batched :func:`~precond.linalg.newton_schulz` call.  Per matrix::

        buf ← momentum·buf + (1 − momentum)·g
        u   ← g + momentum·(buf − g)          (nesterov; else u = buf)
        p   ← p·(1 − lr·weight_decay) − lr·scale(rows, cols)·NS(u)

    ``transposed``: the matrices are stored ``[in, out]`` (``x @ W``, GPT-2's ``Conv1D``), so ``scale`` is
    evaluated on ``(cols, rows)`` (Newton–Schulz commutes with transposition: only the scale depends on it).
    ``keep``: optional 0-d bool tensor; when false the call is a bitwise no-op on params and buffers (the
    gradients may then be non-finite), when true it is bitwise the ``keep=None`` step.  No host sync.
    """
    if not (len(params) == len(grads) == len(momentum_buffers)):
        raise ValueError("muon_step_: params, grads and momentum_buffers must have the same length")
    buckets: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        buckets.setdefault((_matrix_shape(p), p.dtype, p.device), []).append(i)
    for ((rows, cols), dtype, _), idx in buckets.items():
        ps = [params[i] for i in idx]
        bufs = [momentum_buffers[i] for i in idx]
        sdt = state_dtype(ps[0])
        g = torch.stack([grads[i].reshape(rows, cols) for i in idx]).to(sdt)
        if keep is not None:
            g = torch.where(keep, g, 0.0)  # a skipped step must not see inf/NaN (0·inf = NaN)
        buf = torch.stack([b.reshape(rows, cols) for b in bufs])
        buf.lerp_(g, masked(1.0 - momentum, keep, 0.0, sdt))
        torch._foreach_copy_(bufs, [b.view(dst.shape) for b, dst in zip(buf.unbind(0), bufs, strict=True)])
        u = g.lerp_(buf, momentum) if nesterov else buf
        update = newton_schulz(u, ns_steps, ns_coefficients, eps)
        factor = update_scale(cols, rows, scale) if transposed else update_scale(rows, cols, scale)
        update.mul_(masked(-lr * factor, keep, 0.0, sdt))
        updates = [d.view(p.shape) for d, p in zip(update.unbind(0), ps, strict=True)]
        targets = ps if dtype == sdt else [p.to(sdt) for p in ps]  # bf16/fp16: update a float32 copy
        if weight_decay != 0.0:
            torch._foreach_mul_(targets, masked(1.0 - lr * weight_decay, keep, 1.0, sdt))
        torch._foreach_add_(targets, updates)
        if dtype != sdt:
            torch._foreach_copy_(ps, targets)


def adamw_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    keep: torch.Tensor | None = None,
) -> None:
    """AdamW (decoupled weight decay, bias-corrected) for Muon's non-matrix parameters, in place.

    For float32 parameters bitwise ``torch.optim.AdamW`` (single-tensor path), but the bias corrections are
    computed on device from the float32 ``steps`` tensors (no ``.item()``).  Moments are float32 (float64 for
    float64 params); bf16/fp16 params are updated through a float32 copy.  ``keep`` as in :func:`muon_step_`.
    """
    if not params:
        return
    beta1, beta2 = betas
    sdt = torch.float64 if all(p.dtype == torch.float64 for p in params) else torch.float32
    if any(state_dtype(p) != sdt for p in params):
        groups = [[i for i, p in enumerate(params) if state_dtype(p) == d] for d in (torch.float32, torch.float64)]
        for idx in groups:
            adamw_step_(
                *([seq[i] for i in idx] for seq in (params, grads, exp_avgs, exp_avg_sqs, steps)),
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                keep=keep,
            )
        return
    gs = [g.to(sdt) for g in grads]
    if keep is not None:
        gs = [torch.where(keep, g, 0.0) for g in gs]
        torch._foreach_add_(steps, keep.to(steps[0].dtype))
    else:
        torch._foreach_add_(steps, 1.0)
    # bias corrections in float64 (torch computes them in Python floats)
    t = torch.stack(steps).to(torch.float64)
    step_size_neg = masked((-lr / bias_correction(beta1, t)).to(sdt), keep, 0.0)
    bc2_sqrt = bias_correction(beta2, t).sqrt().to(sdt)
    targets = [p if p.dtype == sdt else p.to(sdt) for p in params]
    if weight_decay != 0.0:
        torch._foreach_mul_(targets, masked(1.0 - lr * weight_decay, keep, 1.0, sdt))
    adam_moments_(exp_avgs, exp_avg_sqs, gs, keep, beta1, beta2, lerp=True, dtype=sdt)
    denom = adam_denominators(exp_avg_sqs, list(bc2_sqrt.unbind(0)), eps)
    # p + (−step_size·m)/denom: the order of operations of torch's addcdiv_, so float32 is bitwise AdamW
    numer = torch._foreach_mul(exp_avgs, list(step_size_neg.unbind(0)))
    torch._foreach_div_(numer, denom)
    torch._foreach_add_(targets, numer)
    for p, t32 in zip(params, targets, strict=True):
        if t32 is not p:
            p.copy_(t32)


class Muon(PrecondOptimizer):
    r"""Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) with AdamW for non-matrix params.

    For a matrix parameter, Muon keeps a momentum of the gradient and steps along its orthogonalization
    ``NS(u) ≈ U Vᵀ`` (quintic Newton–Schulz, :func:`~precond.linalg.newton_schulz`), so every direction of the
    update has about the same size however ill-conditioned the gradient is::

        buf ← momentum·buf + (1 − momentum)·g              (Keller's ``buf.lerp_(g, 1 − momentum)``)
        u   ← g + momentum·(buf − g)  if nesterov else buf  (``g.lerp(buf, momentum)``)
        p   ← p·(1 − lr·weight_decay)                       (decoupled, unscaled lr, like torch.optim.Muon)
        p   ← p − lr·scale(rows, cols)·NS(u)

    **Momentum convention.** This is KellerJordan/Muon's update and the *code* of ``torch.optim.Muon`` (torch
    2.13 runs ``buf.lerp_(grad, 1 − momentum)`` and ``grad.lerp(buf, momentum)``); the torch *docstring*
    writes ``B ← μB + g`` and ``g + μB``.  The two agree up to a constant: by induction the summed buffer is
    the lerp buffer divided by ``(1 − μ)``, and so is the Nesterov combination, and ``NS`` divides its input by
    its Frobenius norm — so the steps are the same, up to the ``eps`` in that normalisation
    (``tests/optim/test_muon.py`` checks both forms).

    **Which parameters get Muon.** ``params`` may be tensors, param-group dicts, ``(name, tensor)`` pairs
    (e.g. ``model.named_parameters()``, as ``torch.optim.Muon`` accepts; names are kept in the group's
    ``param_names``), or an ``nn.Module`` (its named parameters, :func:`param_groups_of`: weights of modules
    stored ``[in, out]`` such as GPT-2's ``Conv1D`` get ``transposed=True``; ``precond.optim.create("muon",
    model)`` passes the module).  A group's ``use_muon`` decides: ``True`` — Muon for all its params (each
    needs ``>= 2`` dims); ``False`` — AdamW for all; ``None`` (default) — automatic: Muon iff ``p.ndim >= 2``
    and, when the name is known, it does not look like an embedding or output head (:data:`AUTO_ADAMW_NAME`: a dotted
    component containing ``embed`` or equal to ``wte``/``wpe`` anywhere; ``lm_head``/``head``/``output``/
    ``classifier`` as the module owning the parameter, numeric indices skipped — so ``lm_head.weight``,
    ``output.weight``, ``classifier.6.weight``, ``transformer.wte.weight``, ``model.embed_tokens.weight`` go
    to AdamW and BERT's ``attention.output.dense.weight`` to Muon; ``head.fc.weight`` is *not* caught: put
    such params in a ``use_muon=False`` group).  Without names, embeddings (2-D) get Muon: pass named
    parameters or explicit groups.  Everything else — 0-d/1-d params (biases, gains), embeddings, heads — gets
    AdamW with the ``adam_*`` hyperparameters (decoupled weight decay and bias correction as
    ``torch.optim.AdamW``; for float32 params it is bitwise that optimizer).  Params with 3+ dims (conv
    kernels) are viewed as ``[shape[0], prod(rest)]``.  If no parameter at all is routed to Muon (a model of
    only 1-D params, or only embeddings/heads), the constructor warns: it would silently be AdamW.

    **Learning rates (defaults).**  Muon matrices step at ``lr`` (``0.02``, Keller's) times the ``scale``
    factor; the AdamW params at :func:`aux_adam_lr` = ``lr · adam_lr_ratio``, the ratio by default
    (``None``) following ``scale`` (:data:`AUTO_ADAM_LR_RATIO`): ``0.2`` for ``"shape"`` (``4e-3`` at the
    defaults; it was a fixed ``0.015``, i.e. ``3e-4``, before) and ``1`` for ``"match_adamw"``.  Moonshot's
    recipe ("Muon is Scalable for LLM Training", arXiv 2502.16982) is ``scale="match_adamw"`` with an
    AdamW-sized ``lr`` (e.g. ``1e-3``) and ``weight_decay == adam_weight_decay``: one lr and one weight decay
    for every parameter, as ``create("muon", ...)`` does.  KellerJordan/Muon's own example is
    ``adam_lr_ratio=0.015``.

    Args:
        params: tensors, ``(name, tensor)`` pairs or param groups; every argument below except ``nonfinite``
            (and ``use_muon``, a group key) may be overridden per group.
        lr: Muon learning rate (default ``0.02``, Keller's).
        momentum: in ``[0, 1)`` (default ``0.95``).
        nesterov: Nesterov momentum (default ``True``).
        weight_decay: decoupled, ``p ← p·(1 − lr·weight_decay)`` (default ``0``).
        ns_steps: Newton–Schulz iterations (``>= 1``, default ``5``).
        ns_coefficients: the quintic's ``(a, b, c)`` (default Keller's ``(3.4445, -4.7750, 2.0315)``).
        eps: added to the Frobenius norm in Newton–Schulz (default ``1e-7``).
        scale: per-matrix update factor for a ``rows × cols`` view: ``"shape"`` (default, Keller)
            ``max(1, rows/cols)^0.5``; ``"match_adamw"`` (Moonshot, arXiv 2502.16982) ``0.2·sqrt(max(rows,
            cols))``, which gives the update AdamW's RMS so AdamW's lr and weight decay fit; ``"none"`` ``1``.
            The shape is the stored ``[shape[0], prod(rest)]`` one; a group with ``transposed=True`` (a group key:
            its matrices are stored ``[in, out]``, ``y = x @ W``, as GPT-2's ``Conv1D``) uses ``[out, in]``, the
            ``nn.Linear`` layout the scales are defined for.
        adam_lr_ratio: the AdamW params' learning rate is ``lr · adam_lr_ratio``; default ``None``: ``0.2``
            under ``scale="shape"``/``"none"``, ``1`` under ``"match_adamw"`` (see *Learning rates* above).  A
            ratio rather than a second learning rate, so LR schedulers (which change ``lr``) schedule both parts
            and ``lr=0`` freezes the group.
        adam_betas, adam_eps, adam_weight_decay: AdamW for the non-Muon params (defaults ``(0.9, 0.95)``,
            ``1e-10`` and ``0``).  ``adam_eps`` must be ``> 0`` (a skipped step divides ``0/eps``).
        nonfinite: ``"skip"`` (default): a step with any non-finite gradient is a bitwise no-op on every param
            and state tensor, without a host sync (masked updates), counted in ``state[p]["nonfinite_skips"]``
            (a tensor) of the params that had a gradient; ``"off"`` skips the check (torch.optim's behaviour, e.g.
            behind a ``GradScaler``, which skips such steps itself); ``"raise"``: ``ValueError`` before anything is
            modified (one sync per step).

    Newton–Schulz runs in float32 (float64 for float64 params), not bf16 as the reference does on GPUs: CPUs
    without bf16 matmul units run it ~50× slower in bf16.  Same-shaped Muon params of a group are stacked
    into one batched ``[B, m, n]`` call; the rest is ``torch._foreach_*``; no ``.item()`` on a step.

    State: Muon params ``momentum_buffer`` (float32, param shape), ``nonfinite_skips``; AdamW params ``step``
    (float32 tensor), ``exp_avg``, ``exp_avg_sq`` (float32), ``nonfinite_skips``.  Float32 state of bf16
    params stays float32 across ``load_state_dict``; a state dict saved by another optimizer (its param groups
    lack Muon's hyperparameters) raises ``ValueError`` naming it.
    """

    optimizer_name = "Muon"
    #: Group keys a state dict saved before they existed may lack (filled with their default on load).
    optional_group_defaults: ClassVar[dict[str, Any]] = {"transposed": False}

    def __init__(
        self,
        params: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
        eps: float = 1e-7,
        scale: str = "shape",
        adam_lr_ratio: float | None = None,
        adam_betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-10,
        adam_weight_decay: float = 0.0,
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            ns_steps=ns_steps,
            ns_coefficients=ns_coefficients,
            eps=eps,
            scale=scale,
            adam_lr_ratio=adam_lr_ratio,
            adam_betas=adam_betas,
            adam_eps=adam_eps,
            adam_weight_decay=adam_weight_decay,
            use_muon=None,
            transposed=False,
        )
        if isinstance(params, nn.Module):
            params = param_groups_of(params)
        super().__init__(params, defaults, nonfinite)  # type: ignore[arg-type]
        if not any(any(self._routes(g, g["params"])) for g in self.param_groups):
            warnings.warn(
                "Muon: no parameter is routed to Muon (none has >= 2 dims, or every matrix looks like an "
                "embedding/head by name), so every parameter runs the auxiliary AdamW at lr·adam_lr_ratio: pass "
                "the model's weight matrices (or a param group with use_muon=True), or use torch.optim.AdamW",
                UserWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ torch.optim plumbing
    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        check_momentum_like(group, where, nesterov=True)
        check_ns(group, where)
        check_choice(group, "scale", where, SCALES)
        if group["adam_lr_ratio"] is not None:
            check_real(group, "adam_lr_ratio", where, low=0.0)
        check_betas(group, where, name="adam_betas")
        check_real(group, "adam_eps", where, low=0.0, low_open=True)
        check_real(group, "adam_weight_decay", where, low=0.0)
        if group.get("use_muon") not in (None, True, False):
            raise ValueError(f"{where}: invalid use_muon={group['use_muon']!r}: must be True, False or None (auto)")
        check_bool(group, "transposed", where)
        check_matrices(group, where, "use_muon", "Muon")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(split_names(param_group, "Muon"))

    def _routes(self, group: dict[str, Any], params: list[torch.Tensor]) -> list[bool]:
        return route_by_name(group, params, group["use_muon"])

    # ------------------------------------------------------------------ the step
    def _step_groups(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]], ok: torch.Tensor | None) -> None:
        counters = []
        for group, ps in groups:
            muon_ps: list[torch.Tensor] = []
            adam_ps: list[torch.Tensor] = []
            for p, route in zip(ps, self._routes(group, ps), strict=True):
                (muon_ps if route else adam_ps).append(p)
                self._init_state(p, route)
                counters.append(self.state[p]["nonfinite_skips"])
            if muon_ps:
                muon_step_(
                    muon_ps,
                    [p.grad for p in muon_ps],  # type: ignore[misc]
                    [self.state[p]["momentum_buffer"] for p in muon_ps],
                    lr=group["lr"],
                    momentum=group["momentum"],
                    nesterov=group["nesterov"],
                    weight_decay=group["weight_decay"],
                    ns_steps=group["ns_steps"],
                    ns_coefficients=tuple(group["ns_coefficients"]),
                    eps=group["eps"],
                    scale=group["scale"],
                    transposed=group["transposed"],
                    keep=ok,
                )
            if adam_ps:
                states = [self.state[p] for p in adam_ps]
                adamw_step_(
                    adam_ps,
                    [p.grad for p in adam_ps],  # type: ignore[misc]
                    [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states],
                    [s["step"] for s in states],
                    lr=aux_adam_lr(group),
                    betas=tuple(group["adam_betas"]),
                    eps=group["adam_eps"],
                    weight_decay=group["adam_weight_decay"],
                    keep=ok,
                )
        self._count_skips(counters, ok)

    def _create_state(self) -> None:
        for group in self.param_groups:
            for p, route in zip(group["params"], self._routes(group, group["params"]), strict=True):
                if p.numel() > 0:
                    self._init_state(p, route)

    def _work_estimate(self, p: torch.Tensor, group: dict[str, Any]) -> float:
        """Newton–Schulz: ``ns_steps·(4m²n + 2m³)`` for an ``m × n`` matrix view, ``m ≤ n``; AdamW: the size."""
        if not self._routes(group, [p])[0]:
            return float(p.numel())
        m, n = sorted(_matrix_shape(p))
        return float(group["ns_steps"] * (4 * m * m * n + 2 * m**3))

    def _init_state(self, p: torch.Tensor, route: bool) -> None:
        state = self.state[p]
        key = "momentum_buffer" if route else "exp_avg"
        if key in state:
            return
        if state:  # the routing of this param changed (e.g. use_muon edited): start its new state afresh
            state.clear()
        zeros = functools.partial(torch.zeros, p.shape, dtype=state_dtype(p), device=p.device)
        if route:
            state["momentum_buffer"] = zeros()
        else:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = zeros()
            state["exp_avg_sq"] = zeros()
        state["nonfinite_skips"] = torch.zeros((), dtype=torch.int64, device=p.device)
