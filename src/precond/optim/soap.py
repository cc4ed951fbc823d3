"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024, arXiv 2409.11321)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from types import MappingProxyType
from typing import Any, ClassVar, cast

import torch

from precond.optim._buckets import Bucket
from precond.optim._common import check_betas, check_bool, check_int, check_lr, check_real
from precond.optim._factored import FactoredOptimizer, apply_update, check_layout, grad_blocks
from precond.optim._soap_math import soap_block_step_

#: The arguments whose default depends on ``reference``: this class's own defaults ...
IMPROVED_DEFAULTS = MappingProxyType(
    {"shampoo_beta": 0.95, "max_precond_dim": 1024, "merge_dims": "fan_in", "blocking": True}
)
#: ... and the reference's (nikhilvyas/SOAP ``a1e5535``: ``shampoo_beta=-1`` ties it to β2, dims up to 10000
#: factored, no merging, no blocking).  Every other default is the same in both modes.
REFERENCE_DEFAULTS = MappingProxyType(
    {"shampoo_beta": -1.0, "max_precond_dim": 10000, "merge_dims": False, "blocking": False}
)


class SOAP(FactoredOptimizer):
    r"""SOAP: ShampoO with Adam in the Preconditioner's eigenbasis.

    Keeps Shampoo's Kronecker factors ``L = EMA(G Gᵀ)``, ``R = EMA(Gᵀ G)`` per parameter block, runs Adam on
    ``G' = Q_Lᵀ G Q_R`` and maps the step back with ``Q_L (·) Q_Rᵀ``; the eigenbases are refreshed every
    ``precondition_frequency`` steps by one warm-started power-iteration + QR step (paper Alg. 3-4).

    Args:
        params: parameters or param groups; every argument below except ``data_format`` and ``nonfinite``
            may be overridden per group.
        lr: learning rate (default ``3e-3``, the paper's).
        betas: Adam ``(β1, β2)`` (default ``(0.95, 0.95)``, the paper's).
        shampoo_beta: EMA coefficient of the Kronecker factors; a negative value ties it to β2.  Default
            (``None``): ``0.95``, *independent of β2* — tying it to β2 (the reference's ``-1``, its default
            under ``reference=True``) makes the factors nearly frozen when β2 is large (0.995-0.999), the
            failure reported in nikhilvyas/SOAP PR #17; 0.95 is what HeavyBall, NVIDIA and levanter use and the
            Fantastic-optimizers sweep found 0.9-0.99 flat.
        eps: added to the denominator (default ``1e-8``).
        weight_decay: decoupled weight decay (default ``0.01``, the reference's).  Applied like
            ``torch.optim.AdamW`` (``p ← p·(1 − lr·wd)`` before the update), so SOAP whose bases are the
            identity *is* AdamW; ``reference=True`` applies it after the update as the reference does.
        precondition_frequency: steps between eigenbasis refreshes (default ``10``).
        max_precond_dim: largest factor side (default ``1024``; ``10000`` under ``reference=True``).  Larger
            dims are cut into balanced blocks of at most this size (Distributed Shampoo's block partitioning),
            each block preconditioned on its own, so embeddings and LM heads keep a preconditioner at bounded
            cost; ``blocking=False`` leaves such dims unrotated (identity), as the reference does.  ``0`` turns
            SOAP into AdamW.
        merge_dims: how tensors with 3+ dims are viewed: ``"fan_in"`` (default) as ``[shape[0], prod(rest)]``
            — conv kernels as ``[out, in·kh·kw]``, one factor per side; ``True``/``"greedy"`` the reference's
            rule (multiply consecutive dims while ≤ ``max_precond_dim``, e.g. ``[8192, 9]`` for
            ``[128, 64, 3, 3]``); ``False``/``"none"`` one factor per dim (the default under ``reference=True``).
        blocking: see ``max_precond_dim`` (default ``True``; ``False`` under ``reference=True``).
        precondition_1d: give 1-D parameters a full ``d×d`` factor (default ``False``: 0-d and 1-d parameters
            get plain Adam).
        normalize_grads: divide each block's update by its RMS (reference option).
        data_format: ``"channels_first"`` or ``"channels_last"`` (4-D tensors stored NHWC; only matters for the
            greedy merge).
        correct_bias: Adam bias correction (default ``True``).
        reference: reproduce the reference implementation (nikhilvyas/SOAP ``a1e5535``) exactly: the first
            gradient of a parameter only builds the factors and basis (no update, no weight decay), epsilon is
            added to ``sqrt(v)`` before bias correction, weight decay comes after the update.  It also makes
            every argument not given (``None``) take the reference's default (:data:`REFERENCE_DEFAULTS`):
            ``shampoo_beta`` tied to β2, ``max_precond_dim=10000``, ``merge_dims=False``, ``blocking=False``;
            the others (``lr=3e-3``, ``betas=(0.95, 0.95)``, ``eps=1e-8``, ``weight_decay=0.01``,
            ``precondition_frequency=10``, ``precondition_1d=False``, ``normalize_grads=False``,
            ``correct_bias=True``, ``data_format="channels_first"``) are the reference's in both modes.
            Explicit arguments win; a param group setting ``reference`` gets that mode's defaults for the
            four arguments the constructor was not given.
        nonfinite: policy for non-finite gradients: ``"skip"`` (default) turns the whole step into a no-op —
            parameters, moments, factors and bases bitwise untouched — and counts it in
            ``state[p]["nonfinite_skips"]``.  Ordinary steps do this without a host sync (masked updates that
            are bitwise the plain ones when the gradient is finite); steps that initialise or refresh a basis
            check on the host (they run ``eigh``/QR anyway) and a skipped one does not advance the schedule,
            while a skipped ordinary step still counts toward ``precondition_frequency``.  ``"off"`` skips the check
            (torch.optim's behaviour, e.g. behind a ``GradScaler``, which skips such steps itself); ``"raise"`` raises
            ``ValueError`` before touching anything (one host sync per step).
        compile: run the elementwise Adam part through ``torch.compile`` (fused kernels, same math; the
            matmuls, QR and ``eigh`` stay eager).  Off by default: the first steps pay the compile time.  This
            is the way to compile SOAP: ``torch.compile(opt.step)`` raises an error saying so (the refresh
            steps choose their schedule and resolve the non-finite flag on the host).
        cholesky_qr: opt-in cheaper refresh: orthogonalise the power-iteration step with CholeskyQR2 (two passes
            of Gram → Cholesky → triangular solve: matrix-matrix work only) instead of Householder QR, on the
            shifted power ``(A + c·I)Q`` (same eigenvectors; ``c = 1e-3·trace(A)/d``,
            :data:`precond.linalg.CHOLQR_SHIFT`, keeps rank-deficient factors well conditioned).  A block whose
            Cholesky fails, or whose first pass is far from orthogonal, falls back to Householder QR.  Default
            ``False``.
        drift_tolerance: opt-in: at a scheduled refresh, recompute only the factors whose basis has drifted,
            measured by ``r = ‖offdiag(QᵀAQ)‖_F / ‖diag(QᵀAQ)‖_F`` (from ``A Q``, which the refresh computes
            anyway; :func:`precond.linalg.basis_drift`).  Factors with ``r ≤ drift_tolerance`` keep their basis
            and skip the QR and the momentum transport.  ``0`` (default) refreshes every factor.  ``r`` is 0 for
            an exact eigenbasis and ~1 when the off-diagonal mass equals the diagonal's; 0.05-0.2 is the range
            to try (the benchmark's ``--soap-options`` uses 0.1).
        stagger_refresh: opt-in: spread the parameters' refreshes over the ``precondition_frequency`` steps of
            the period (each parameter is given a slot, largest refresh work first into the least-loaded slot)
            instead of refreshing everything on the same step: same number of refreshes per parameter, lower
            p99 step time.  A parameter's first refresh can come earlier than step ``precondition_frequency``.
            Default ``False``.

    Better than the reference, by default (each tested in ``tests/optim``):

    * **No wasted first step.** The reference throws away every parameter's first gradient.  Here the first
      gradient seeds the factors, their ``eigh`` gives the basis, and the step is taken in it (for a matrix,
      in exact arithmetic, the polar factor ``U Vᵀ`` of the gradient, i.e. Muon's direction; in float32 the
      projected gradient's off-diagonal is rounding noise, which Adam's normalisation amplifies wherever it
      exceeds ``eps``, so with the default ``eps`` this first step is only roughly ``U Vᵀ``).
    * **Second moment aligned with the basis.** The refresh keeps each eigenvector in its column slot, so the
      per-slot second moment needs no permutation and cannot be misaligned (the bug class of NVIDIA
      Emerging-Optimizers PR #300); permuting or sign-flipping basis columns does not change the update.
    * **Momentum transported only when the basis changes**: 3 matmul units of ``m·n·(m+n)`` per step instead of
      the reference's 5; exact, so the trajectory is the reference's.
    * **Robust eigendecomposition**: relative jitter → float64 retry → keep the previous basis, counted in
      ``state[p]["basis_fallbacks"]``; a non-finite refresh also keeps the previous basis.  No NaN from a
      rank-deficient factor.
    * **Batched**: same-shaped blocks of a param group share ``[B, ...]`` state, so factor updates,
      projections, QR and ``eigh`` are one batched call each; no ``.item()`` in ``step()``.
    * Factors, bases and moments are float32 whatever the parameter dtype (bf16/fp16 parameters train).

    State per parameter (views into the batched buffers; lists run over blocks): ``step``, ``calls`` (steps
    with a gradient — drives the refresh schedule), ``exp_avg``/``exp_avg_sq`` (eigenbasis coordinates, in the
    block's merged shape), ``GG``/``Q`` (per dim, ``None`` = identity), ``basis_fallbacks``,
    ``nonfinite_skips``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int | None = None,
        merge_dims: bool | str | None = None,
        blocking: bool | None = None,
        precondition_1d: bool = False,
        normalize_grads: bool = False,
        data_format: str = "channels_first",
        correct_bias: bool = True,
        reference: bool = False,
        nonfinite: str = "skip",
        compile: bool = False,
        cholesky_qr: bool = False,
        drift_tolerance: float = 0.0,
        stagger_refresh: bool = False,
    ) -> None:
        self._compile = bool(compile)
        moded = dict(
            shampoo_beta=shampoo_beta, max_precond_dim=max_precond_dim, merge_dims=merge_dims, blocking=blocking
        )
        #: the reference-dependent arguments not given: each param group takes them from its own mode
        self._moded_keys = frozenset(k for k, v in moded.items() if v is None)
        mode = REFERENCE_DEFAULTS if reference is True else IMPROVED_DEFAULTS
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            precondition_frequency=precondition_frequency,
            **{k: mode[k] if v is None else v for k, v in moded.items()},
            precondition_1d=precondition_1d,
            normalize_grads=normalize_grads,
            correct_bias=correct_bias,
            reference=reference,
            cholesky_qr=cholesky_qr,
            drift_tolerance=drift_tolerance,
            stagger_refresh=stagger_refresh,
        )
        self._offsets: dict[torch.Tensor, int] | None = None
        super().__init__(params, defaults, data_format=data_format, nonfinite=nonfinite)

    optimizer_name = "SOAP"
    _copied_attributes: ClassVar[tuple[str, ...]] = (*FactoredOptimizer._copied_attributes, "_compile")
    _compile_hint: ClassVar[str | None] = (
        "pass compile=True to SOAP (it compiles the elementwise Adam part; the eigh/QR refreshes stay eager) "
        "and call opt.step() uncompiled"
    )
    moment_names: ClassVar[tuple[str, ...]] = ("exp_avg", "exp_avg_sq")
    # the bases column-major: the refresh's QR and the first step's eigh hand them back in that layout
    matrix_kinds: ClassVar[dict[str, str]] = {"GG": "zeros", "Q": "eye_columns"}
    counter_dtypes: ClassVar[dict[str, torch.dtype]] = {
        "step": torch.float32,
        "basis_fallbacks": torch.int64,
        "nonfinite_skips": torch.int64,
    }

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._offsets = None  # the stagger slots are recomputed over the new groups
        # the reference-dependent arguments the constructor was not given, and a group's None, follow the
        # group's own mode
        mode = REFERENCE_DEFAULTS if param_group.get("reference", self.defaults["reference"]) is True else None
        fill = {
            k: v
            for k, v in (mode or IMPROVED_DEFAULTS).items()
            if param_group.get(k) is None and (k in param_group or k in self._moded_keys)
        }
        super().add_param_group({**param_group, **fill})

    def _after_copy(self) -> None:
        super()._after_copy()
        self._offsets = None

    # a checkpoint saved before the refresh options existed resumes with them off, as it ran
    optional_group_defaults: ClassVar[dict[str, Any]] = {
        "cholesky_qr": False,
        "drift_tolerance": 0.0,
        "stagger_refresh": False,
    }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._offsets = None  # the loaded groups may set stagger_refresh or precondition_frequency differently

    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        check_lr(group, where)
        check_betas(group, where)
        if group["shampoo_beta"] is not None and not (
            isinstance(group["shampoo_beta"], (int, float)) and group["shampoo_beta"] < 1.0
        ):  # NaN fails the comparison
            sb = group["shampoo_beta"]
            raise ValueError(f"{where}: invalid shampoo_beta={sb!r}: must be in [0, 1), or negative to use betas[1]")
        check_real(group, "eps", where, low=0.0, low_open=True)
        check_real(group, "weight_decay", where, low=0.0)
        check_int(group, "precondition_frequency", where, low=1)
        check_layout(group, where)
        for flag in ("normalize_grads", "correct_bias", "reference"):
            check_bool(group, flag, where)
        # the refresh options may be absent from a param group saved before they existed: their default applies
        for flag in ("cholesky_qr", "stagger_refresh"):
            if flag in group:
                check_bool(group, flag, where)
        if "drift_tolerance" in group:
            check_real(group, "drift_tolerance", where, low=0.0)

    def _needs_host_check(self, phase: Hashable) -> bool:
        initialize, refresh = cast(tuple[bool, bool], phase)
        return initialize or refresh

    def _decay_weights_of(
        self, group: dict[str, Any], params: list[torch.Tensor], keep: torch.Tensor | None, after: bool
    ) -> None:
        # The reference decays after the update, and not on a parameter's first (update-free) step.
        if not group["reference"]:
            super()._decay_weights_of(group, params, keep, after)
        elif after:
            started = [p for p in params if self.state[p]["calls"] > 0]
            super()._decay_weights_of(group, started, keep, after=False)

    def _phase(self, p: torch.Tensor, group: dict[str, Any]) -> tuple[bool, bool]:
        """(initialise, refresh) for ``p``'s next step; ``calls`` counts steps with a gradient.

        With ``stagger_refresh`` the schedule of ``p`` is shifted by its slot (:meth:`_stagger_offset`)."""
        calls = self.state[p]["calls"] + 1
        initialize = calls == 1
        scheduled = calls - 1 if group["reference"] else calls
        if group.get("stagger_refresh", False):
            scheduled += self._stagger_offset(p)
        return initialize, (not initialize) and scheduled > 0 and scheduled % group["precondition_frequency"] == 0

    def _stagger_offset(self, p: torch.Tensor) -> int:
        """``p``'s refresh slot in ``[0, precondition_frequency)`` of its group under ``stagger_refresh``.

        Longest-processing-time assignment: the group's parameters, largest refresh work (``Σ d³`` over its
        blocks' factored dims) first, each go to the slot with the least work so far (ties: lowest slot, then
        parameter order).  Depends only on the param groups' shapes and settings, so a copy or a resumed
        optimizer gets the same slots.
        """
        if self._offsets is None:
            offsets: dict[torch.Tensor, int] = {}
            for group in self.param_groups:
                freq = group["precondition_frequency"]
                work = []
                for i, q in enumerate(group["params"]):
                    layout = self._plan(q, group)
                    cubes = sum(
                        d**3
                        for shape, factored in zip(layout.block_shapes, layout.factored, strict=True)
                        for d, on in zip(shape, factored, strict=True)
                        if on
                    )
                    work.append((-cubes, i, q))
                load = [0] * freq
                for neg, _, q in sorted(work, key=lambda w: (w[0], w[1])):
                    slot = min(range(freq), key=lambda k: (load[k], k))
                    load[slot] -= neg
                    offsets[q] = slot
            self._offsets = offsets
        return self._offsets.get(p, 0)

    def _step_bucket(
        self,
        bucket: Bucket,
        group: dict[str, Any],
        ok: torch.Tensor | None,
        phases: dict[torch.Tensor, Hashable],
    ) -> None:
        beta1, beta2 = group["betas"]
        shampoo_beta = group["shampoo_beta"]
        if shampoo_beta is None or shampoo_beta < 0:
            shampoo_beta = beta2
        for sl, key in bucket.runs(lambda m: phases.get(m.param)):
            initialize, refresh = cast(tuple[bool, bool], key)
            members = bucket.members[sl]
            grads = grad_blocks(members)
            moments, counters, matrices = bucket.sliced(sl)
            delta = soap_block_step_(
                grads,
                moments["exp_avg"],
                moments["exp_avg_sq"],
                counters["step"],
                matrices["GG"],
                matrices["Q"],
                counters["basis_fallbacks"],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                shampoo_beta=shampoo_beta,
                eps=group["eps"],
                correct_bias=group["correct_bias"],
                normalize_grads=group["normalize_grads"],
                reference=group["reference"],
                initialize=initialize,
                refresh=refresh,
                ok=ok,
                compiled=self._compile,
                cholesky_qr=group.get("cholesky_qr", False),
                drift_tolerance=group.get("drift_tolerance", 0.0),
            )
            if ok is not None:
                counters["nonfinite_skips"].add_(~ok)
            if delta is not None:
                apply_update(members, delta)
