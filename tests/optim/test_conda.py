"""Conda against its oracles: P = I is torch AdamW bitwise; a float64 transcription of the official update;
pytorch_optimizer.Conda where the semantics agree; routing, refresh cadence and the rotated second moment."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from precond.optim import Conda, conda_step_

SHAPES = [(7, 4), (3, 6)]  # right (rows >= cols) and left projection


def _grads(shape: tuple[int, int], steps: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(steps)]


@pytest.mark.parametrize("shape", SHAPES)
def test_identity_basis_is_torch_adamw_bitwise(shape: tuple[int, int]) -> None:
    """``conda_step_`` with ``P = I`` kept (no refresh) and ``scale = 1``: every step bitwise AdamW (foreach=False)."""
    torch.manual_seed(0)
    w = torch.randn(shape)
    ref = nn.Parameter(w.clone())
    adamw = torch.optim.AdamW([ref], lr=3e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, foreach=False)
    p = w.clone()
    m, v, basis, step = torch.zeros(shape), torch.zeros(shape), torch.eye(min(shape)), torch.zeros(())
    for grad in _grads(shape, 8):
        ref.grad = grad.clone()
        adamw.step()
        conda_step_(
            [p], [grad], [m], [v], [basis], [step],
            lr=3e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, scale=1.0, refresh=False,
        )  # fmt: skip
        assert torch.equal(p, ref.detach())


def _official(w: torch.Tensor, grads: list[torch.Tensor], lr: float, betas: tuple[float, float], eps: float,
              wd: float, gap: int, scale: float) -> torch.Tensor:  # fmt: skip
    """Float64 transcription of jie040109/Conda (conda_torch, proj_type 'std'): m in original coordinates, SVD of
    m when the 0-based step index is a multiple of ``gap``, v of the rotated gradient, eps on the raw sqrt(v),
    step ``lr·sqrt(1 − β2ᵗ)/(1 − β1ᵗ)``, decoupled decay after the update."""
    w = w.double().clone()
    beta1, beta2 = betas
    m = torch.zeros_like(w)
    v = None
    right = w.shape[0] >= w.shape[1]
    p_mat = None
    for t, grad in enumerate(grads):
        g = grad.double()
        m = beta1 * m + (1 - beta1) * g
        if t % gap == 0:
            u, _, vh = torch.linalg.svd(m, full_matrices=False)
            p_mat = vh if right else u
        g_r = g @ p_mat.T if right else p_mat.T @ g
        m_r = m @ p_mat.T if right else p_mat.T @ m
        v = (1 - beta2) * g_r**2 if v is None else beta2 * v + (1 - beta2) * g_r**2
        u_r = m_r / (v.sqrt() + eps)
        update = scale * (u_r @ p_mat if right else p_mat @ u_r)
        step = lr * (1 - beta2 ** (t + 1)) ** 0.5 / (1 - beta1 ** (t + 1))
        w = w - step * update
        w = w - lr * wd * w
    return w


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_a_float64_transcription_of_the_official_update(shape: tuple[int, int]) -> None:
    """Float64 Conda, 12 steps with refreshes at steps 1, 6, 11 (gap 5): equal to the official update within the
    documented differences (eps on the bias-corrected sqrt(v), decay before the update: O(eps), O(lr²λ))."""
    torch.manual_seed(1)
    w0 = torch.randn(shape, dtype=torch.float64)
    grads = _grads(shape, 12, torch.float64, seed=2)
    p = nn.Parameter(w0.clone())
    opt = Conda([{"params": [p], "matrix": True}], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0, update_proj_gap=5,
                scale=0.25)  # fmt: skip
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
    expected = _official(w0, grads, 1e-2, (0.9, 0.99), 1e-8, 0.0, 5, 0.25)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-7, atol=1e-9)
    assert not torch.allclose(w0, expected)
    # with weight decay the orders differ by O(lr²λ) per step only
    p2 = nn.Parameter(w0.clone())
    opt2 = Conda([{"params": [p2], "matrix": True}], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, update_proj_gap=5)
    for grad in grads:
        p2.grad = grad.clone()
        opt2.step()
    expected2 = _official(w0, grads, 1e-2, (0.9, 0.99), 1e-8, 0.1, 5, 1.0)
    torch.testing.assert_close(p2.detach(), expected2, rtol=0, atol=12 * (1e-2) ** 2 * 0.1 * 2)


@pytest.mark.parametrize("shape", SHAPES)
def test_agrees_with_pytorch_optimizer_conda(shape: tuple[int, int]) -> None:
    """pytorch_optimizer 4.1.0's Conda refreshes on steps 1, T, 2T (ours, as the official, on 1, T+1, ...): with a
    single refresh in the run the two agree to float32 rounding (its eps is on the raw sqrt(v): O(eps))."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    torch.manual_seed(3)
    w0 = torch.randn(shape)
    ours, theirs = nn.Parameter(w0.clone()), nn.Parameter(w0.clone())
    a = Conda([{"params": [ours], "matrix": True}], lr=1e-2, update_proj_gap=100, scale=0.5)
    b = pytorch_optimizer.Conda([theirs], lr=1e-2, update_proj_gap=100, scale=0.5)
    for grad in _grads(shape, 30, seed=4):
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours.detach(), w0, atol=1e-3)


def test_refresh_cadence_is_the_official_one() -> None:
    """The basis changes on steps 1, T + 1, 2T + 1 (0-based index multiple of T) and at no other step."""
    p = nn.Parameter(torch.randn(6, 4))
    opt = Conda([{"params": [p], "matrix": True}], update_proj_gap=3)
    changed = []
    for t, grad in enumerate(_grads((6, 4), 8, seed=5), start=1):
        before = opt.state[p]["basis"].clone() if opt.state[p] else torch.eye(4)
        p.grad = grad
        opt.step()
        changed.append(t) if not torch.equal(opt.state[p]["basis"], before) else None
    assert changed == [1, 4, 7]
    basis = opt.state[p]["basis"]
    torch.testing.assert_close(basis @ basis.T, torch.eye(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_rotate_moment_carries_v_into_the_new_basis(shape: tuple[int, int]) -> None:
    """On a refresh with a zero gradient, ``v ← β2 · v (R∘R)``: R∘R is doubly stochastic, so the total is
    ``β2`` times the old one; without the option v is only decayed (entrywise ``β2 v``)."""
    torch.manual_seed(6)
    rows, cols = shape
    short = min(shape)
    v_shape = (rows, cols)
    basis = torch.linalg.qr(torch.randn(short, short)).Q
    for rotate in (False, True):
        p = torch.randn(shape)
        m = torch.randn(shape)
        v = torch.rand(v_shape)
        v0 = v.clone()
        conda_step_(
            [p], [torch.zeros(shape)], [m], [v], [basis.clone()], [torch.ones(())],
            lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, scale=1.0, refresh=True, rotate_moment=rotate,
        )  # fmt: skip
        if rotate:
            torch.testing.assert_close(v.sum(), 0.99 * v0.sum(), rtol=1e-5, atol=0)
            assert not torch.allclose(v, 0.99 * v0)
        else:
            torch.testing.assert_close(v, 0.99 * v0)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.mlp = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10)


def test_routing_by_name_projects_hidden_matrices_only() -> None:
    model = _Tiny()
    opt = Conda(model, lr=1e-2)
    x = torch.randint(0, 10, (4,))
    model.head(model.mlp(model.embed(x))).square().mean().backward()
    opt.step()
    projected = {n for n, p in model.named_parameters() if "basis" in opt.state[p]}
    assert projected == {"mlp.weight"}
    assert all("exp_avg_sq" in opt.state[p] for p in model.parameters())


def test_bad_arguments_name_the_argument() -> None:
    p = [nn.Parameter(torch.ones(3, 3))]
    for kwargs, name in [({"update_proj_gap": 0}, "update_proj_gap"), ({"scale": -1.0}, "scale"),
                         ({"eps": 0.0}, "eps"), ({"rotate_moment": 1}, "rotate_moment")]:  # fmt: skip
        with pytest.raises(ValueError, match=name):
            Conda(p, **kwargs)
    with pytest.raises(ValueError, match="matrix=True"):
        Conda([{"params": [nn.Parameter(torch.ones(3))], "matrix": True}])
