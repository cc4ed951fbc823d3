"""Lion against a float64 transcription of the paper's pseudo-code, plus its dtype, non-finite and argument rules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from precond.optim import Lion
from precond.optim.lion import lion_step_
from tests.problems import batches, mlp


# ---------------------------------------------------------------------------------------------- the oracle
class ReferenceLion:
    """Chen et al. 2023 (arXiv 2302.06675), Algorithm 2, one parameter at a time, in float64::

    c_t = β1·m_{t−1} + (1 − β1)·g_t
    θ_t = θ_{t−1} − η·(sign(c_t) + λ·θ_{t−1})
    m_t = β2·m_{t−1} + (1 − β2)·g_t
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float], weight_decay: float):
        self.params, self.lr, self.betas, self.wd = params, lr, betas, weight_decay
        self.m = [torch.zeros_like(p, dtype=torch.float64) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for p, m in zip(self.params, self.m, strict=True):
            assert p.grad is not None
            g = p.grad.double()
            theta = p.double()
            c = beta1 * m + (1 - beta1) * g
            theta = theta - self.lr * (torch.sign(c) + self.wd * theta)
            m.copy_(beta2 * m + (1 - beta2) * g)
            p.copy_(theta)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model(x) - y).square().mean()


def _step(model: nn.Module, opt: torch.optim.Optimizer | ReferenceLion, x: torch.Tensor, y: torch.Tensor) -> None:
    for p in model.parameters():
        p.grad = None
    _loss(model, x, y).backward()
    opt.step()


def _clone(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _assert_equal(actual: list[torch.Tensor], expected: list[torch.Tensor], what: str) -> None:
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype, f"{what} {i}: dtype {a.dtype} != {e.dtype}"
        assert torch.equal(a, e), f"{what} {i} differs by {(a.double() - e.double()).abs().max().item():.3g}"


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_paper_algorithm_step_for_step(weight_decay: float) -> None:
    model = mlp().double()
    ref_model = copy.deepcopy(model)
    hp = dict(lr=3e-3, betas=(0.9, 0.99), weight_decay=weight_decay)
    opt = Lion(model.parameters(), **hp)  # type: ignore[arg-type]
    ref = ReferenceLion(list(ref_model.parameters()), **hp)  # type: ignore[arg-type]
    start = _clone(model)
    for t, (x, y) in enumerate(batches(model, 20)):
        _step(model, opt, x.double(), y.double())
        _step(ref_model, ref, x.double(), y.double())
        for i, (p, q) in enumerate(zip(model.parameters(), ref_model.parameters(), strict=True)):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=lambda m, t=t, i=i: f"step {t}, param {i}: {m}")
        for i, (p, m) in enumerate(zip(model.parameters(), ref.m, strict=True)):
            torch.testing.assert_close(opt.state[p]["exp_avg"], m, rtol=0, atol=1e-12, msg=f"step {t}, momentum {i}")
    moved = sum(float((p.detach() - s).abs().max()) for p, s in zip(model.parameters(), start, strict=True))
    assert moved > 0.01, "the parity run did not move the parameters"


def test_functional_step_matches_the_oracle() -> None:
    torch.manual_seed(3)
    params = [torch.randn(5, 3, dtype=torch.float64), torch.randn(7, dtype=torch.float64)]
    ref_params = [p.clone() for p in params]
    ref = ReferenceLion(ref_params, lr=0.01, betas=(0.8, 0.95), weight_decay=0.5)
    exp_avgs = [torch.zeros_like(p) for p in params]
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for q, g in zip(ref_params, grads, strict=True):
            q.grad = g
        lion_step_(params, grads, exp_avgs, lr=0.01, beta1=0.8, beta2=0.95, weight_decay=0.5)
        ref.step()
    for p, q, m, rm in zip(params, ref_params, exp_avgs, ref.m, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-14)
        torch.testing.assert_close(m, rm, rtol=0, atol=1e-14)


def test_every_coordinate_moves_by_lr() -> None:
    """With weight decay off, the first step is exactly ``−lr·sign(g)`` (m starts at zero)."""
    p = nn.Parameter(torch.tensor([0.5, -0.25, 2.0]))
    opt = Lion([p], lr=0.125)
    p.grad = torch.tensor([3.0, -1e-6, -40.0])
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([0.375, -0.125, 2.125]))


# ---------------------------------------------------------------------------------------------- sign(0)
def test_sign_of_zero_is_zero_no_move_except_decay() -> None:
    """``torch.sign(0) = 0``, as the paper's ``sign``: a coordinate with a zero interpolation (zero gradient and
    zero momentum) does not move, except for the weight decay; its momentum stays zero."""
    p = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    q = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    plain = Lion([p], lr=0.1)
    decayed = Lion([q], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        p.grad = torch.tensor([0.0, 1.0, 0.0])
        q.grad = torch.tensor([0.0, 1.0, 0.0])
        plain.step()
        decayed.step()
    assert p[0].item() == 1.0 and p[2].item() == 3.0, "zero-gradient coordinates moved"
    assert p[1].item() == pytest.approx(-2.3), "the coordinate with a gradient should move by lr per step"
    assert plain.state[p]["exp_avg"][0].item() == 0.0
    factor = (1 - 0.1 * 0.5) ** 3
    torch.testing.assert_close(q.detach()[[0, 2]], torch.tensor([1.0 * factor, 3.0 * factor]))


# ---------------------------------------------------------------------------------------------- bf16
def test_bf16_rounds_the_float32_update_once_and_keeps_float32_state() -> None:
    torch.manual_seed(0)
    p16 = nn.Parameter(torch.randn(8, 4).to(torch.bfloat16))
    p32 = nn.Parameter(p16.detach().float())
    opt16 = Lion([p16], lr=0.05, weight_decay=0.3)
    opt32 = Lion([p32], lr=0.05, weight_decay=0.3)
    for _ in range(4):
        g = torch.randn(8, 4).to(torch.bfloat16)
        p16.grad, p32.grad = g, g.float()
        opt16.step()
        opt32.step()
        assert opt16.state[p16]["exp_avg"].dtype == torch.float32
        assert torch.equal(opt16.state[p16]["exp_avg"], opt32.state[p32]["exp_avg"])
        assert torch.equal(p16.detach(), p32.detach().to(torch.bfloat16)), "bf16 step is not the rounded fp32 step"
        p32.data.copy_(p16.detach().float())  # continue both from the same (bf16-representable) point


def test_bf16_model_trains() -> None:
    model = mlp().to(torch.bfloat16)
    opt = Lion(model.parameters(), lr=3e-3)
    x, y = batches(model, 1)[0]
    x, y = x.to(torch.bfloat16), y.to(torch.bfloat16)
    with torch.no_grad():
        first = float(_loss(model, x, y))
    for _ in range(30):
        _step(model, opt, x, y)
    with torch.no_grad():
        last = float(_loss(model, x, y))
    assert last < 0.9 * first, f"bf16 loss went {first:.4g} -> {last:.4g}"
    assert all(opt.state[p]["exp_avg"].dtype == torch.float32 for p in model.parameters())


# ---------------------------------------------------------------------------------------------- non-finite
def _poisoned_run(nonfinite: str) -> tuple[nn.Module, Lion, list[torch.Tensor], list[torch.Tensor]]:
    model = mlp()
    opt = Lion(model.parameters(), lr=1e-2, weight_decay=0.1, nonfinite=nonfinite)
    data = batches(model, 3)
    for x, y in data[:2]:
        _step(model, opt, x, y)
    opt.zero_grad()
    _loss(model, *data[2]).backward()
    model[2].weight.grad[1, 3] = float("nan")  # type: ignore[index]
    params = _clone(model)
    states = [opt.state[p]["exp_avg"].clone() for p in model.parameters()]
    return model, opt, params, states


def test_skip_is_a_bitwise_no_op_and_counted() -> None:
    model, opt, params, states = _poisoned_run("skip")
    opt.step()
    _assert_equal(_clone(model), params, "parameter")
    _assert_equal([opt.state[p]["exp_avg"] for p in model.parameters()], states, "momentum")
    assert all(int(opt.state[p]["nonfinite_skips"]) == 1 for p in model.parameters())

    # the run continues exactly as if the poisoned step had never happened
    clean = mlp()
    clean_opt = Lion(clean.parameters(), lr=1e-2, weight_decay=0.1)
    data = batches(clean, 4)
    for x, y in [*data[:2], data[3]]:
        _step(clean, clean_opt, x, y)
    _step(model, opt, *data[3])
    _assert_equal(_clone(model), _clone(clean), "parameter after the skipped step")


def test_masked_steps_equal_unmasked_steps_bitwise() -> None:
    """The sync-free masking of ``nonfinite="skip"`` does not change an ordinary step by a single bit."""
    a, b = mlp(), mlp()
    opt_a = Lion(a.parameters(), lr=1e-2, weight_decay=0.1, nonfinite="skip")
    opt_b = Lion(b.parameters(), lr=1e-2, weight_decay=0.1, nonfinite="raise")
    for x, y in batches(a, 5):
        _step(a, opt_a, x, y)
        _step(b, opt_b, x, y)
    _assert_equal(_clone(a), _clone(b), "parameter")


def test_raise_leaves_everything_unchanged() -> None:
    model, opt, params, states = _poisoned_run("raise")
    with pytest.raises(ValueError, match="non-finite"):
        opt.step()
    _assert_equal(_clone(model), params, "parameter")
    _assert_equal([opt.state[p]["exp_avg"] for p in model.parameters()], states, "momentum")
    assert all(int(opt.state[p]["nonfinite_skips"]) == 0 for p in model.parameters())


def test_infinite_gradient_is_skipped_too() -> None:
    p = nn.Parameter(torch.ones(3))
    opt = Lion([p], lr=0.1)
    p.grad = torch.tensor([1.0, float("inf"), 1.0])
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3))
    assert torch.equal(opt.state[p]["exp_avg"], torch.zeros(3))


# ---------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"betas": (1.0, 0.99)}, "betas"),
        ({"betas": (0.9,)}, "betas"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"nonfinite": "ignore"}, "nonfinite"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Lion([nn.Parameter(torch.ones(2))], **kwargs)


def test_bad_param_group_is_rejected_and_named() -> None:
    opt = Lion([nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match=r"param group 1.*lr"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "lr": -1.0})
    assert len(opt.param_groups) == 1


def test_parameters_without_gradient_are_untouched() -> None:
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = Lion([a, b], lr=0.1, weight_decay=0.5)
    a.grad = torch.ones(2)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2)) and b not in opt.state
    opt.zero_grad()  # no gradient at all: a no-op
    assert opt.step() is None


# ---------------------------------------------------------------------------------------------- the CPU fast path
def test_cpu_batches_give_the_whole_list_step_bitwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cutting the tensor lists into cache-sized batches (tensors split into views, small ones grouped, a
    non-contiguous one kept whole) changes no bit of the step, with decay, masked and unmasked."""
    import precond.optim.lion as lion

    shapes = [(37, 29), (5,), (300, 7), (1,), (64, 64)]

    def run(batch: int, ok: torch.Tensor | None) -> list[torch.Tensor]:
        monkeypatch.setattr(lion, "CPU_BATCH", batch)
        gen = torch.Generator().manual_seed(5)
        params = [torch.randn(s, generator=gen) for s in shapes]
        params[2] = params[2].t().contiguous().t()  # a non-contiguous parameter: kept whole
        moms = [torch.randn(s, generator=gen) for s in shapes]
        for _ in range(4):
            grads = [torch.randn(s, generator=gen) for s in shapes]
            lion_step_(params, grads, moms, lr=1e-2, beta1=0.9, beta2=0.99, weight_decay=0.1, ok=ok)
        return params + moms

    for ok in (None, torch.tensor(True)):
        whole = run(1 << 30, ok)
        for batch in (8, 64, 1000):
            cut = run(batch, ok)
            assert all(torch.equal(a, b) for a, b in zip(cut, whole, strict=True)), f"batch {batch}, ok={ok}"


@pytest.mark.parametrize("budget", [1, 7, 64, 10_000])
def test_cache_sized_batches_cover_every_element_once(budget: int) -> None:
    from precond.optim._common import cache_sized_batches

    a = [torch.zeros(s) for s in [(13, 5), (0,), (3,), (200,), (1,)]]
    b = [torch.zeros_like(t) for t in a]
    batches = cache_sized_batches([a, b], budget)
    for x, y in batches:
        assert len(x) == len(y)
        assert sum(t.numel() for t in x) <= max(budget, max(t.numel() for t in x))
        for t, u in zip(x, y, strict=True):
            assert t.shape == u.shape
            t.add_(1.0)
            u.add_(2.0)
    assert all(torch.equal(t, torch.ones_like(t)) for t in a)
    assert all(torch.equal(t, torch.full_like(t, 2.0)) for t in b)


def test_a_huge_finite_gradient_is_a_step_not_a_skip() -> None:
    """Lion squares nothing: a finite gradient far beyond where a squared norm overflows still steps."""
    p = nn.Parameter(torch.ones(3))
    opt = Lion([p], lr=0.5)
    p.grad = torch.tensor([1e30, -3e38, 0.0])
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([0.5, 1.5, 1.0]))
    assert int(opt.state[p]["nonfinite_skips"]) == 0
