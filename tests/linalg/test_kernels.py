"""precond.linalg kernels against dense float64 oracles."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from precond.linalg import (
    contract_all_but,
    eigh_robust,
    merge_greedy,
    plan_layout,
    project,
    project_back,
    refresh_eigenbasis,
)


def _orthogonal(b, d, dtype=torch.float64):
    return torch.linalg.qr(torch.randn(b, d, d, dtype=dtype)).Q


def test_project_2d_is_kronecker_product():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    ql, qr = _orthogonal(3, 4), _orthogonal(3, 5)
    out = project(x, [ql, qr])
    for i in range(3):
        dense = torch.kron(ql[i].T, qr[i].T) @ x[i].reshape(-1)  # vec(Q_Lᵀ X Q_R), row-major
        torch.testing.assert_close(out[i].reshape(-1), dense)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), mask=st.lists(st.booleans(), min_size=4))
def test_project_back_inverts_project_in_any_rank(shape, mask):
    x = torch.randn(2, *shape, dtype=torch.float64)
    bases = [_orthogonal(2, d) if mask[i] else None for i, d in enumerate(shape)]
    torch.testing.assert_close(project_back(project(x, bases), bases), x)
    # and matches the einsum definition on every factored dim
    letters = "abcd"[: len(shape)]
    expected = x
    for i, q in enumerate(bases):
        if q is not None:
            src = "z" + letters
            dst = "z" + letters.replace(letters[i], "y")
            expected = torch.einsum(f"{src},z{letters[i]}y->{dst}", expected, q)
    torch.testing.assert_close(project(x, bases), expected)


@pytest.mark.parametrize("shape", [(4, 6), (3, 4, 5), (2, 3, 2, 4), (7,)])
def test_contract_all_but_matches_einsum(shape):
    x = torch.randn(2, *shape, dtype=torch.float64)
    letters = "abcd"[: len(shape)]
    for i, c in enumerate(letters):
        other = letters.replace(c, c.upper())
        expected = torch.einsum(f"z{letters},z{other}->z{c}{c.upper()}", x, x)
        torch.testing.assert_close(contract_all_but(x, i), expected)


def test_eigh_robust_matches_float64_and_orders_descending():
    a = torch.randn(4, 6, 3, dtype=torch.float64)
    sym = a @ a.mT  # rank 3 of 6: a rank-deficient factor
    basis, failed = eigh_robust(sym.float(), torch.eye(6).expand(4, 6, 6).clone())
    assert not failed.any()
    assert torch.isfinite(basis).all()
    diag = torch.diagonal(basis.double().mT @ sym @ basis.double(), dim1=-2, dim2=-1)
    ref = torch.linalg.eigvalsh(sym).flip(-1)
    torch.testing.assert_close(diag, ref, atol=1e-4, rtol=1e-4)


def test_refresh_is_the_sorted_qr_step_with_columns_kept_in_place():
    torch.manual_seed(0)
    a = torch.randn(2, 5, 8, dtype=torch.float64)
    factors = a @ a.mT
    basis = _orthogonal(2, 5)
    new, failed = refresh_eigenbasis(factors, basis)
    assert not failed.any()
    for i in range(2):
        power = factors[i] @ basis[i]
        est = torch.diagonal(basis[i].T @ power)
        order = est.argsort(descending=True)
        q_sorted = torch.linalg.qr(power[:, order]).Q  # the reference's sorted layout
        torch.testing.assert_close(new[i][:, order], q_sorted)
    eye = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(new.mT @ new, eye.expand(2, 5, 5))


def test_repeated_refresh_converges_to_eigenbasis():
    a = torch.randn(1, 6, 6, dtype=torch.float64)
    factors = a @ a.mT + torch.diag(torch.arange(6.0, dtype=torch.float64) * 3)
    basis = _orthogonal(1, 6)
    for _ in range(200):
        basis, _ = refresh_eigenbasis(factors, basis)
    off = basis.mT @ factors @ basis
    off = off - torch.diag_embed(torch.diagonal(off, dim1=-2, dim2=-1))
    assert off.abs().max() < 1e-8


@pytest.mark.parametrize(
    ("shape", "max_dim", "merged"),
    [((128, 64, 3, 3), 10000, (8192, 9)), ((128, 64, 3, 3), 1024, (128, 576)), ((8, 3, 3, 5), 16, (8, 9, 5))],
)
def test_greedy_merge_is_the_reference_rule(shape, max_dim, merged):
    assert merge_greedy(shape, max_dim) == merged


def test_plan_layout_rules():
    conv = plan_layout((128, 64, 3, 3), 1024)
    assert conv.merged_shape == (128, 576) and conv.factored == ((True, True),)
    big = plan_layout((2500, 64), 1024)
    assert big.block_shapes == ((834, 64), (833, 64), (833, 64))
    assert all(f == (True, True) for f in big.factored)
    assert plan_layout((2500, 64), 1024, blocking=False).factored == ((False, True),)
    assert plan_layout((), 1024).merged_shape == (1,) and plan_layout((), 1024).factored == ((False,),)
    assert plan_layout((7,), 1024).factored == ((False,),)
    assert plan_layout((7,), 1024, precondition_1d=True).factored == ((True,),)
    assert plan_layout((5, 6), 0).factored == ((False, False),)
    x = torch.arange(2500 * 64.0).reshape(2500, 64)
    layout = plan_layout(x.shape, 1024)
    views = layout.views_into(x)
    assert views is not None
    torch.testing.assert_close(torch.cat(views), x)
    assert views[1].data_ptr() == x[834:].data_ptr()
