"""Shampoo against dense float64 closed forms and against the methods it degenerates to."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from precond.optim import Shampoo
from tests.problems import batches, mlp, train


def _root(f: torch.Tensor, exponent: float, eps: float) -> torch.Tensor:
    """Oracle: ``(F + eps·λ_max·I)^(-exponent)`` in float64 via ``eigh``."""
    values, vectors = torch.linalg.eigh(f.double())
    values = values.clamp_min(0.0)
    damped = values + eps * values.max() + 1e-30
    return (vectors * damped.pow(-exponent)) @ vectors.T


def _mode_product(x: torch.Tensor, mats: list[torch.Tensor]) -> torch.Tensor:
    for i, m in enumerate(mats):
        x = torch.movedim(torch.tensordot(m, x, dims=([1], [i])), 0, i)
    return x


def _gram(g: torch.Tensor, i: int) -> torch.Tensor:
    unfolded = g.movedim(i, 0).reshape(g.shape[i], -1)
    return unfolded @ unfolded.T


def _oracle_trajectory(
    w0: torch.Tensor, grads: list[torch.Tensor], lr: float, beta1: float, beta2: float, eps: float, exponent: float
) -> torch.Tensor:
    """Shampoo without grafting, roots every step from step 1 (float64): ``W -= lr·R_0 ×_0 … M̂``."""
    w = w0.double().clone()
    factors = [torch.zeros(d, d, dtype=torch.float64) for d in w.shape]
    m = torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g.double()
        factors = [beta2 * f + (1 - beta2) * _gram(g, i) for i, f in enumerate(factors)]
        roots = [_root(f / (1 - beta2**t), exponent, eps) for f in factors]
        m = beta1 * m + (1 - beta1) * g
        w = w - lr * _mode_product(m / (1 - beta1**t), roots)
    return w


def _run_on_fixed_grads(w0: torch.Tensor, grads: list[torch.Tensor], **hparams: object) -> torch.Tensor:
    w = nn.Parameter(w0.clone())
    opt = Shampoo([w], **hparams)  # type: ignore[arg-type]
    for g in grads:
        w.grad = g.clone()
        opt.step()
    return w.detach()


@pytest.mark.parametrize(
    ("shape", "merge", "exponent"),
    [((6, 5), "fan_in", None), ((6, 5), "fan_in", 0.5), ((3, 4, 5), "none", None), ((7, 3), "fan_in", 0.25)],
)
def test_matches_dense_inverse_roots(shape, merge, exponent):
    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(shape, generator=g)
    grads = [torch.randn(shape, generator=g) for _ in range(6)]
    lr, beta1, beta2, eps = 0.05, 0.5, 0.9, 1e-4
    ours = _run_on_fixed_grads(
        w0,
        grads,
        lr=lr,
        betas=(beta1, beta2),
        eps=eps,
        weight_decay=0.0,
        precondition_frequency=1,
        start_preconditioning_step=1,
        inverse_exponent=exponent,
        grafting="none",
        merge_dims=merge,
    )
    k = len(shape)
    expected = _oracle_trajectory(w0, grads, lr, beta1, beta2, eps, exponent or 1 / (2 * k))
    torch.testing.assert_close(ours.double(), expected, rtol=2e-4, atol=2e-5)


def test_first_step_is_the_closed_form_quarter_roots():
    """A single matrix gradient: ``L = G Gᵀ``, ``R = Gᵀ G`` and the step ``L^{-1/4} G R^{-1/4}``."""
    g = torch.Generator().manual_seed(0)
    w0, grad = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ours = _run_on_fixed_grads(
        w0,
        [grad],
        lr=1.0,
        betas=(0.0, 0.0),
        eps=1e-6,
        weight_decay=0.0,
        start_preconditioning_step=1,
        grafting="none",
    )
    gd = grad.double()
    expected = w0.double() - _root(gd @ gd.T, 0.25, 1e-6) @ gd @ _root(gd.T @ gd, 0.25, 1e-6)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-4, atol=1e-5)
    # the control: a full-rank G has L^{-1/4} G R^{-1/4} = U Vᵀ (the polar factor), far from G itself
    u, _, vh = torch.linalg.svd(gd, full_matrices=False)
    torch.testing.assert_close(ours.double(), w0.double() - u @ vh, rtol=1e-3, atol=1e-3)


def _pair(model_seed: int = 0) -> tuple[nn.Module, nn.Module]:
    return mlp(seed=model_seed), mlp(seed=model_seed)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_before_preconditioning_adam_grafting_is_adamw(weight_decay):
    ours_model, torch_model = _pair()
    data = batches(ours_model, 15)
    ours = Shampoo(
        ours_model.parameters(),
        lr=1e-2,
        betas=(0.9, 0.95),
        grafting_beta2=0.99,
        grafting_eps=1e-8,
        weight_decay=weight_decay,
        start_preconditioning_step=10_000,
    )
    ref = torch.optim.AdamW(torch_model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=weight_decay)
    for a, b in zip(train(ours_model, ours, data), train(torch_model, ref, data), strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


def test_before_preconditioning_adagrad_and_sgd_grafting_are_torch_adagrad_and_sgd():
    for grafting, make_ref in [
        ("adagrad", lambda ps: torch.optim.Adagrad(ps, lr=0.05, eps=1e-8)),
        ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.05)),
    ]:
        ours_model, torch_model = _pair()
        data = batches(ours_model, 10)
        ours = Shampoo(
            ours_model.parameters(),
            lr=0.05,
            betas=(0.0, 0.95),
            grafting=grafting,
            grafting_eps=1e-8,
            weight_decay=0.0,
            start_preconditioning_step=10_000,
        )
        expected = train(torch_model, make_ref(torch_model.parameters()), data)
        for a, b in zip(train(ours_model, ours, data), expected, strict=True):
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=f"grafting={grafting}")


def test_grafting_gives_each_block_the_grafted_norm_and_shampoos_direction():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(6, 5, generator=g)
    grads = [torch.randn(6, 5, generator=g) for _ in range(3)]
    common = dict(lr=0.1, betas=(0.0, 0.9), weight_decay=0.0, precondition_frequency=1, start_preconditioning_step=1)
    grafted = _run_on_fixed_grads(w0, grads[:1], grafting="sgd", **common) - w0
    raw = _run_on_fixed_grads(w0, grads[:1], grafting="none", **common) - w0
    # SGD grafting: the step has the gradient's norm ...
    torch.testing.assert_close(grafted.norm(), 0.1 * grads[0].norm(), rtol=1e-5, atol=0)
    # ... and the ungrafted step's direction (cosine 1), while the raw step's norm differs
    cosine = (grafted * raw).sum() / (grafted.norm() * raw.norm())
    assert cosine > 1 - 1e-5
    assert abs(raw.norm() / grafted.norm() - 1) > 0.05


def test_blocks_are_independent_shampoos():
    g = torch.Generator().manual_seed(2)
    w0 = torch.randn(8, 6, generator=g)
    grads = [torch.randn(8, 6, generator=g) for _ in range(4)]
    common = dict(lr=0.05, betas=(0.5, 0.9), weight_decay=0.0, precondition_frequency=1, start_preconditioning_step=1)
    blocked = _run_on_fixed_grads(w0, grads, max_precond_dim=4, grafting="none", **common)
    for rows in (slice(0, 4), slice(4, 8)):
        for cols in (slice(0, 3), slice(3, 6)):
            alone = _run_on_fixed_grads(w0[rows, cols], [gr[rows, cols] for gr in grads], grafting="none", **common)
            torch.testing.assert_close(blocked[rows, cols], alone, rtol=1e-5, atol=1e-6)


def test_roots_refresh_on_schedule_and_fall_back_when_eigh_fails(monkeypatch):
    model = mlp()
    opt = Shampoo(model.parameters(), precondition_frequency=3, start_preconditioning_step=2)
    weight = model[0].weight
    seen = []
    for x, y in batches(model, 9):
        before = opt.state[weight]["root"][0][0].clone() if weight in opt.state else None
        opt.zero_grad()
        (model(x) - y).square().mean().backward()
        opt.step()
        changed = before is not None and not torch.equal(before, opt.state[weight]["root"][0][0])
        seen.append(changed or (before is None and not torch.equal(opt.state[weight]["root"][0][0], torch.eye(12))))
    # roots computed at steps 2, 5, 8 (start, then every 3)
    assert seen == [False, True, False, False, True, False, False, True, False]

    def broken(*args, **kwargs):
        raise torch.linalg.LinAlgError("forced")

    monkeypatch.setattr(torch.linalg, "eigh", broken)
    kept = opt.state[weight]["root"][0][0].clone()
    for x, y in batches(model, 3, seed=5):
        opt.zero_grad()
        (model(x) - y).square().mean().backward()
        opt.step()
    assert torch.equal(opt.state[weight]["root"][0][0], kept)
    # one refresh (step 11) of both factors (left and right) kept the previous roots
    assert int(opt.state[weight]["root_fallbacks"][0]) == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_one_sided_when_a_dim_is_not_factored():
    """``blocking=False`` leaves a dim above ``max_precond_dim`` unrotated; the other side gets exponent 1/2."""
    g = torch.Generator().manual_seed(4)
    w0 = torch.randn(9, 3, generator=g)
    grads = [torch.randn(9, 3, generator=g) for _ in range(3)]
    ours = _run_on_fixed_grads(
        w0,
        grads,
        lr=0.1,
        betas=(0.0, 0.9),
        eps=1e-4,
        weight_decay=0.0,
        precondition_frequency=1,
        start_preconditioning_step=1,
        grafting="none",
        max_precond_dim=4,
        blocking=False,
    )
    w, f = w0.double(), torch.zeros(3, 3, dtype=torch.float64)
    for t, gr in enumerate(grads, start=1):
        gd = gr.double()
        f = 0.9 * f + 0.1 * gd.T @ gd
        w = w - 0.1 * gd @ _root(f / (1 - 0.9**t), 0.5, 1e-4)
    torch.testing.assert_close(ours.double(), w, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("betas", (0.9, 1.5)),
        ("eps", -1.0),
        ("start_preconditioning_step", 0),
        ("inverse_exponent", 0.0),
        ("grafting", "rmsprop"),
        ("grafting_beta2", 1.0),
        ("precondition_frequency", 0),
    ],
)
def test_bad_arguments_name_the_argument(name, value):
    with pytest.raises(ValueError, match=name):
        Shampoo(mlp().parameters(), **{name: value})
