"""Issue 18: SOAP's faster step keeps the math (against the verbatim old step of ``reference_soap_step.py``), and
the opt-in refresh options (``cholesky_qr``, ``drift_tolerance``, ``stagger_refresh``) are correct, close to the
default, resumable and copyable."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from precond.linalg import (
    accumulate_gram_,
    basis_drift,
    change_basis,
    contract_all_but,
    eigenbasis_refresh,
    project,
    project_back,
    refresh_eigenbasis,
)
from precond.linalg._eigen import _householder_q
from precond.optim import SOAP, soap
from tests.optim.reference_soap_step import refresh_eigenbasis_before, soap_block_step_before_
from tests.problems import batches, convnet, mlp, train

OPTIONS = {
    "cholesky_qr": dict(cholesky_qr=True),
    "drift": dict(drift_tolerance=0.1),
    "stagger": dict(stagger_refresh=True),
    "all": dict(cholesky_qr=True, drift_tolerance=0.1, stagger_refresh=True),
}


def _old_step(*args, cholesky_qr: bool = False, drift_tolerance: float = 0.0, **kwargs):
    assert not cholesky_qr and drift_tolerance == 0.0
    return soap_block_step_before_(*args, **kwargs)


def _lopsided(seed: int = 0) -> nn.Module:
    """An MLP with a short-and-wide head ([8, 20]: its right side takes the two-projection transport, its left
    side the rotation, like the benchmark's [10, 2048] head) after a [20, 12] layer (the other way round).
    Batch 64: every factor has full rank from step 3 on, before the first refresh."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 8))


def _small_conv(seed: int = 0) -> nn.Module:
    return convnet(seed)


# ---------------------------------------------------------------------------------------------- same math as before
# The old and the new step differ only by float rounding (the fused ``baddbmm`` factor update rounds differently
# from ``mul_`` + ``add_``; which bits differ depends on the CPU's BLAS kernels).  In float32 SOAP amplifies such
# a difference to O(lr) on the very first update, whatever the implementation:
# * a first gradient's factor ``R = GᵀG`` of a non-square ``G`` is rank-deficient, and ``eigh`` picks the basis
#   of its null space from rounding alone, while Adam's update is not invariant to rotations inside it;
# * in the default mode the first step projects ``G`` on its own singular vectors, ``Q_Lᵀ G Q_R = diag(σ)`` up
#   to float32 rounding (~1e-9..1e-6 here), and Adam's ``g/(|g| + eps)`` maps that noise to ±1;
# * float32 ``eigh`` moves eigenvectors by ~6e-8·‖A‖/gap, i.e. 1e-4 for the relative gaps ~1e-3 of a
#   Wishart factor.
# So the comparison runs the step function itself in float64 (SOAP keeps float32 state by design) on full-rank
# factors: there the two steps agree to ~1e-13, and a real change of the math is far outside the tolerance.
_F64_REL = 1e-9  # measured ≤ 3e-13; a 0.1% change of the factor EMA weight alone is caught by every case


def _assert_same(new: list[torch.Tensor | None], old: list[torch.Tensor | None], rel: float, msg: str) -> None:
    """Every tensor within ``rel`` of the old one, relative to the old tensor's largest entry."""
    assert len(new) == len(old), msg
    for i, (a, b) in enumerate(zip(new, old, strict=True)):
        if a is None or b is None:
            assert a is None and b is None, f"{msg}, output {i}"
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, f"{msg}, output {i}"
        scale = float(b.abs().max()) if b.is_floating_point() else 0.0
        torch.testing.assert_close(a, b, rtol=0, atol=rel * scale, msg=f"{msg}, output {i}")


def _drive(fn, shape: tuple[int, ...], factored: tuple[bool, ...], reference: bool) -> list[list[torch.Tensor | None]]:
    """24 calls of ``fn`` on two float64 blocks of ``shape``, on SOAP's schedule (refresh every 5 calls; the first
    call initialises; ordinary calls masked by ``ok`` as :class:`~precond.optim.SOAP` does, the 8th skipped as
    non-finite).  Factors start full rank (a Wishart seed, where SOAP starts from zero) so that no ``eigh`` or QR
    has a null space to fill with rounding.  Returns, per call, the increment and the whole state."""
    g = torch.Generator().manual_seed(sum(shape) + 7 * len(shape))
    dt = torch.float64
    factors = []
    for d, on in zip(shape, factored, strict=True):
        a = torch.randn(2, d, 3 * d, generator=g, dtype=dt)
        factors.append(a @ a.mT * (math.prod(shape) / d / (3 * d)) if on else None)  # the gradient Gram's scale
    bases = [torch.eye(d, dtype=dt).repeat(2, 1, 1) if on else None for d, on in zip(shape, factored, strict=True)]
    exp_avg, exp_avg_sq = torch.zeros(2, *shape, dtype=dt), torch.zeros(2, *shape, dtype=dt)
    step, fallbacks = torch.zeros(2, dtype=dt), torch.zeros(2, dtype=torch.int64)
    out = []
    for calls in range(1, 25):
        grads = torch.randn(2, *shape, generator=g, dtype=dt)
        initialize = calls == 1
        scheduled = calls - 1 if reference else calls
        refresh = not initialize and scheduled % 5 == 0
        ok = None if initialize or refresh else torch.tensor(calls != 8)
        if calls == 8:
            grads.view(-1)[3] = float("nan")
        delta = fn(
            grads, exp_avg, exp_avg_sq, step, factors, bases, fallbacks, lr=3e-3, beta1=0.95, beta2=0.95,
            shampoo_beta=0.95, eps=1e-8, correct_bias=True, normalize_grads=False, reference=reference,
            initialize=initialize, refresh=refresh, ok=ok,
        )  # fmt: skip
        state = [exp_avg, exp_avg_sq, step, fallbacks, *factors, *bases]
        out.append([None if delta is None else delta.clone()] + [None if t is None else t.clone() for t in state])
    assert torch.isfinite(exp_avg).all() and not fallbacks.any()
    return out


@pytest.mark.parametrize(
    ("build", "kwargs"),
    [
        (mlp, {}),
        (_lopsided, {}),
        (_lopsided, {"reference": True}),
        # 4-D kernels, one factor per dim (the unfolded paths), and [out, in·kh·kw]; the [5, 144] head keeps only
        # its left factor
        (convnet, {"merge_dims": False, "max_precond_dim": 64, "blocking": False}),
        (convnet, {"max_precond_dim": 64, "blocking": False}),
    ],
    ids=["mlp", "lopsided", "lopsided-reference", "conv-per-dim", "conv-fan-in"],
)
def test_trajectory_is_the_old_steps(build, kwargs) -> None:
    """24 steps (refreshes every 5, a non-finite skip) of the blocks SOAP makes of each model: every increment and
    every state tensor within float64 rounding of the pre-issue-18 step's.

    The lopsided head [8, 20] takes the two-projection momentum transport on its right side and the rotation on its
    left, the [20, 12] layer the other way round; the conv nets take the unfolded (4-D) paths and a ``None`` side."""
    model = build()
    opt = SOAP(model.parameters(), **kwargs)
    group = opt.param_groups[0]
    layouts = {
        (shape, factored)
        for p in model.parameters()
        for shape, factored in zip(opt._plan(p, group).block_shapes, opt._plan(p, group).factored, strict=True)
    }
    for shape, factored in sorted(layouts):
        new = _drive(soap.__dict__["soap_block_step_"], shape, factored, group["reference"])
        old = _drive(_old_step, shape, factored, group["reference"])
        for call, (a, b) in enumerate(zip(new, old, strict=True)):
            _assert_same(a, b, _F64_REL, f"block {shape}, call {call + 1}")


@pytest.mark.parametrize(("m", "n"), [(40, 12), (3, 40), (9, 9)])
@pytest.mark.parametrize(
    ("initialize", "refresh", "dtype"),
    [
        (False, False, torch.float64),
        (False, True, torch.float64),
        (True, False, torch.float64),
        (False, False, torch.float32),
        (False, True, torch.float32),
    ],
    ids=["ordinary-f64", "refresh-f64", "initialize-f64", "ordinary-f32", "refresh-f32"],
)
def test_one_step_on_the_same_state_is_the_old_step(
    m: int, n: int, initialize: bool, refresh: bool, dtype: torch.dtype
) -> None:
    """One call of the step function on identical full-rank state: every output within rounding of the old step's.

    No float32 ``initialize``: its ``eigh`` of the (differently rounded) factor moves the eigenvectors by ~1e-4
    here (relative eigen-gaps ~1e-3), which no implementation controls; float64 covers that call."""

    def run(fn) -> list[torch.Tensor | None]:
        g = torch.Generator().manual_seed(0)
        grad, exp_avg = torch.randn(2, m, n, generator=g), torch.randn(2, m, n, generator=g)
        exp_avg_sq = torch.rand(2, m, n, generator=g)
        a, b = torch.randn(2, m, 3 * m, generator=g), torch.randn(2, n, 3 * n, generator=g)
        factors = [a @ a.mT, b @ b.mT]
        bases = [torch.linalg.qr(torch.randn(2, d, d, generator=g)).Q for d in (m, n)]
        grad, exp_avg, exp_avg_sq = grad.to(dtype), exp_avg.to(dtype), exp_avg_sq.to(dtype)
        factors, bases = [f.to(dtype) for f in factors], [q.to(dtype) for q in bases]
        step, fallbacks = torch.full((2,), 4.0, dtype=dtype), torch.zeros(2, dtype=torch.int64)
        delta = fn(
            grad, exp_avg, exp_avg_sq, step, factors, bases, fallbacks, lr=3e-3, beta1=0.9, beta2=0.99,
            shampoo_beta=0.95, eps=1e-8, correct_bias=True, normalize_grads=False, reference=False,
            initialize=initialize, refresh=refresh,
        )  # fmt: skip
        return [delta, exp_avg, exp_avg_sq, *factors, *bases]

    new, old = run(soap.__dict__["soap_block_step_"]), run(_old_step)
    if dtype == torch.float64:
        _assert_same(new, old, _F64_REL, "float64")
    else:
        for a, b in zip(new, old, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("layout", ["row-major", "column-major"])
@pytest.mark.parametrize("d", [30, 257])
def test_refresh_is_the_old_refresh_within_rounding(d: int, layout: str) -> None:
    """Default refresh against the one before its column norms became a sum of squares (``norm(dim=-2)`` is
    several times slower across the stride), its slot placement an inverse-permutation gather (the same entries
    as the old scatter) and its work rows of ``(A Q)ᵀ`` in two reused buffers: the same basis to float32 rounding,
    the same column signs, nothing failed, whatever the basis's memory layout."""
    torch.manual_seed(0)
    a = torch.randn(3, d, d + 20)
    factors = a @ a.mT
    basis = torch.linalg.qr(torch.randn(3, d, d)).Q
    basis = basis.contiguous() if layout == "row-major" else basis.mT.contiguous().mT
    before = basis.clone()
    new, failed = refresh_eigenbasis(factors, basis)
    old, old_failed = refresh_eigenbasis_before(factors, basis)
    assert torch.equal(failed, old_failed) and not bool(failed.any())
    torch.testing.assert_close(new, old, rtol=0, atol=2e-5)
    assert torch.equal(new.sum(-2).sign(), old.sum(-2).sign())
    assert torch.equal(basis, before)  # the input basis is not overwritten (only the refresh's own buffers are)


def test_bases_are_stored_column_major_through_refresh_resume_and_copy() -> None:
    """SOAP keeps its bases column-major (LAPACK's layout: the refresh's QR and the first step's ``eigh`` copy in
    flat, ~10 ms per transposing copy at d = 2048 saved): from the start, after refreshes, after a
    ``load_state_dict`` into a fresh optimizer and in a deep copy, and the resumed run is bitwise the same."""

    def column_major(opt: SOAP) -> bool:
        qs = [q for st in opt.state.values() for per_block in st["Q"] for q in per_block if q is not None]
        return bool(qs) and all(q.stride() == (1, q.shape[0]) for q in qs)

    data = batches(mlp(), 24)
    model = mlp()
    opt = SOAP(model.parameters(), precondition_frequency=5)
    train(model, opt, data[:12])
    assert column_major(opt)
    twin = copy.deepcopy((model, opt))
    resumed_model = copy.deepcopy(model)
    resumed = SOAP(resumed_model.parameters(), precondition_frequency=5)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    train(resumed_model, resumed, data[:1])  # the state is adopted into the buckets on the first step
    assert column_major(resumed) and column_major(twin[1])
    train(model, opt, data[:1])
    train(twin[0], twin[1], data[:1])
    for a, b, c in zip(model.parameters(), resumed_model.parameters(), twin[0].parameters(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_slots_by_inverse_gather_are_the_scatter_bitwise() -> None:
    g = torch.Generator().manual_seed(2)
    q = torch.randn(4, 9, 9, generator=g)
    order = torch.stack([torch.randperm(9, generator=g) for _ in range(4)])
    scattered = torch.empty_like(q).scatter_(-1, order[:, None, :].expand_as(q), q)
    gathered = q.gather(-1, order.argsort(dim=-1)[:, None, :].expand_as(q))
    assert torch.equal(scattered, gathered)


@pytest.mark.parametrize("shape", [(5, 7), (9, 3), (4, 3, 6), (3, 2, 4, 5)])
def test_change_basis_is_project_of_project_back(shape: tuple[int, ...]) -> None:
    """Both routes (rotation when d² < N, else two projections) against the float64 definition."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *shape, generator=g, dtype=torch.float64)

    def orth(d: int) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(2, d, d, generator=g, dtype=torch.float64)).Q

    old = [orth(d) for d in shape]
    new = [orth(d) for d in shape]
    new[-1] = None  # a mode left alone
    want = project(project_back(x, old), [n if n is not None else o for n, o in zip(new, old, strict=True)])
    torch.testing.assert_close(change_basis(x, old, new), want, rtol=1e-12, atol=1e-12)
    assert change_basis(x, old, [None] * len(shape)) is x


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 6)])
def test_accumulate_gram_is_the_gram_sum(shape: tuple[int, ...]) -> None:
    x = torch.randn(3, *shape, dtype=torch.float64)
    for i, d in enumerate(shape):
        factor = torch.randn(3, d, d, dtype=torch.float64)
        want = factor + 0.25 * contract_all_but(x, i)
        torch.testing.assert_close(accumulate_gram_(factor, x, i, 0.25), want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(factor, want, rtol=1e-12, atol=1e-12)  # in place


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 6)])
def test_accumulate_gram_decays_inside_the_gemm_and_masks_bitwise(shape: tuple[int, ...]) -> None:
    """``beta`` is the EMA decay (``beta·F + alpha·C_i(x)``); ``keep`` true is bitwise the unmasked update and
    ``keep`` false leaves the factor bitwise unchanged."""
    x = torch.randn(3, *shape, dtype=torch.float64)
    for i, d in enumerate(shape):
        factor = torch.randn(3, d, d, dtype=torch.float64)
        want = 0.95 * factor + 0.05 * contract_all_but(x, i)
        plain = accumulate_gram_(factor.clone(), x, i, 0.05, beta=0.95)
        torch.testing.assert_close(plain, want, rtol=1e-13, atol=1e-13)
        kept = accumulate_gram_(factor.clone(), x, i, 0.05, beta=0.95, keep=torch.tensor(True))
        assert torch.equal(kept, plain)
        skipped = factor.clone()
        accumulate_gram_(skipped, x, i, 0.05, beta=0.95, keep=torch.tensor(False))
        assert torch.equal(skipped, factor)


# ---------------------------------------------------------------------------------------------- CholeskyQR2 and drift
def _factors(seed: int, d: int, rank: int, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, d, rank, generator=g)
    basis = torch.linalg.qr(torch.randn(batch, d, d, generator=g)).Q
    return a @ a.mT, basis


@pytest.mark.parametrize("rank", [40, 5])  # full rank; rank-deficient (the null columns need the shift)
def test_cholesky_qr_is_householder_of_the_shifted_power_up_to_signs(rank: int) -> None:
    from precond.linalg import CHOLQR_SHIFT

    factors, basis = _factors(0, 24, rank)
    out = eigenbasis_refresh(factors, basis, cholesky_qr=True)
    assert not out.failed.any() and out.refreshed is None
    eye = torch.eye(24).expand(3, 24, 24)
    torch.testing.assert_close(out.basis.mT @ out.basis, eye, atol=2e-5, rtol=0)
    # oracle: float64 Householder QR of the shifted, sorted power, columns put back in their slots
    f64, b64 = factors.double(), basis.double()
    shift = CHOLQR_SHIFT * f64.diagonal(dim1=-2, dim2=-1).sum(-1) / 24
    power = f64 @ b64 + b64 * shift[:, None, None]
    order = (b64 * (f64 @ b64)).sum(-2).argsort(dim=-1, descending=True)
    index = order[:, None, :].expand_as(power)
    q = torch.linalg.qr(power.gather(-1, index)).Q
    want = torch.empty_like(q).scatter_(-1, index, q)
    signs = torch.sign((want * out.basis.double()).sum(-2, keepdim=True))
    torch.testing.assert_close(out.basis.double(), want * signs, atol=1e-3, rtol=0)


def test_cholesky_qr_falls_back_to_householder_where_cholesky_fails() -> None:
    factors, basis = _factors(1, 16, 16)
    factors[1] = 0.0  # zero factor: zero power, the Gram's Cholesky fails
    out = eigenbasis_refresh(factors, basis, cholesky_qr=True)
    assert not out.failed.any()
    eye = torch.eye(16)
    torch.testing.assert_close(out.basis[1].mT @ out.basis[1], eye, atol=1e-5, rtol=0)
    # member 1 is exactly what Householder QR makes of its (zero, sorted) power
    order = torch.zeros(16).argsort(descending=True)
    want = torch.empty(16, 16)
    want[:, order] = _householder_q(torch.zeros(1, 16, 16))[0]
    assert torch.equal(out.basis[1], want)


def test_basis_drift_against_dense_quotient() -> None:
    factors, basis = _factors(2, 12, 20)
    power = factors @ basis
    drift = basis_drift(power, (basis * power).sum(-2))
    m = basis.double().mT @ factors.double() @ basis.double()
    diag = torch.diagonal(m, dim1=-2, dim2=-1)
    off = m - torch.diag_embed(diag)
    want = off.flatten(1).norm(dim=1) / diag.norm(dim=1)
    torch.testing.assert_close(drift, want, rtol=1e-4, atol=1e-6)
    eigvecs = torch.linalg.eigh(factors.double()).eigenvectors.float()
    exact = basis_drift(factors @ eigvecs, (eigvecs * (factors @ eigvecs)).sum(-2))
    assert exact.max() < 3e-3 < want.min()  # an eigenbasis has (up to float32 rounding) no drift


def test_drift_tolerance_refreshes_only_drifted_members() -> None:
    factors, basis = _factors(3, 12, 20)
    eigvecs = torch.linalg.eigh(factors).eigenvectors.flip(-1)
    basis[1] = eigvecs[1]  # member 1 already diagonalises its factor
    out = eigenbasis_refresh(factors, basis, drift_tolerance=0.05)
    assert out.refreshed is not None and out.refreshed.tolist() == [True, False, True]
    assert torch.equal(out.basis[1], basis[1])  # kept bitwise
    full, _ = refresh_eigenbasis(factors[[0, 2]], basis[[0, 2]])
    assert torch.equal(out.basis[[0, 2]], full)  # the others: exactly the default refresh
    none = eigenbasis_refresh(eigvecs.mT @ factors @ eigvecs * 0 + factors, eigvecs, drift_tolerance=0.05)
    assert none.refreshed is not None and not none.refreshed.any() and none.basis is eigvecs


# ---------------------------------------------------------------------------------------------- options in SOAP
def _teacher_data(steps: int, seed: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    teacher = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(12, 16, generator=teacher) / 2, torch.randn(16, 6, generator=teacher) / 4
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        x = torch.randn(64, 12, generator=g)
        out.append((x, torch.tanh(x @ w1) @ w2))
    return out


def _final_loss(kwargs: dict, steps: int = 40) -> tuple[float, float]:
    model = mlp((12, 16, 6))
    opt = SOAP(model.parameters(), **{"lr": 1e-2, "precondition_frequency": 5, **kwargs})
    data = _teacher_data(steps)
    x, y = _teacher_data(1, seed=9)[0]
    with torch.no_grad():
        first = float((model(x) - y).square().mean())
    train(model, opt, data)
    with torch.no_grad():
        return first, float((model(x) - y).square().mean())


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("reference", [False, True], ids=["improved", "reference"])
def test_option_trains_as_well_as_the_default(name: str, reference: bool) -> None:
    """40 steps of a teacher-student regression: held-out loss within 10% of the default's (both fall 3×+)."""
    first, base = _final_loss({"reference": reference})
    _, loss = _final_loss({**OPTIONS[name], "reference": reference})
    assert base < first / 3 and loss < first / 3
    assert abs(loss - base) <= 0.1 * base, (name, loss, base)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_option_resume_and_deepcopy_are_bitwise(name: str) -> None:
    data = batches(_lopsided(), 22, batch=64)

    def fresh() -> tuple[nn.Module, SOAP]:
        model = _lopsided()
        return model, SOAP(model.parameters(), lr=3e-3, precondition_frequency=4, **OPTIONS[name])

    model, opt = fresh()
    straight = train(model, opt, data)[-1]

    model, opt = fresh()
    train(model, opt, data[:9])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    twin_model = copy.deepcopy(model)
    twin_opt = copy.deepcopy(opt)
    twin_opt.param_groups[0]["params"] = list(twin_model.parameters())  # deepcopy of both keeps the pairing
    resumed_model, resumed_opt = fresh()
    resumed_model.load_state_dict(saved_model)
    resumed_opt.load_state_dict(saved_opt)
    for m, o in ((model, opt), (resumed_model, resumed_opt)):
        end = train(m, o, data[9:])[-1]
        for a, b in zip(end, straight, strict=True):
            assert torch.equal(a, b), name
    del twin_model, twin_opt


def test_checkpoint_from_before_the_options_resumes_bitwise() -> None:
    """A state dict whose groups lack ``cholesky_qr``/``drift_tolerance``/``stagger_refresh`` (saved before they
    existed) loads, gets them off, and resumes exactly like the optimizer that saved it."""
    data = batches(_lopsided(), 16, batch=64)
    model = _lopsided()
    opt = SOAP(model.parameters(), lr=3e-3, precondition_frequency=4)
    train(model, opt, data[:7])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for group in saved_opt["param_groups"]:
        for key in SOAP.optional_group_defaults:
            del group[key]
    resumed_model = _lopsided()
    resumed_model.load_state_dict(saved_model)
    resumed = SOAP(resumed_model.parameters(), lr=1.0, drift_tolerance=0.5)
    resumed.load_state_dict(saved_opt)
    assert all(all(g[k] == v for k, v in SOAP.optional_group_defaults.items()) for g in resumed.param_groups)
    a, b = train(model, opt, data[7:])[-1], train(resumed_model, resumed, data[7:])[-1]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_deepcopy_steps_like_the_original() -> None:
    model = _lopsided()
    opt = SOAP(model.parameters(), lr=3e-3, precondition_frequency=3, **OPTIONS["all"])
    data = batches(model, 12, batch=64)
    train(model, opt, data[:4])
    pair = copy.deepcopy((model, opt))
    a = train(model, opt, data[4:])[-1]
    b = train(pair[0], pair[1], data[4:])[-1]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_stagger_spreads_refreshes_and_keeps_the_period() -> None:
    """Period 4: every parameter still refreshes every 4th step; the refresh work is spread over the 4 steps."""
    params = [nn.Parameter(torch.randn(6, 5)) for _ in range(12)]
    big = [nn.Parameter(torch.randn(30, 20)), nn.Parameter(torch.randn(30, 20))]
    opt = SOAP(params + big, precondition_frequency=4, stagger_refresh=True)
    group = opt.param_groups[0]
    slots = [opt._stagger_offset(p) for p in params + big]
    assert slots[-2] != slots[-1]  # the two heavy parameters refresh on different steps
    refreshing: dict[nn.Parameter, list[int]] = {p: [] for p in params + big}
    for _ in range(13):
        for p in params + big:
            p.grad = torch.randn_like(p)
        if opt.state:  # the phases of the coming step (state exists from the first step on)
            for p in params + big:
                if opt._phase(p, group)[1]:
                    refreshing[p].append(opt.state[p]["calls"] + 1)
        opt.step()
    for steps in refreshing.values():
        assert len(steps) == 3 and all(b - a == 4 for a, b in itertools.pairwise(steps))
    # longest-processing-time slots: each heavy parameter alone on its step, the twelve light ones share the rest
    work = {p: sum(d**3 for d in p.shape) for p in params + big}
    load = [0] * 4
    for p, slot in zip(params + big, slots, strict=True):
        load[slot] += work[p]
    assert max(load) == work[big[0]] < sum(work.values()) / 2
    assert sorted(slots[-2:]) == [0, 1] and sorted(set(slots[:-2])) == [2, 3]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"drift_tolerance": -0.1}, "drift_tolerance"),
        ({"drift_tolerance": float("nan")}, "drift_tolerance"),
        ({"cholesky_qr": "yes"}, "cholesky_qr"),
        ({"stagger_refresh": 1}, "stagger_refresh"),
    ],
)
def test_bad_option_values_are_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SOAP([nn.Parameter(torch.randn(3, 3))], **kwargs)


# ---------------------------------------------------------------------------------------------- fused Adam
def test_fused_adam_step_is_the_unfused_step_per_member_and_skips_bitwise() -> None:
    """The fused CPU kernel (float32 state's default path) against the unfused passes: members at different
    steps get their own bias corrections; a skipped call leaves the moments bitwise and returns zeros."""
    from precond.optim._adam import adam_direction_, bias_correction, fused_adam_step_

    g = torch.Generator().manual_seed(3)
    grad = torch.randn(3, 17, 5, generator=g)
    exp_avg, exp_avg_sq = torch.randn(3, 17, 5, generator=g) * 0.1, torch.rand(3, 17, 5, generator=g) * 0.01
    step = torch.tensor([1.0, 4.0, 250.0])
    lr, beta1, beta2, eps = 3e-3, 0.9, 0.99, 1e-8
    m, v = exp_avg.clone(), exp_avg_sq.clone()
    fused = fused_adam_step_(m, v, grad, step, lr, beta1, beta2, eps)
    m_ref, v_ref = exp_avg.clone(), exp_avg_sq.clone()
    bc2_sqrt = bias_correction(beta2, step).sqrt().view(-1, 1, 1)
    direction = adam_direction_(m_ref, v_ref, grad, None, bc2_sqrt, beta1, beta2, eps, False)
    want = direction * (-lr / bias_correction(beta1, step)).view(-1, 1, 1)
    torch.testing.assert_close(fused, want, rtol=2e-6, atol=1e-9)
    torch.testing.assert_close(m, m_ref, rtol=2e-6, atol=1e-9)
    torch.testing.assert_close(v, v_ref, rtol=2e-6, atol=1e-12)
    kept_m, kept_v = m.clone(), v.clone()
    skipped = fused_adam_step_(m, v, grad, step, lr, beta1, beta2, eps, skip=torch.tensor(True))
    assert torch.equal(m, kept_m) and torch.equal(v, kept_v) and not skipped.any()
    kept = fused_adam_step_(m.clone(), v.clone(), grad, step, lr, beta1, beta2, eps, skip=torch.tensor(False))
    assert torch.equal(kept, fused_adam_step_(m.clone(), v.clone(), grad, step, lr, beta1, beta2, eps))
