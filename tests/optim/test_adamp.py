"""AdamP and SGDP against their oracles: float64 transcriptions of the official clovaai/AdamP updates (with their
host-synced projection test), torch AdamW/SGD on weights that are not scale-invariant, pytorch_optimizer.AdamP."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from precond.optim import SGDP, AdamP
from precond.optim.adamp import project_radial


def _official_projection(p, grad, perturb, delta, wd_ratio, eps):  # type: ignore[no-untyped-def]
    """The official ``_projection``: channel view, then layer view, first hit wins (host-synced ``.max()``)."""
    expand = [-1] + [1] * (p.dim() - 1)
    for view in (lambda x: x.view(x.size(0), -1), lambda x: x.view(1, -1)):
        cosine = F.cosine_similarity(view(grad), view(p), dim=1, eps=eps).abs()
        if cosine.max() < delta / math.sqrt(view(p).size(1)):
            p_n = p / view(p).norm(dim=1).view(expand).add(eps)
            perturb = perturb - p_n * view(p_n * perturb).sum(dim=1).view(expand)
            return perturb, wd_ratio
    return perturb, 1.0


def _official_adamp(params, grads_seq, lr, betas, eps, wd, delta, wd_ratio, nesterov):  # type: ignore[no-untyped-def]
    beta1, beta2 = betas
    ps = [p.clone() for p in params]
    ms = [torch.zeros_like(p) for p in ps]
    vs = [torch.zeros_like(p) for p in ps]
    for t, grads in enumerate(grads_seq, start=1):
        for i, (p, g) in enumerate(zip(ps, grads, strict=True)):
            ms[i] = ms[i] * beta1 + (1 - beta1) * g
            vs[i] = vs[i] * beta2 + (1 - beta2) * g * g
            denom = vs[i].sqrt() / math.sqrt(1 - beta2**t) + eps
            step_size = lr / (1 - beta1**t)
            perturb = (beta1 * ms[i] + (1 - beta1) * g) / denom if nesterov else ms[i] / denom
            ratio = 1.0
            if p.dim() > 1:
                perturb, ratio = _official_projection(p, g, perturb, delta, wd_ratio, eps)
            p = p * (1 - lr * wd * ratio)
            ps[i] = p - step_size * perturb
    return ps


def _scale_invariant_grads(ws: list[torch.Tensor], steps: int, seed: int) -> list[list[torch.Tensor]]:
    """Gradients orthogonal to every output row of the 2-D weight (as under a following normalization layer);
    the 1-D bias gets a plain random gradient."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        raw = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in ws]
        w = ws[0]
        unit = w / w.norm(dim=1, keepdim=True)
        raw[0] = raw[0] - unit * (unit * raw[0]).sum(dim=1, keepdim=True)
        out.append(raw)
    return out


@pytest.mark.parametrize("nesterov", [False, True])
def test_adamp_matches_the_official_update_on_scale_invariant_weights(nesterov: bool) -> None:
    """Float64, gradients orthogonal to each weight row at the start (so the channel test fires on step 1; later
    steps decide for themselves as the weights move): 6 steps equal the transcription."""
    torch.manual_seed(0)
    ws = [torch.randn(6, 5, dtype=torch.float64), torch.randn(6, dtype=torch.float64)]
    grads = _scale_invariant_grads(ws, 6, seed=1)
    params = [nn.Parameter(w.clone()) for w in ws]
    opt = AdamP(params, lr=1e-2, weight_decay=0.1, nesterov=nesterov)
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = g.clone()
        opt.step()
    expected = _official_adamp(ws, grads, 1e-2, (0.9, 0.999), 1e-8, 0.1, 0.1, 0.1, nesterov)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)
    # the projection fired: the first step left each row's norm nearly unchanged (radial part removed)


def test_projection_removes_the_radial_part_and_reports_it() -> None:
    torch.manual_seed(2)
    w = torch.randn(4, 7, dtype=torch.float64)
    unit = w / w.norm(dim=1, keepdim=True)
    g = torch.randn(4, 7, dtype=torch.float64)
    g = g - unit * (unit * g).sum(1, keepdim=True)
    u = torch.randn(4, 7, dtype=torch.float64)
    out, hit = project_radial(w, g, u, 0.1, 1e-8)
    assert bool(hit)
    # radial part gone up to the eps in Ŵ = W/(‖W‖ + eps) (the unprojected one is O(1))
    torch.testing.assert_close((out * unit).sum(1), torch.zeros(4, dtype=torch.float64), atol=1e-7, rtol=0)
    assert (u * unit).sum(1).abs().min() > 1e-3
    out2, hit2 = project_radial(w, w.clone(), u, 0.1, 1e-8)  # gradient along the weight: not scale-invariant
    assert not bool(hit2) and torch.equal(out2, u)


def test_adamp_is_torch_adamw_bitwise_when_nothing_is_scale_invariant() -> None:
    """Random weights and gradients (|cos| far above δ/sqrt(n)): every step bitwise torch.optim.AdamW."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    twin = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    ours = AdamP(model.parameters(), lr=1e-2, weight_decay=0.05, delta=1e-6)
    ref = torch.optim.AdamW(twin, lr=1e-2, weight_decay=0.05, foreach=False)
    g = torch.Generator().manual_seed(4)
    for _ in range(10):
        for p, q in zip(model.parameters(), twin, strict=True):
            p.grad = torch.randn(p.shape, generator=g) + p.detach()  # correlated with the weight
            q.grad = p.grad.clone()
        ours.step()
        ref.step()
        for p, q in zip(model.parameters(), twin, strict=True):
            assert torch.equal(p.detach(), q.detach())


def test_adamp_agrees_with_pytorch_optimizer() -> None:
    """pytorch_optimizer 4.1.0's AdamP puts eps on the raw sqrt(v) (O(eps) apart); a BatchNorm'ed linear layer
    (scale-invariant weight) trained 15 steps stays within 1e-5 of it (moves of ~0.1)."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    twin = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    ours = AdamP(model.parameters(), lr=1e-2, weight_decay=0.01)
    theirs = pytorch_optimizer.AdamP(twin, lr=1e-2, weight_decay=0.01)
    g = torch.Generator().manual_seed(6)
    for _ in range(15):
        x, y = torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)
        model.zero_grad()
        (model(x) - y).square().mean().backward()
        for p, q in zip(model.parameters(), twin, strict=True):
            q.grad = p.grad.clone()
        ours.step()
        theirs.step()
    for p, q in zip(model.parameters(), twin, strict=True):  # the parameters moved by ~0.1 over the run
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-4, atol=1e-5)
    first = model[0].weight
    assert first.norm(dim=1).sub(twin[0].norm(dim=1)).abs().max() < 1e-5


def test_sgdp_matches_the_official_update_and_is_sgd_elsewhere() -> None:
    torch.manual_seed(7)
    ws = [torch.randn(5, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    grads = _scale_invariant_grads(ws, 5, seed=8)
    params = [nn.Parameter(w.clone()) for w in ws]
    opt = SGDP(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = g.clone()
        opt.step()
    ps = [w.clone() for w in ws]
    bufs = [torch.zeros_like(w) for w in ws]
    for gs in grads:
        for i, g in enumerate(gs):
            bufs[i] = bufs[i] * 0.9 + g
            d = g + 0.9 * bufs[i]
            ratio = 1.0
            if ps[i].dim() > 1:
                d, ratio = _official_projection(ps[i], g, d, 0.1, 0.1, 1e-8)
            ps[i] = ps[i] * (1 - 0.1 * 1e-2 * ratio / (1 - 0.9)) - 0.1 * d
    for p, e in zip(params, ps, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)
    # not scale-invariant, no decay: torch SGD (Nesterov) within rounding
    torch.manual_seed(9)
    a = nn.Parameter(torch.randn(6, 3))
    b = nn.Parameter(a.detach().clone())
    sgdp = SGDP([a], lr=0.05, momentum=0.9, nesterov=True, delta=1e-6)
    sgd = torch.optim.SGD([b], lr=0.05, momentum=0.9, nesterov=True)
    for _ in range(8):
        a.grad = torch.randn(6, 3) + a.detach()
        b.grad = a.grad.clone()
        sgdp.step()
        sgd.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_bad_arguments_name_the_argument() -> None:
    p = [nn.Parameter(torch.ones(3, 3))]
    for cls, kwargs, name in [
        (AdamP, {"delta": -1.0}, "delta"),
        (AdamP, {"wd_ratio": -0.1}, "wd_ratio"),
        (AdamP, {"betas": (0.9, 1.0)}, "betas"),
        (AdamP, {"nesterov": "yes"}, "nesterov"),
        (SGDP, {"momentum": 1.0}, "momentum"),
        (SGDP, {"dampening": 2.0}, "dampening"),
        (SGDP, {"eps": 0.0}, "eps"),
    ]:
        with pytest.raises(ValueError, match=name):
            cls(p, **kwargs)
