"""Second, independent oracle: ``pytorch_optimizer.SOAP`` (kozistr, test-only dependency).

Its SOAP is a port of the pre-December-2024 reference: momentum kept in the original basis and projected every
step (ours keeps it in the eigenbasis and transports it on refresh — the same numbers in exact arithmetic),
the first step skipped, decoupled weight decay after the update.  The semantics agree with our
``reference=True`` mode except where noted below, so trajectories must match to float32 tolerance on problems
whose factors are full rank (see the caveat in ``test_soap_reference_parity.py``).

Known differences, left out of the comparison on purpose:
* ``normalize_gradient`` divides by ``RMS + eps`` where the reference uses ``RMS + 1e-30``.
* it counts steps per param group, so a parameter that first receives a gradient later is never skipped.
"""

from __future__ import annotations

import pytest
import torch

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

from precond.optim import SOAP  # noqa: E402
from tests.problems import batches, convnet, mlp, train  # noqa: E402

CASES = {
    "mlp": (lambda: mlp((12, 12, 12)), {}),
    "mlp-no-bias-correction": (lambda: mlp((12, 12, 12)), dict(correct_bias=False, precondition_frequency=3)),
    "conv-one-sided": (convnet, dict(max_precond_dim=64)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_pytorch_optimizer_soap(name):
    make_model, extra = CASES[name]
    kw = dict(lr=1e-2, betas=(0.95, 0.95), eps=1e-8, weight_decay=0.01, precondition_frequency=10)
    kw.update({k: v for k, v in extra.items() if k != "max_precond_dim"})
    max_dim = extra.get("max_precond_dim", 10000)
    model_a, model_b = make_model(), make_model()
    data = batches(model_a, 40)
    theirs = pytorch_optimizer.SOAP(model_a.parameters(), max_precondition_dim=max_dim, **kw)
    ours = SOAP(
        model_b.parameters(),
        reference=True,
        shampoo_beta=None,
        max_precond_dim=max_dim,
        merge_dims=False,
        blocking=False,
        **kw,
    )
    ref_traj, our_traj = train(model_a, theirs, data), train(model_b, ours, data)
    for step, (ref, mine) in enumerate(zip(ref_traj, our_traj, strict=True)):
        for a, b in zip(ref, mine, strict=True):
            torch.testing.assert_close(b, a, atol=3e-5, rtol=1e-4, msg=lambda m, s=step: f"step {s}: {m}")
