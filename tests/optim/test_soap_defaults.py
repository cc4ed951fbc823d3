"""The default mode's improvements over the reference, each against an independent oracle."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from precond.optim import SOAP
from tests.optim.reference_soap import ReferenceSOAP
from tests.problems import batches, mlp, train


def _one_param(shape, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Parameter(torch.randn(shape, dtype=dtype))


def test_first_step_is_the_polar_factor_of_the_gradient():
    """No wasted first step: with a fresh eigh basis, Adam's first step is sign(G') → U Vᵀ (Muon's direction)."""
    p = _one_param((6, 9))
    start = p.detach().clone()
    g = torch.randn(6, 9, dtype=torch.float64)
    p.grad = g.float()
    # eps must dominate float32 round-off in G' = Q_Lᵀ G Q_R, whose off-diagonal is zero only in exact
    # arithmetic (Adam maps ~1e-6 noise to ±1), yet stay well below the singular values.
    eps = 1e-3
    SOAP([p], lr=1.0, weight_decay=0.0, eps=eps).step()
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    expected = -(u * (s / (s + eps))) @ vh
    step = (p.detach() - start).double()
    torch.testing.assert_close(step, expected, atol=5e-3, rtol=0)
    assert (step + torch.sign(g)).abs().max() > 0.5  # and it is not Adam's sign step


def _equivalent_state(opt, p, perm, signs):
    """Relabel the left basis's columns (permute + flip signs) and the moments consistently."""
    st = opt.state[p]
    q = st["Q"][0][0]
    m, v = st["exp_avg"][0], st["exp_avg_sq"][0]
    q.copy_(q[:, perm] * signs)
    m.copy_(m[perm] * signs[:, None])
    v.copy_(v[perm])


@pytest.mark.parametrize("frequency", [1, 3])
def test_update_invariant_to_relabelling_basis_columns(frequency):
    """Permuting / sign-flipping eigenvector columns (with the moments) changes nothing, refreshes included."""
    shape = (7, 5)
    grads = [torch.randn(shape) for _ in range(8)]
    params = [_one_param(shape), _one_param(shape)]
    opts = [SOAP([p], lr=1e-2, precondition_frequency=frequency) for p in params]
    for i, g in enumerate(grads):
        for p, o in zip(params, opts, strict=True):
            p.grad = g.clone()
            o.step()
        if i == 2:
            perm = torch.randperm(shape[0])
            signs = torch.where(torch.rand(shape[0]) < 0.5, -1.0, 1.0)
            _equivalent_state(opts[1], params[1], perm, signs)
    torch.testing.assert_close(params[1], params[0], atol=1e-6, rtol=1e-5)


def test_misaligned_second_moment_would_be_detected():
    """Control for the test above: relabelling Q alone (v left behind) does change the trajectory."""
    shape = (7, 5)
    grads = [torch.randn(shape) for _ in range(6)]
    params = [_one_param(shape), _one_param(shape)]
    opts = [SOAP([p], lr=1e-2, precondition_frequency=2) for p in params]
    for i, g in enumerate(grads):
        for p, o in zip(params, opts, strict=True):
            p.grad = g.clone()
            o.step()
        if i == 1:
            q = opts[1].state[params[1]]["Q"][0][0]
            q.copy_(q[:, torch.arange(shape[0] - 1, -1, -1)])
    assert (params[1] - params[0]).abs().max() > 1e-4


def _matmul_flops(opt, p, g):
    p.grad = g
    with FlopCounterMode(display=False) as counter:
        opt.step()
    return counter.get_total_flops()


def test_three_matmul_units_per_step_and_transport_only_on_refresh():
    """Per non-refresh step: factor update + projection + projection back = 3·(2·m·n·(m+n)) flops."""
    m, n = 24, 40
    p = _one_param((m, n))
    opt = SOAP([p], precondition_frequency=5)
    unit = 2 * m * n * (m + n)
    flops = [_matmul_flops(opt, p, torch.randn(m, n)) for _ in range(5)]
    assert flops[1] == 3 * unit  # steps 2-4: exactly three units, no per-step momentum transport
    assert flops[2] == flops[3] == 3 * unit
    power = 2 * (m**3 + n**3)  # A@Q per side (QR not counted)
    # momentum transport, per side the cheaper exact route (issue 18): the left side (24² < 24·40) by the rotation
    # Q_newᵀ Q_old (m³) applied once (m·m·n), the right side (40² > 960) by two projections (2·m·n·n), which is
    # cheaper than the old rotation route's n³ + m·n·n
    transport = 2 * (m**3 + m * m * n) + 2 * (2 * m * n * n)
    assert flops[4] == 3 * unit + power + transport
    assert transport < 2 * (m**3 + n**3) + unit  # the old route: both rotations and one unit


def test_shampoo_beta_is_independent_of_beta2():
    p = _one_param((4, 3))
    g1, g2 = torch.randn(4, 3), torch.randn(4, 3)
    opt = SOAP([p], betas=(0.9, 0.999), shampoo_beta=0.8)
    for g in (g1, g2):
        p.grad = g
        opt.step()
    expected = 0.8 * (0.2 * g1 @ g1.T) + 0.2 * g2 @ g2.T
    torch.testing.assert_close(opt.state[p]["GG"][0][0], expected)


def test_rank_deficient_factors_never_produce_nan():
    """A gradient that is zero except one entry: rank-1 factors with huge null spaces, many refreshes."""
    p = _one_param((16, 16))
    opt = SOAP([p], precondition_frequency=1)
    for i in range(20):
        g = torch.zeros(16, 16)
        g[i % 3, 0] = 10.0 ** (i % 5 - 2)
        p.grad = g
        opt.step()
    st = opt.state[p]
    assert torch.isfinite(p).all()
    assert all(torch.isfinite(q).all() for q in st["Q"][0])
    eye = torch.eye(16)
    for q in st["Q"][0]:
        torch.testing.assert_close(q.T @ q, eye, atol=1e-5, rtol=0)


def test_eigh_failure_retries_in_float64(monkeypatch):
    real = torch.linalg.eigh
    calls = []

    def flaky(a, *args, **kwargs):
        calls.append(a.dtype)
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("simulated failure to converge")
        return real(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    p = _one_param((5, 4))
    g = torch.randn(5, 4)
    p.grad = g
    opt = SOAP([p])
    opt.step()
    assert torch.float64 in calls
    assert int(opt.state[p]["basis_fallbacks"][0]) == 0
    q = opt.state[p]["Q"][0][0]
    eigvals = torch.diagonal(q.T @ (g @ g.T) @ q)
    assert torch.all(eigvals[:-1] >= eigvals[1:] - 1e-4)  # a genuine eigenbasis, descending


def test_eigh_failure_keeps_previous_basis_and_counts(monkeypatch):
    def broken(*args, **kwargs):
        raise torch.linalg.LinAlgError("simulated failure to converge")

    monkeypatch.setattr(torch.linalg, "eigh", broken)
    p = _one_param((5, 4))
    p.grad = torch.randn(5, 4)
    opt = SOAP([p])
    opt.step()
    st = opt.state[p]
    assert int(st["basis_fallbacks"][0]) == 2  # both sides fell back ...
    torch.testing.assert_close(st["Q"][0][0], torch.eye(5))  # ... to the previous (identity) basis
    assert torch.isfinite(p).all()


def test_nonfinite_refresh_keeps_previous_basis():
    from precond.linalg import refresh_eigenbasis

    a = torch.randn(3, 6, 6)
    factors = a @ a.mT
    factors[1, 0, 0] = float("inf")
    basis = torch.linalg.qr(torch.randn(3, 6, 6)).Q
    new, failed = refresh_eigenbasis(factors, basis)
    assert failed.tolist() == [False, True, False]
    torch.testing.assert_close(new[1], basis[1])
    assert torch.isfinite(new).all()


@pytest.mark.slow
def test_compiled_elementwise_part_matches_eager():
    data = batches(mlp(), 15)
    a, b = mlp(), mlp()
    eager = train(a, SOAP(a.parameters(), lr=1e-2, precondition_frequency=4), data)
    compiled = train(b, SOAP(b.parameters(), lr=1e-2, precondition_frequency=4, compile=True), data)
    for x, y in zip(eager[-1], compiled[-1], strict=True):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("initialize", "refresh"), [(False, False), (False, True), (True, False)])
def test_sync_free_masking_is_bitwise_the_plain_step_when_finite(initialize, refresh):
    """The non-finite guard (``ok`` tensor) must not perturb a finite step by even one ulp."""
    from precond.optim import soap_block_step_

    def run(ok):
        torch.manual_seed(0)
        g, m, v = torch.randn(3, 5, 4), torch.randn(3, 5, 4), torch.rand(3, 5, 4)
        factors = [torch.rand(3, 5, 5), torch.rand(3, 4, 4)]
        bases = [torch.linalg.qr(torch.randn(3, d, d)).Q for d in (5, 4)]
        step, fallbacks = torch.full((3,), 4.0), torch.zeros(3, dtype=torch.int64)
        hp = dict(lr=3e-3, beta1=0.9, beta2=0.99, shampoo_beta=0.95, eps=1e-8, correct_bias=True)
        delta = soap_block_step_(
            g, m, v, step, factors, bases, fallbacks, **hp, normalize_grads=False, reference=False,
            initialize=initialize, refresh=refresh, ok=ok,
        )  # fmt: skip
        return [delta, m, v, step, *factors, *bases]

    for a, b in zip(run(None), run(torch.tensor(True)), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- reference=True defaults
def _reference_signature_defaults() -> dict:
    """The defaults of the transcription of nikhilvyas/SOAP a1e5535 (the oracle of the parity tests)."""
    sig = inspect.signature(ReferenceSOAP.__init__)
    return {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def _settings(opt: SOAP, group: int = 0) -> dict:
    ref = _reference_signature_defaults()
    out = {k: opt.param_groups[group][k] for k in ref if k != "data_format"}
    return {**out, "data_format": opt._data_format, "blocking": opt.param_groups[group]["blocking"]}


def test_reference_true_alone_takes_every_reference_default():
    opt = SOAP([_one_param((3, 3))], reference=True)
    assert _settings(opt) == {**_reference_signature_defaults(), "blocking": False}  # the reference never blocks
    assert opt.param_groups[0]["shampoo_beta"] < 0  # i.e. tied to β2, the reference's -1


def test_default_mode_keeps_its_own_defaults():
    opt = SOAP([_one_param((3, 3))])
    expected = {
        **_reference_signature_defaults(),
        "shampoo_beta": 0.95,
        "max_precond_dim": 1024,
        "merge_dims": "fan_in",
        "blocking": True,
    }
    assert _settings(opt) == expected


@pytest.mark.parametrize("reference", [True, False])
@pytest.mark.parametrize(
    "given",
    [{"max_precond_dim": 64}, {"shampoo_beta": 0.9}, {"shampoo_beta": -1.0}, {"merge_dims": True}, {"blocking": True}],
)
def test_explicit_arguments_win_in_both_modes(reference, given):
    opt = SOAP([_one_param((3, 3))], reference=reference, **given)
    for k, v in given.items():
        assert opt.param_groups[0][k] == v
    others = SOAP([_one_param((3, 3))], reference=reference).param_groups[0]
    for k in ("shampoo_beta", "max_precond_dim", "merge_dims", "blocking"):
        if k not in given:
            assert opt.param_groups[0][k] == others[k]


def test_a_group_setting_reference_gets_the_reference_defaults_not_given_to_the_constructor():
    a, b, c = _one_param((3, 3)), _one_param((3, 3)), _one_param((3, 3))
    opt = SOAP(
        [{"params": [a]}, {"params": [b], "reference": True}, {"params": [c], "reference": True, "blocking": None}],
        max_precond_dim=64,
    )
    g0, g1, g2 = opt.param_groups
    assert (g0["shampoo_beta"], g0["merge_dims"], g0["blocking"], g0["max_precond_dim"]) == (0.95, "fan_in", True, 64)
    assert (g1["shampoo_beta"], g1["merge_dims"], g1["blocking"], g1["max_precond_dim"]) == (-1.0, False, False, 64)
    assert g2["blocking"] is False
    opt.add_param_group({"params": [_one_param((2, 2))], "reference": True})
    assert opt.param_groups[3]["merge_dims"] is False


def test_reference_true_ties_the_factor_ema_to_beta2():
    """Oracle: the reference's EMA from zero, L = β2·(1 − β2)·g1 g1ᵀ + (1 − β2)·g2 g2ᵀ with β2 = 0.5."""
    p = _one_param((4, 3))
    g1, g2 = torch.randn(4, 3), torch.randn(4, 3)
    opt = SOAP([p], reference=True, betas=(0.9, 0.5))
    for g in (g1, g2):
        p.grad = g
        opt.step()
    expected = 0.5 * (0.5 * g1 @ g1.T) + 0.5 * g2 @ g2.T
    torch.testing.assert_close(opt.state[p]["GG"][0][0], expected)
