"""Issue 17's hot-path changes keep the math: Lion's fused ``lerp`` step and Shampoo's single scaling pass give
the trajectories of the code before them (``reference_hot_paths.py``) within float32 rounding."""

from __future__ import annotations

import pytest
import torch

from precond.optim import Shampoo, _shampoo_math, shampoo
from precond.optim.lion import lion_step_
from tests.optim.reference_hot_paths import lion_step_before_, shampoo_block_step_before_
from tests.problems import batches, mlp, train


def _lion_run(step, ok_pattern: list[bool], dtype: torch.dtype, wd: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    params = [torch.randn(17, 9, generator=g).to(dtype), torch.randn(9, generator=g).to(dtype)]
    sdt = torch.promote_types(dtype, torch.float32)
    moms = [torch.zeros(p.shape, dtype=sdt) for p in params]
    for ok in ok_pattern:
        grads = [torch.randn(p.shape, generator=g).to(dtype) for p in params]
        if not ok:
            grads[0][2, 3] = float("nan")
        step(params, grads, moms, lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=wd, ok=torch.tensor(ok))
    return params + moms


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_lion_step_is_the_old_step(dtype: torch.dtype) -> None:
    """30 steps with two skipped ones: parameters and momenta within rounding of the old mul/add step (a sign
    could only flip where the interpolation is within an ulp of zero; none does here)."""
    pattern = [True] * 12 + [False] + [True] * 10 + [False] + [True] * 6
    new = _lion_run(lion_step_, pattern, dtype, 0.1)
    old = _lion_run(lion_step_before_, pattern, dtype, 0.1)
    for a, b in zip(new, old, strict=True):
        assert a.dtype == b.dtype
        tol = 1e-6 if a.dtype != torch.bfloat16 else 1e-2
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_lion_skip_and_no_mask_agree() -> None:
    """``ok=True`` is the unmasked step bitwise; ``ok=False`` changes nothing."""
    a = _lion_run(lambda *x, ok, **k: lion_step_(*x, ok=None, **k), [True] * 5, torch.float32, 0.1)
    b = _lion_run(lion_step_, [True] * 5, torch.float32, 0.1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    params = [torch.randn(4, 3)]
    moms = [torch.randn(4, 3)]
    before = [params[0].clone(), moms[0].clone()]
    lion_step_(
        params,
        [torch.full((4, 3), float("inf"))],
        moms,
        lr=1.0,
        beta1=0.9,
        beta2=0.99,
        weight_decay=0.5,
        ok=torch.tensor(False),
    )
    assert torch.equal(params[0], before[0]) and torch.equal(moms[0], before[1])


@pytest.mark.parametrize("grafting", ["adam", "sgd", "none"])
def test_shampoo_trajectory_is_the_old_one(grafting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """25 steps (roots at 10 and 20) of the MLP: the new step function against the old one swapped in."""

    def run(step_fn) -> list[list[torch.Tensor]]:
        monkeypatch.setattr(shampoo, "shampoo_block_step_", step_fn)
        model = mlp()
        opt = Shampoo(model.parameters(), lr=3e-3, grafting=grafting)
        return train(model, opt, batches(model, 25))

    new = run(_shampoo_math.shampoo_block_step_)
    old = run(shampoo_block_step_before_)
    for step, (a, b) in enumerate(zip(new, old, strict=True)):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=f"{grafting}: step {step}")


def test_shampoo_sgd_grafting_does_not_scale_its_state_in_place() -> None:
    """With SGD grafting before the first root the direction *is* the momentum: the step must copy it."""
    model = mlp()
    opt = Shampoo(model.parameters(), lr=0.1, grafting="none")
    for x, y in batches(model, 2):
        opt.zero_grad()
        (model(x) - y).square().mean().backward()
        opt.step()
    p = next(model.parameters())
    m = opt.state[p]["exp_avg"][0].clone()
    g = p.grad.clone()
    opt.step()
    torch.testing.assert_close(opt.state[p]["exp_avg"][0], 0.95 * m + 0.05 * g.reshape(m.shape))
