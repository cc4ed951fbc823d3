"""FISMO against Algorithm 1 (float64 transcription) and Muon (identity factors); AuON's O(1/N) no-op fact."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from precond.linalg import newton_schulz
from precond.optim import FISMO, AuON, Muon
from precond.optim.auon import cosh_rms


def _grads(shape: tuple[int, int], steps: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(steps)]


def _run(opt: torch.optim.Optimizer, p: nn.Parameter, grads: list[torch.Tensor]) -> torch.Tensor:
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
    return p.detach().clone()


@pytest.mark.parametrize("shape", [(6, 4), (3, 5)])
def test_fismo_with_frozen_identity_factors_is_muon(shape: tuple[int, int]) -> None:
    """γ = 1 keeps P = Q = I (trace-normalised), so the step is Muon's with EMA momentum, exactly up to rounding."""
    w0 = torch.randn(shape, dtype=torch.float64)
    grads = _grads(shape, 7, seed=0)
    p = nn.Parameter(w0.clone())
    got = _run(FISMO([{"params": [p], "matrix": True}], lr=0.02, gamma=1.0, root_eps=0.0, weight_decay=0.1), p, grads)
    q = nn.Parameter(w0.clone())
    muon = Muon([{"params": [q], "use_muon": True}], lr=0.02, nesterov=False, scale="none", weight_decay=0.1)
    torch.testing.assert_close(got, _run(muon, q, grads), rtol=1e-12, atol=1e-14)


def _inv_sqrt(a: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(a)
    return (vecs * vals.rsqrt()) @ vecs.T


@pytest.mark.parametrize("nesterov", [False, True])
def test_fismo_matches_a_float64_transcription_of_algorithm_1(nesterov: bool) -> None:
    """Roots every step (precondition_frequency = 1): P, Q and the weights equal the transcription."""
    m, n = 5, 4
    lr, beta, gamma, mu = 0.02, 0.9, 0.8, 1e-2
    w0 = torch.randn(m, n, dtype=torch.float64)
    grads = _grads((m, n), 6, seed=1)
    p = nn.Parameter(w0.clone())
    opt = FISMO([{"params": [p], "matrix": True}], lr=lr, momentum=beta, gamma=gamma, damping=mu,
                precondition_frequency=1, root_eps=0.0, nesterov=nesterov)  # fmt: skip
    got = _run(opt, p, grads)
    w, big_p, big_q, buf = w0.clone(), torch.eye(m, dtype=torch.float64), torch.eye(n, dtype=torch.float64), 0 * w0
    for g in grads:
        lhs = g @ torch.linalg.inv(big_q) @ g.T / n + mu * torch.trace(big_p) / m * torch.eye(m, dtype=torch.float64)
        tilde = gamma * big_p + (1 - gamma) * lhs
        big_p = m * tilde / torch.trace(tilde)
        rhs = g.T @ torch.linalg.inv(big_p) @ g / m + mu * torch.trace(big_q) / n * torch.eye(n, dtype=torch.float64)
        tilde = gamma * big_q + (1 - gamma) * rhs
        big_q = n * tilde / torch.trace(tilde)
        white = _inv_sqrt(big_p) @ g @ _inv_sqrt(big_q)
        buf = beta * buf + (1 - beta) * white
        u = white + beta * (buf - white) if nesterov else buf
        w = w - lr * _inv_sqrt(big_p) @ newton_schulz(u[None])[0] @ _inv_sqrt(big_q)
    torch.testing.assert_close(opt.state[p]["left"], big_p, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(opt.state[p]["right"], big_q, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got, w, rtol=1e-9, atol=1e-11)
    assert not torch.allclose(big_p, torch.eye(m, dtype=torch.float64), atol=1e-2)


def test_fismo_factors_stay_trace_normalised_and_roots_amortised() -> None:
    p = nn.Parameter(torch.randn(8, 6))
    opt = FISMO([{"params": [p], "matrix": True}], precondition_frequency=3)
    roots = []
    for grad in _grads((8, 6), 7, seed=2):
        p.grad = grad.float()
        opt.step()
        roots.append(opt.state[p]["left_root"].clone())
    s = opt.state[p]
    assert abs(float(torch.trace(s["left"])) - 8) < 1e-4 and abs(float(torch.trace(s["right"])) - 6) < 1e-4
    torch.testing.assert_close(s["left"], s["left"].T)
    changed = [i + 1 for i in range(1, 7) if not torch.equal(roots[i], roots[i - 1])]
    assert changed == [4, 7]  # refreshed on steps 1, 4, 7


@pytest.mark.parametrize("gamma", [1.0, 1.5])
@pytest.mark.parametrize("shape", [(8, 8), (64, 64), (512, 512), (3, 200)])
def test_auon_cosh_rms_is_one_up_to_order_one_over_n(shape: tuple[int, int], gamma: float) -> None:
    """For unit-Frobenius X: 1 ≤ r ≤ sqrt(1 + γ² cosh²γ / N), so |r − 1| < 10/N (the 'cosh brake' is a no-op),
    for Gaussian, single-spike and constant matrices."""
    rows, cols = shape
    n_entries = rows * cols
    gaussian = torch.randn(rows, cols, dtype=torch.float64)
    spike = torch.zeros(rows, cols, dtype=torch.float64)
    spike[0, 0] = 1.0
    flat = torch.ones(rows, cols, dtype=torch.float64)
    for x in (gaussian, spike, flat):
        x = x / x.norm()
        r = float(cosh_rms(x[None], gamma))
        assert 1.0 <= r <= math.sqrt(1 + gamma**2 * math.cosh(gamma) ** 2 / n_entries) + 1e-15
        assert r - 1.0 < 10.0 / n_entries


def test_auon_is_normalized_nesterov_momentum_and_not_an_orthogonalizer() -> None:
    """One step of AuON equals lr·sqrt(max(1, m/n))·u/‖u‖_F to within 10/N relative, and its spectral norm is far
    below Muon's ~1."""
    torch.manual_seed(3)
    rows, cols = 128, 64
    w0 = torch.randn(rows, cols, dtype=torch.float64)
    grad = torch.randn(rows, cols, dtype=torch.float64)
    p = nn.Parameter(w0.clone())
    after = _run(AuON([{"params": [p], "matrix": True}], lr=0.05), p, [grad])
    u = 0.05 * grad + 0.95 * (0.05 * grad)  # nesterov lerp after one step from a zero buffer
    expected_dir = u / u.norm() * math.sqrt(rows / cols)
    step = (w0 - after) / 0.05
    torch.testing.assert_close(step, expected_dir, rtol=10 / (rows * cols), atol=0)
    assert torch.linalg.matrix_norm(step / math.sqrt(rows / cols), ord=2) < 0.3
    assert torch.linalg.matrix_norm(newton_schulz(grad[None])[0], ord=2) > 0.6


def test_bad_arguments_name_the_argument() -> None:
    p = [nn.Parameter(torch.ones(3, 3))]
    for cls, kwargs, name in [
        (FISMO, {"gamma": -0.1}, "gamma"),
        (FISMO, {"damping": 0.0}, "damping"),
        (FISMO, {"precondition_frequency": 0}, "precondition_frequency"),
        (FISMO, {"ns_coefficients": (1.0, 2.0)}, "ns_coefficients"),
        (AuON, {"gamma": -1.0}, "gamma"),
        (AuON, {"scale": "spectral"}, "scale"),
        (AuON, {"matrix": 2}, "matrix"),
    ]:
        with pytest.raises(ValueError, match=name):
            cls(p, **kwargs) if "matrix" not in kwargs else cls([{"params": p, **kwargs}])
