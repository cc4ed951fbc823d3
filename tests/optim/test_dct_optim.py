"""DCT-AdamW and Trion against their oracles: full rank is AdamW in the DCT basis (DCT-AdamW) and Muon (Trion);
low rank equals a float64 transcription of the authors' update; FFT selection equals the matrix product; the
state fits the low-rank budget."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from precond.linalg import dct_basis, newton_schulz
from precond.optim import DCTAdamW, Muon, Trion
from tests.problems import state_tensors

SHAPES = [(9, 5), (4, 7)]


def _grads(shape: tuple[int, ...], steps: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(steps)]


def _run(opt: torch.optim.Optimizer, p: nn.Parameter, grads: list[torch.Tensor]) -> torch.Tensor:
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
    return p.detach().clone()


@pytest.mark.parametrize("shape", SHAPES)
def test_full_rank_dct_adamw_is_adamw_in_the_dct_basis(shape: tuple[int, int]) -> None:
    """rank = the shorter side keeps every DCT column: AdamW on ``W Q`` (right) / ``Qᵀ W`` (left)."""
    rows, cols = shape
    right = rows >= cols
    q = dct_basis(min(shape), torch.float64)
    w0 = torch.randn(shape, dtype=torch.float64)
    grads = _grads(shape, 10)
    p = nn.Parameter(w0.clone())
    got = _run(DCTAdamW([{"params": [p], "matrix": True}], lr=1e-2, rank=1.0, weight_decay=0.0), p, grads)
    x = nn.Parameter(w0 @ q if right else q.T @ w0)
    adamw = torch.optim.AdamW([x], lr=1e-2, weight_decay=0.0)
    for grad in grads:
        x.grad = grad @ q if right else q.T @ grad
        adamw.step()
    expected = x.detach() @ q.T if right else q @ x.detach()
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def _official_dct_adamw(w: torch.Tensor, grads: list[torch.Tensor], rank: int, lr: float, wd: float, ef: bool,
                        rotate: bool) -> torch.Tensor:  # fmt: skip
    """Float64 transcription of ISTA-DASLab ``fft_low_rank/dct_adamw.py`` (update_proj_gap = 1, ℓ1 scores,
    ``m/(eps·sqrt(bc2) + sqrt(v))·sqrt(bc2)/bc1``, decay ``W(1 − lrλ)``), columns taken in ascending index order."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    w = w.clone()
    right = w.shape[0] >= w.shape[1]
    size = min(w.shape)
    q = torch.tensor(
        [[math.sqrt(2 / size) * math.cos(math.pi * k * (2 * n + 1) / (2 * size)) / (math.sqrt(2) if k == 0 else 1)
          for k in range(size)] for n in range(size)],
        dtype=torch.float64,
    )  # fmt: skip
    err = torch.zeros_like(w)
    m = v = prev = None
    for t, grad in enumerate(grads, start=1):
        a_full = grad + err if ef else grad
        s = a_full @ q if right else q.T @ a_full
        scores = s.abs().sum(0) if right else s.abs().sum(1)
        idx = sorted(torch.topk(scores, rank).indices.tolist())
        q_r = q[:, idx]
        a = s[:, idx] if right else s[idx, :]
        if ef:
            err = a_full - (a @ q_r.T if right else q_r @ a)
        if m is None:
            m, v = torch.zeros_like(a), torch.zeros_like(a)
        elif rotate:
            r = q[:, prev].T @ q_r
            m, v = (m @ r, (v @ r).abs()) if right else (r.T @ m, (r.T @ v).abs())
        prev = idx
        m = beta1 * m + (1 - beta1) * a
        v = beta2 * v + (1 - beta2) * a * a
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        u = m / (eps * math.sqrt(bc2) + v.sqrt())
        w = w * (1 - lr * wd) - lr * math.sqrt(bc2) / bc1 * (u @ q_r.T if right else q_r @ u)
    return w


@pytest.mark.parametrize("rotate", [False, True], ids=["plain", "rotate"])
@pytest.mark.parametrize("ef", [False, True], ids=["no_ef", "ef"])
@pytest.mark.parametrize("shape", SHAPES)
def test_low_rank_dct_adamw_matches_the_official_update(shape: tuple[int, int], ef: bool, rotate: bool) -> None:
    w0 = torch.randn(shape, dtype=torch.float64)
    grads = _grads(shape, 8, seed=1)
    p = nn.Parameter(w0.clone())
    opt = DCTAdamW([{"params": [p], "matrix": True}], lr=1e-2, rank=2, weight_decay=0.1, error_feedback=ef,
                   rotate_subspace=rotate)  # fmt: skip
    got = _run(opt, p, grads)
    expected = _official_dct_adamw(w0, grads, 2, 1e-2, 0.1, ef, rotate)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)
    assert opt.state[p]["exp_avg"].shape == ((shape[0], 2) if shape[0] >= shape[1] else (2, shape[1]))


@pytest.mark.parametrize("cls", [DCTAdamW, Trion])
def test_fft_selection_equals_the_matrix_product(cls: type) -> None:
    """``similarity="makhoul"`` (FFT) and ``"matmul"`` pick the same columns and give the same trajectory."""
    grads = _grads((12, 8), 6, torch.float32, seed=2)
    out = []
    for similarity in ("matmul", "makhoul"):
        torch.manual_seed(0)
        p = nn.Parameter(torch.randn(12, 8))
        out.append(_run(cls([{"params": [p], "matrix": True}], rank=3, similarity=similarity), p, grads))
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-6)


def test_state_fits_the_low_rank_budget() -> None:
    """A 64×32 matrix at rank 8: moments ``2·64·8`` float32 plus 8 indices and two scalars — a quarter of
    AdamW's ``2·64·32``; error feedback adds one full matrix."""
    for ef, extra in ((False, 0), (True, 64 * 32 * 4)):
        p = nn.Parameter(torch.randn(64, 32))
        opt = DCTAdamW([{"params": [p], "matrix": True}], rank=8, error_feedback=ef)
        p.grad = torch.randn(64, 32)
        opt.step()
        nbytes = sum(t.numel() * t.element_size() for _, t in state_tensors(opt.state_dict()["state"]))
        budget = 2 * 64 * 8 * 4 + 8 * 8 + 4 + 8 + extra
        assert nbytes <= budget, (ef, nbytes, budget)
        assert nbytes < 2 * 64 * 32 * 4 + extra


def test_layers_of_different_sizes_get_their_own_dct() -> None:
    """The authors build one DCT from the first layer; here a 9×5 and a 4×7 layer both project correctly:
    at full rank each step is AdamW's rotated update, so the loss of a separable quadratic falls for both."""
    ps = [nn.Parameter(torch.randn(9, 5)), nn.Parameter(torch.randn(4, 7))]
    opt = DCTAdamW([{"params": ps, "matrix": True}], lr=0.05, rank=1.0)
    for _ in range(60):
        opt.zero_grad()
        sum(p.square().sum() for p in ps).backward()
        opt.step()
    assert all(p.abs().max() < 0.3 for p in ps)


@pytest.mark.parametrize("shape", SHAPES)
def test_full_rank_trion_is_non_nesterov_muon(shape: tuple[int, int]) -> None:
    """At full rank ``M ← μ(M + G)`` and ``NS(M Q) Qᵀ = NS(M)``: Trion's step is Muon's with EMA momentum
    (the buffers differ by the factor 1 − μ, which Newton–Schulz normalises away, up to its eps)."""
    w0 = torch.randn(shape, dtype=torch.float64)
    grads = _grads(shape, 8, seed=3)
    p = nn.Parameter(w0.clone())
    got = _run(Trion([{"params": [p], "matrix": True}], lr=0.02, rank=1.0, eps=0.0), p, grads)
    q = nn.Parameter(w0.clone())
    expected = _run(Muon([{"params": [q], "use_muon": True}], lr=0.02, nesterov=False, eps=0.0), q, grads)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_low_rank_trion_matches_a_float64_transcription(shape: tuple[int, int]) -> None:
    """``M ← M + G``, top-r ℓ1 DCT columns ``a``, ``M ← M − (1 − μ) a Q_rᵀ``, ``W ← W(1 − lrλ) − lr·s·NS(a) Q_rᵀ``."""
    rows, cols = shape
    right = rows >= cols
    q = dct_basis(min(shape), torch.float64)
    w0 = torch.randn(shape, dtype=torch.float64)
    grads = _grads(shape, 6, seed=4)
    p = nn.Parameter(w0.clone())
    got = _run(Trion([{"params": [p], "matrix": True}], lr=0.02, rank=2, weight_decay=0.1), p, grads)
    w, buf = w0.clone(), torch.zeros(shape, dtype=torch.float64)
    for grad in grads:
        buf = buf + grad
        s = buf @ q if right else q.T @ buf
        idx = sorted(torch.topk(s.abs().sum(0 if right else 1), 2).indices.tolist())
        a = s[:, idx] if right else s[idx, :]
        q_r = q[:, idx]
        buf = buf - 0.05 * (a @ q_r.T if right else q_r @ a)
        o = newton_schulz(a[None])[0]
        w = w * (1 - 0.02 * 0.1) - 0.02 * math.sqrt(max(1, rows / cols)) * (o @ q_r.T if right else q_r @ o)
    torch.testing.assert_close(got, w, rtol=1e-9, atol=1e-11)


def test_bad_arguments_name_the_argument() -> None:
    p = [nn.Parameter(torch.ones(3, 3))]
    for cls, kwargs, name in [
        (DCTAdamW, {"rank": 0}, "rank"),
        (DCTAdamW, {"rank": 1.5}, "rank"),
        (DCTAdamW, {"similarity": "svd"}, "similarity"),
        (DCTAdamW, {"update_proj_gap": 0}, "update_proj_gap"),
        (Trion, {"rank": True}, "rank"),
        (Trion, {"momentum": 1.0}, "momentum"),
        (Trion, {"ns_steps": 0}, "ns_steps"),
        (Trion, {"scale": "dion"}, "scale"),
        (Trion, {"adam_eps": 0.0}, "adam_eps"),
    ]:
        with pytest.raises(ValueError, match=name):
            cls(p, **kwargs)
