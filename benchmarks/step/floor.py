"""The floor: the bare matrix work any SOAP must do, timed like an optimizer (a pseudo-optimizer with a ``step``)."""

from __future__ import annotations

from typing import Any

import torch

from .settings import FREQ


class FloorOptimizer:
    """Bare matrix work of SOAP on the real shapes: 3 units per step, plus the refresh every ``FREQ`` steps.

    ``direct=False`` is the floor as specified: per factor A @ Q, QR and the rotation Q_newᵀ Q_old (d³), then
    one unit of momentum transport with the two rotations.  ``direct=True`` drops the rotations and transports
    the momentum as Q_L,newᵀ (Q_L,old M Q_R,oldᵀ) Q_R,new: two units, which is never more work, since
    m³ + n³ + m·n·(m+n) − 2·m·n·(m+n) = (m+n)(m−n)² ≥ 0 multiply-adds per matrix.
    """

    def __init__(self, shapes: list[tuple[int, int]], seed: int, direct: bool = False) -> None:
        self.direct = direct
        gen = torch.Generator().manual_seed(seed)

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen)

        def orthogonal(d: int) -> torch.Tensor:
            return torch.linalg.qr(rand(d, d)).Q.contiguous()

        self.mats = []
        for m, n in shapes:
            self.mats.append(
                dict(
                    g=rand(m, n),
                    factors=(rand(m, m), rand(n, n)),
                    bases=(orthogonal(m), orthogonal(n)),
                    power=(torch.empty(m, m), torch.empty(n, n)),
                    qr=((torch.empty(m, m), torch.empty(m, m)), (torch.empty(n, n), torch.empty(n, n))),
                    rot=(torch.empty(m, m), torch.empty(n, n)),
                    half=torch.empty(m, n),
                    out=torch.empty(m, n),
                )
            )
        self.calls = 0
        self.state: dict = {}
        self.param_groups: list[dict[str, Any]] = []  # no parameters (what the state-bytes counter skips)

    def step(self) -> None:
        self.calls += 1
        for mat in self.mats:
            g, (ql, qr), half, out = mat["g"], mat["bases"], mat["half"], mat["out"]
            mat["factors"][0].addmm_(g, g.T, beta=0.95, alpha=0.05)  # L ← β L + (1-β) G Gᵀ
            mat["factors"][1].addmm_(g.T, g, beta=0.95, alpha=0.05)  # R ← β R + (1-β) Gᵀ G
            torch.matmul(torch.matmul(ql.T, g, out=half), qr, out=out)  # Q_Lᵀ G Q_R
            torch.matmul(torch.matmul(ql, out, out=half), qr.T, out=out)  # Q_L U Q_Rᵀ
        if self.calls % FREQ == 0:
            self.refresh()

    def refresh(self) -> None:
        for mat in self.mats:
            for factor, basis, power, (q, r), rot in zip(
                mat["factors"], mat["bases"], mat["power"], mat["qr"], mat["rot"], strict=True
            ):
                torch.matmul(factor, basis, out=power)  # A Q
                torch.linalg.qr(power, out=(q, r))
                if not self.direct:
                    torch.matmul(q.T, basis, out=rot)  # Q_newᵀ Q_old
            g, half, out = mat["g"], mat["half"], mat["out"]
            if self.direct:  # Q_L,newᵀ (Q_L,old M Q_R,oldᵀ) Q_R,new: 2 units
                (ql, qr), (ql_new, qr_new) = mat["bases"], (mat["qr"][0][0], mat["qr"][1][0])
                torch.matmul(ql_new.T, torch.matmul(ql, g, out=half), out=out)
                torch.matmul(torch.matmul(out, qr.T, out=half), qr_new, out=out)
            else:  # R_L M R_Rᵀ with the rotations: 1 unit
                (rl, rr) = mat["rot"]
                torch.matmul(torch.matmul(rl, g, out=half), rr.T, out=out)
