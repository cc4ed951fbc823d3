"""Hardening of every optimizer in the registry (issue 11): copies, odd parameters, ``torch.compile``, the skip.

Each test runs over the whole registry (or every optimizer of ours where torch's baselines do not apply) and
compares against an independent run: the uncopied optimizer, the same tensor with ``requires_grad=True``, the
model without the empty parameters, the eager step.
"""

from __future__ import annotations

import copy
import inspect
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from precond.linalg import SlidingWindow, window_new
from precond.optim import REGISTRY, _common, available, create
from precond.optim._common import PrecondOptimizer
from precond.optim.mfac import block_shape, mfac_step_
from tests.problems import batches, mlp, state_tensors

#: One name per algorithm: the registry's option variants (``soap_drift`` ...) are SOAP's class with an option
#: on, covered by SOAP's own option tests (tests/optim/test_soap_hot_paths.py), not rerun here.
ALL = available(variants=False)
OURS = ["lion", "soap", "shampoo", "muon", "mfac"]
#: Small enough that the runs below pass SOAP/Shampoo refreshes (every 10 steps) and fill M-FAC's window.
SETTINGS: dict[str, dict[str, Any]] = {"mfac": {"num_grads": 4}}


def _assert_same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer, what: str) -> None:
    left, right = dict(state_tensors(a.state_dict()["state"])), dict(state_tensors(b.state_dict()["state"]))
    assert left.keys() == right.keys(), f"{what}: state entries differ: {sorted(left.keys() ^ right.keys())}"
    for path, x in left.items():
        assert x.dtype == right[path].dtype and torch.equal(x, right[path]), f"{what}: state {path} differs"


def _assert_same_params(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.shape == y.shape and torch.equal(x, y), f"{what}: parameter {i} differs"


def _backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad()
    (model(x) - y).square().mean().backward()


# ---------------------------------------------------------------------------------------------- copy / pickle
COPIES: dict[str, Callable[[Any], Any]] = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
}


@pytest.mark.parametrize("before", [0, 12], ids=["fresh", "after-12"])
@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("name", ALL)
def test_copied_optimizer_steps_exactly_like_the_original(name: str, how: str, before: int) -> None:
    """Step 12 times (past SOAP/Shampoo's first refresh, M-FAC's window full, Muon's AdamW group in use), copy
    model and optimizer together, then step both 12 more times on the same gradients: bitwise equal."""
    model = mlp()
    opt = create(name, model, **SETTINGS.get(name, {}))
    data = batches(model, before + 12)
    for x, y in data[:before]:
        _backward(model, x, y)
        opt.step()
    twin, twin_opt = COPIES[how]((model, opt))
    assert type(twin_opt) is type(opt)
    _assert_same_state(twin_opt, opt, f"{name} right after {how}")
    for x, y in data[before:]:
        _backward(model, x, y)
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            assert p.grad is not None
            q.grad = p.grad.clone()
        opt.step()
        twin_opt.step()
    _assert_same_params(list(twin.parameters()), list(model.parameters()), f"{name} {how} after {before} steps")
    _assert_same_state(twin_opt, opt, f"{name} {how} after {before} steps")
    if name == "muon" and before:
        routes = {"exp_avg" in s for s in opt.state.values()}
        assert routes == {True, False}, "the Muon run must use both its Muon and its AdamW parameters"


# ---------------------------------------------------------------------------------------------- requires_grad
def _fixed_grads(shapes: list[tuple[int, ...]], steps: int, seed: int = 0) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]


def _run(
    name: str, params: list[torch.Tensor], grads: list[list[torch.Tensor]], groups: bool = False, **extra: Any
) -> list[torch.Tensor]:
    """Step ``name`` over ``params`` (one group, or one group each) with the given gradients; final params."""
    spec: Any = [{"params": [p]} for p in params] if groups else params
    opt = create(name, spec, **{**SETTINGS.get(name, {}), **extra})
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("name", ALL)
def test_tensor_with_grad_but_no_requires_grad_is_updated(name: str) -> None:
    """Like ``torch.optim.AdamW``, a tensor with a ``.grad`` is a parameter whatever ``requires_grad`` says:
    25 steps (past the refreshes) are bitwise those of the same tensor with ``requires_grad=True``."""
    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.randn(3)]
    grads = _fixed_grads([(4, 3), (3,)], 25)
    trainable = _run(name, [t.clone().requires_grad_(True) for t in start], grads)
    frozen = [start[0].clone(), start[1].clone().requires_grad_(True)]
    assert not frozen[0].requires_grad
    stepped = _run(name, frozen, grads)
    assert not torch.equal(stepped[0], start[0]), f"{name}: the requires_grad=False tensor did not move"
    _assert_same_params(stepped, trainable, f"{name} with requires_grad=False")


# ---------------------------------------------------------------------------------------------- empty params
@pytest.mark.parametrize("placement", ["same-group", "own-group"])
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0,), (2, 0, 4)], ids=str)
@pytest.mark.parametrize("name", OURS)
def test_empty_parameters_are_left_alone(name: str, shape: tuple[int, ...], placement: str) -> None:
    """A zero-element parameter (with a gradient) next to normal ones, in their group or alone in its own: 25
    steps (past Shampoo's root and SOAP's basis refreshes) run, it stays empty, and the other parameters are
    bitwise those of the run without it.  Muon runs with ``scale="shape"`` (``rows/cols`` would divide by 0)."""
    extra = {"scale": "shape"} if name == "muon" else {}
    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.randn(3), torch.randn(5, 4)]
    grads = _fixed_grads([(4, 3), (3,), (5, 4)], 25)
    without = _run(name, [t.clone().requires_grad_() for t in start], grads, **extra)
    empty = torch.zeros(shape, requires_grad=True)
    params = [t.clone().requires_grad_() for t in start]
    if placement == "same-group":
        opt = create(name, [params[0], empty, *params[1:]], **{**SETTINGS.get(name, {}), **extra})
    else:
        opt = create(name, [{"params": params}, {"params": [empty]}], **{**SETTINGS.get(name, {}), **extra})
    for step in grads:
        empty.grad = torch.zeros(shape)
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()
    assert empty.shape == shape
    _assert_same_params([p.detach() for p in params], without, f"{name} with an empty {shape} ({placement})")


# ---------------------------------------------------------------------------------------------- first-step skip
@pytest.mark.parametrize("name", OURS)
def test_skipped_first_step_is_a_no_op_and_training_goes_on(name: str) -> None:
    """A non-finite gradient on the very first step (no state yet, step counters at 0) is skipped: parameters
    bitwise unchanged and finite (Muon's AdamW part used to divide 0/0 here and write NaN); the next steps are
    those of a run that never saw it."""
    model = mlp()
    reference = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    opt = create(name, model, **SETTINGS.get(name, {}))
    ref_opt = create(name, reference, **SETTINGS.get(name, {}))
    data = batches(model, 4)
    _backward(model, *data[0])
    grad = model[0].weight.grad  # type: ignore[index]
    assert grad is not None
    grad[0, 0] = float("inf")
    opt.step()
    _assert_same_params([p.detach() for p in model.parameters()], before, f"{name} after a skipped first step")
    for x, y in data[1:]:
        for m, o in ((model, opt), (reference, ref_opt)):
            _backward(m, x, y)
            o.step()
    after = [p.detach() for p in model.parameters()]
    assert all(torch.isfinite(p).all() for p in after), f"{name}: non-finite parameters after the skip"
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), f"{name}: no step after the skip"
    _assert_same_params(after, [p.detach() for p in reference.parameters()], f"{name} after a skipped first step")


# ---------------------------------------------------------------------------------------------- the skeleton
@pytest.mark.parametrize("name", OURS)
def test_every_optimizer_uses_the_shared_step(name: str) -> None:
    """The step skeleton (closure, gradients, finite flag) exists once, in ``PrecondOptimizer``."""
    opt = create(name, mlp())
    assert isinstance(opt, PrecondOptimizer)
    # torch wraps ``step`` per class (profiling hooks); unwrapped, every class has the base's
    assert inspect.unwrap(type(opt).step) is inspect.unwrap(PrecondOptimizer.step)


def _window(numel: int, m: int) -> SlidingWindow:
    blocks, dim = block_shape(numel, None)
    return window_new(m, dim, (blocks,))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_mfac_masked_step_is_bitwise_the_plain_one_or_a_no_op(momentum: float) -> None:
    """``mfac_step_(keep=...)``, M-FAC's sync-free skip: ``keep=True`` is bitwise ``keep=None`` (window, buffers,
    params), ``keep=False`` with a NaN gradient leaves all of them bitwise untouched, on an empty window and on
    a full one (the slot that would be overwritten wraps)."""
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,)]
    for steps in (0, 7):  # empty window; window of 3 wrapped past its first slot
        states = []
        for keep in (None, True, False):
            torch.manual_seed(1)
            params = [torch.randn(s) for s in shapes]
            window = _window(17, 3)
            buffers: list[torch.Tensor | None] = [torch.zeros(s) for s in shapes]
            g.manual_seed(2)
            for _ in range(steps):
                mfac_step_(
                    params,
                    [torch.randn(s, generator=g) for s in shapes],
                    window,
                    buffers,
                    lr=0.1,
                    damping=1e-2,
                    momentum=momentum,
                    weight_decay=0.01,
                )
            snapshot = [t.clone() for t in (*params, *window, *buffers) if t is not None]
            grads: list[torch.Tensor | None] = [torch.randn(s, generator=g) for s in shapes]
            if keep is False:
                grads[0][1, 2] = float("nan")  # type: ignore[index]
            flag = None if keep is None else torch.tensor(keep)
            mfac_step_(
                params, grads, window, buffers, lr=0.1, damping=1e-2, momentum=momentum, weight_decay=0.01, keep=flag
            )
            after = [t.clone() for t in (*params, *window, *buffers) if t is not None]
            if keep is False:
                for i, (a, b) in enumerate(zip(after, snapshot, strict=True)):
                    assert torch.equal(a, b), f"tensor {i} changed on a masked-off step (after {steps} steps)"
            states.append(after)
        for i, (a, b) in enumerate(zip(states[0], states[1], strict=True)):
            assert torch.equal(a, b), f"tensor {i}: keep=True differs from keep=None (after {steps} steps)"


# ---------------------------------------------------------------------------------------------- torch.compile
#: ``torch.compile(opt.step)`` refused with a message saying what to do (the factored optimizers pick their
#: refresh schedule and resolve the non-finite flag on the host), and what that message must contain.
COMPILE_REFUSED = {"soap": "compile=True", "shampoo": "uncompiled"}
COMPILE_SUPPORTED = ["lion", "muon", "mfac"]


def test_compile_lists_cover_every_optimizer_of_ours() -> None:
    assert sorted([*COMPILE_REFUSED, *COMPILE_SUPPORTED]) == sorted(OURS)
    for name in OURS:
        hint = type(create(name, mlp()))._compile_hint  # type: ignore[attr-defined]
        assert (hint is not None) == (name in COMPILE_REFUSED), name


@pytest.mark.parametrize("name", sorted(COMPILE_REFUSED))
def test_torch_compile_of_step_says_what_to_do(name: str) -> None:
    """Was a bare ``AssertionError`` (``assert self._buckets is not None``) at the first step for SOAP and at
    the first root step for Shampoo; now an error before anything changes, naming the optimizer and the fix."""
    torch._dynamo.reset()
    model = mlp()
    opt = create(name, model)
    before = [p.detach().clone() for p in model.parameters()]
    _backward(model, *batches(model, 1)[0])
    with pytest.raises(RuntimeError, match=COMPILE_REFUSED[name]) as info:
        torch.compile(opt.step)()
    assert "torch.compile" in str(info.value) and type(opt).__name__ in str(info.value)
    _assert_same_params([p.detach() for p in model.parameters()], before, f"{name} after the refused step")
    assert not opt.state or all("calls" not in s or s["calls"] == 0 for s in opt.state.values())
    opt.step()  # the eager step still works
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPILE_SUPPORTED)
def test_torch_compile_of_step_matches_the_eager_step(name: str) -> None:
    """Lion, Muon and M-FAC trace (graph breaks where the window update syncs): 8 compiled steps agree with
    8 eager ones to float32 rounding (fused kernels round differently; M-FAC amplifies it the most)."""
    torch._dynamo.reset()
    eager, traced = mlp(), mlp()
    opt, traced_opt = create(name, eager, **SETTINGS.get(name, {})), create(name, traced, **SETTINGS.get(name, {}))
    step = torch.compile(traced_opt.step)
    for x, y in batches(eager, 8):
        for model in (eager, traced):
            _backward(model, x, y)
        opt.step()
        step()
    for p, q in zip(traced.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- the CPU fast path
@pytest.mark.parametrize("name", [n for n in ALL if issubclass(REGISTRY[n].load(), PrecondOptimizer)])
def test_masked_kept_steps_are_bitwise_the_unmasked_ones(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finite CPU step takes the unmasked path (``host_resolved``); an accelerator's flag stays on the device
    and takes the masked one.  Forced onto the masked path on CPU, 14 steps (past SOAP/Shampoo's refresh and a full
    M-FAC window) with one non-finite step among them give bitwise the same parameters and state."""

    def run(masked_path: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = mlp()
        opt = create(name, model, **SETTINGS.get(name, {}))
        with monkeypatch.context() as m:
            if masked_path:
                m.setattr(_common, "host_resolved", lambda ok: ok)
            for i, (x, y) in enumerate(batches(model, 14)):
                _backward(model, x, y)
                if i == 6:
                    next(model.parameters()).grad[0, 0] = float("nan")
                opt.step()
        return model, opt

    (plain, plain_opt), (masked, masked_opt) = run(False), run(True)
    _assert_same_params(list(masked.parameters()), list(plain.parameters()), f"{name} masked vs unmasked")
    _assert_same_state(masked_opt, plain_opt, f"{name} masked vs unmasked")


@pytest.mark.parametrize("name", [n for n in ALL if issubclass(REGISTRY[n].load(), PrecondOptimizer)])
def test_nonfinite_off_is_the_default_step_without_the_check(name: str) -> None:
    """``nonfinite="off"`` (torch.optim's behaviour): on finite gradients bitwise the default's 14 steps; a
    non-finite gradient is not caught, so it reaches the parameters or the state (Lion: ``sign(NaN) = 0`` keeps
    the parameters and poisons the momentum), or a solver downstream raises on it (M-FAC's Cholesky)."""

    def run(**kw: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = mlp()
        opt = create(name, model, **SETTINGS.get(name, {}), **kw)
        for x, y in batches(model, 14):
            _backward(model, x, y)
            opt.step()
        return model, opt

    (plain, plain_opt), (off, off_opt) = run(), run(nonfinite="off")
    _assert_same_params(list(off.parameters()), list(plain.parameters()), f"{name} nonfinite='off' vs default")
    _assert_same_state(off_opt, plain_opt, f"{name} nonfinite='off' vs default")
    x, y = batches(off, 1, seed=5)[0]
    _backward(off, x, y)
    for p in off.parameters():
        assert p.grad is not None
        p.grad.fill_(float("nan"))
    try:
        off_opt.step()
    except ValueError as err:
        assert "non-finite" in str(err)
        return
    tensors = [*off.parameters(), *(t for _, t in state_tensors(off_opt.state_dict()["state"]))]
    assert not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()), f"{name}: NaN caught"
