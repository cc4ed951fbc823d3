"""Reference SOAP: a deliberately plain, one-parameter-at-a-time oracle.

This module transcribes the reference SOAP algorithm (Vyas et al. 2024, arXiv 2409.11321; the
``nikhilvyas/SOAP`` repository at commit a1e5535) as literally as possible. It exists only so the
optimized implementation in ``precond`` can be tested against it, so it favours readability and a
faithful order of operations over speed. All optimizer state is float32.

Notation used in the comments:

* ``G`` is the (float32) gradient of a parameter; ``m`` / ``v`` are the first / second moments
  (stored under the reference's names ``exp_avg`` / ``exp_avg_sq``, in the parameter's shape).
* ``GG[i]`` is the Kronecker factor of dimension ``i`` and ``Q[i]`` its eigenbasis; ``None`` marks a
  dimension that is not preconditioned.
* ``proj(X, Q)`` rotates every factored dimension of ``X`` into the eigenbasis (2-D: ``QL^T X QR``),
  ``proj_back(X, Q)`` undoes it (2-D: ``QL X QR^T``).
* With ``merge_dims`` every one of these operations acts on the "work view" of a tensor: the tensor
  with small consecutive dimensions merged (and, for 4-D ``channels_last`` tensors, permuted first).
"""

import math

import torch


def merged_shape(shape, max_precond_dim):
    """Greedily merge consecutive dimensions whose product stays within ``max_precond_dim``."""
    new_shape = []
    curr = 1
    for sh in shape:
        if curr * sh > max_precond_dim:
            if curr > 1:
                new_shape.append(curr)
                curr = sh
            else:
                new_shape.append(sh)
                curr = 1
        else:
            curr = curr * sh
    if curr > 1 or len(new_shape) == 0:
        new_shape.append(curr)
    return new_shape


def proj(x, q_list):
    """Rotate into the eigenbasis: ``x'[..a_i..] = sum_k Q_i[k, a_i] x[..k..]`` for every factored dim."""
    for dim, q in enumerate(q_list):
        if q is None:
            continue
        x = torch.movedim(torch.movedim(x, dim, -1) @ q, -1, dim)
    return x


def proj_back(x, q_list):
    """Inverse of :func:`proj`: ``x[..k..] = sum_a Q_i[k, a] x'[..a..]`` for every factored dim."""
    for dim, q in enumerate(q_list):
        if q is None:
            continue
        x = torch.movedim(torch.movedim(x, dim, -1) @ q.T, -1, dim)
    return x


def factor_contribution(g, dim):
    """``C_i(G)``: contract ``G`` with itself over all dims except ``dim`` (2-D: ``G G^T``, ``G^T G``)."""
    others = [j for j in range(g.dim()) if j != dim]
    return torch.tensordot(g, g, dims=(others, others))


def eigenbasis(gg):
    """Eigenvectors of ``gg`` with the eigenvalues in descending order (float64 fallback on failure)."""
    eye = torch.eye(gg.shape[0], dtype=gg.dtype, device=gg.device)
    try:
        _, q = torch.linalg.eigh(gg + 1e-30 * eye)
    except Exception:
        _, q = torch.linalg.eigh(gg.to(torch.float64) + 1e-30 * eye.to(torch.float64))
        q = q.to(gg.dtype)
    return torch.flip(q, dims=[1])


class ReferenceSOAP(torch.optim.Optimizer):
    """Loop-per-parameter transcription of reference SOAP. See the module docstring."""

    def __init__(
        self,
        params,
        lr=3e-3,
        betas=(0.95, 0.95),
        shampoo_beta=-1.0,
        eps=1e-8,
        weight_decay=0.01,
        precondition_frequency=10,
        max_precond_dim=10000,
        merge_dims=False,
        precondition_1d=False,
        normalize_grads=False,
        data_format="channels_first",
        correct_bias=True,
    ):
        if data_format not in ("channels_first", "channels_last"):
            raise ValueError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
        self.data_format = data_format
        defaults = {
            "lr": lr,
            "betas": betas,
            "shampoo_beta": shampoo_beta,
            "eps": eps,
            "weight_decay": weight_decay,
            "precondition_frequency": precondition_frequency,
            "max_precond_dim": max_precond_dim,
            "merge_dims": merge_dims,
            "precondition_1d": precondition_1d,
            "normalize_grads": normalize_grads,
            "correct_bias": correct_bias,
        }
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ work view of a tensor

    def to_work(self, x, group):
        """The view every factor operates on: 0-d -> shape (1,); merged (and maybe permuted) if merge_dims."""
        if x.dim() == 0:
            return x.reshape(1)
        if not group["merge_dims"] or x.dim() < 2:
            return x
        if self.data_format == "channels_last" and x.dim() == 4:
            x = x.permute(0, 3, 1, 2)
        return x.reshape(merged_shape(x.shape, group["max_precond_dim"]))

    def from_work(self, x, shape, group):
        """Inverse of :meth:`to_work`, back to the parameter's ``shape``."""
        if len(shape) == 0:
            return x.reshape(shape)
        if not group["merge_dims"] or len(shape) < 2:
            return x
        if self.data_format == "channels_last" and len(shape) == 4:
            permuted_shape = (shape[0], shape[3], shape[1], shape[2])
            return x.reshape(permuted_shape).permute(0, 2, 3, 1)
        return x.reshape(shape)

    def proj(self, x, state, group):
        """``proj(x, Q)`` on the work view, returned in the parameter's shape."""
        return self.from_work(proj(self.to_work(x, group), state["Q"]), x.shape, group)

    def proj_back(self, x, state, group):
        """``proj_back(x, Q)`` on the work view, returned in the parameter's shape."""
        return self.from_work(proj_back(self.to_work(x, group), state["Q"]), x.shape, group)

    # ------------------------------------------------------------------ preconditioner

    def init_factors(self, g, group):
        """Zero Kronecker factors, one per dimension of the work view (``None`` = not preconditioned)."""
        max_dim = group["max_precond_dim"]
        if g.dim() == 0:
            return [None]
        if g.dim() == 1:
            d = g.shape[0]
            if group["precondition_1d"] and d <= max_dim:
                return [torch.zeros(d, d, dtype=torch.float32, device=g.device)]
            return [None]
        work_shape = self.to_work(g, group).shape
        return [torch.zeros(d, d, dtype=torch.float32, device=g.device) if d <= max_dim else None for d in work_shape]

    def update_preconditioner(self, g, state, group):
        """Momentum to the old basis, factor EMA, optional QR refresh, momentum to the new basis."""
        beta_s = state["shampoo_beta"]
        first_call = state["Q"] is None

        # m <- proj_back(m, Q_old): back to the original basis.
        if not first_call:
            state["exp_avg"] = self.proj_back(state["exp_avg"], state, group)

        # GG_i <- beta_s * GG_i + (1 - beta_s) * C_i(G), with the raw current gradient.
        # (The first call is written as a lerp from the zero factor, as in the transcription.)
        g_work = self.to_work(g, group)
        for i, gg in enumerate(state["GG"]):
            if gg is None:
                continue
            if first_call:
                gg.lerp_(factor_contribution(g_work, i), 1.0 - beta_s)
            else:
                gg.mul_(beta_s).add_(factor_contribution(g_work, i), alpha=1.0 - beta_s)

        if first_call:
            # Initial eigenbases by exact eigendecomposition.
            state["Q"] = [None if gg is None else eigenbasis(gg) for gg in state["GG"]]
            return

        if state["step"] % group["precondition_frequency"] == 0:
            self.refresh_eigenbases(state, group)

        # m <- proj(m, Q_new): exact transport of the momentum into the (possibly new) basis.
        state["exp_avg"] = self.proj(state["exp_avg"], state, group)

    def refresh_eigenbases(self, state, group):
        """One warm-started power-iteration + QR step per factor; v's entries follow the re-sorted basis."""
        shape = state["exp_avg_sq"].shape
        v_work = self.to_work(state["exp_avg_sq"], group)
        new_q = []
        for i, (gg, q) in enumerate(zip(state["GG"], state["Q"], strict=True)):
            if gg is None:
                new_q.append(None)
                continue
            est_eig = torch.diag(q.T @ gg @ q)  # new GG, old Q
            sort_idx = torch.argsort(est_eig, descending=True)
            v_work = v_work.index_select(i, sort_idx)
            q = q[:, sort_idx]
            q, _ = torch.linalg.qr(gg @ q, mode="reduced")
            new_q.append(q)
        state["exp_avg_sq"] = self.from_work(v_work, shape, group)
        state["Q"] = new_q

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                state = self.state[p]

                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(g)  # m
                    state["exp_avg_sq"] = torch.zeros_like(g)  # v

                if "Q" not in state:
                    # First call: build the factors and eigenbases only. No update, no weight decay.
                    state["GG"] = self.init_factors(g, group)
                    state["Q"] = None
                    shampoo_beta = group["shampoo_beta"]
                    state["shampoo_beta"] = shampoo_beta if shampoo_beta >= 0 else beta2
                    self.update_preconditioner(g, state, group)
                    continue

                g_proj = self.proj(g, state, group)

                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(g_proj, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).add_(g_proj.square(), alpha=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])

                step_size = lr
                if group["correct_bias"]:
                    bias_correction1 = 1.0 - beta1**t
                    bias_correction2 = 1.0 - beta2**t
                    step_size = step_size * math.sqrt(bias_correction2) / bias_correction1

                update = self.proj_back(exp_avg / denom, state, group)
                if group["normalize_grads"]:
                    update = update / (1e-30 + torch.mean(update**2) ** 0.5)

                p.add_(update.to(p.dtype), alpha=-step_size)
                if group["weight_decay"] > 0.0:
                    # Decoupled, after the step, scaled by lr (not step_size).
                    p.add_(p, alpha=-lr * group["weight_decay"])

                self.update_preconditioner(g, state, group)

        return loss
