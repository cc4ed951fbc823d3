"""Train the DCDM direction networks shipped as ``precond/linalg/learned/dcdm_poisson{32,64}.pt``.

    python benchmarks/train_dcdm.py --threads 2               # the shipped 32² checkpoint (CPU, a few minutes)
    python benchmarks/train_dcdm.py --size 64 --layouts 16 --steps 3000 --threads 2   # the shipped 64² one (~4 min)
    python benchmarks/train_dcdm.py --out net.pt --steps 200  # a quick trial into ./net.pt

``--out`` defaults to the shipped checkpoint of ``--size`` (``CHECKPOINTS`` in ``precond.linalg.learned``), or
``./dcdm_poisson{size}.pt`` for a size with none.  The shipped files used the options shown and the other
defaults (the 64² one with twice the layouts and steps: the default recipe left it stalling on held-out
right-hand sides); another thread count can change torch's summation order, hence the weights in their last bits.

Unsupervised (Kaneda et al., ICML 2023, eq. 6): Ritz-vector right-hand sides (Lanczos on each training matrix)
on ``size × size`` pressure-Poisson grids with random obstacles (layout seeds 100…100+layouts−1; the tests use
unseen seeds), Adam on the line-search residual loss.  No solutions are used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from precond.bench.solvers.problems import obstacle_mask
from precond.linalg.learned import (
    CHECKPOINTS,
    DirectionNet,
    PoissonGrid,
    lanczos_ritz,
    line_search_loss,
    ritz_rhs,
    save_direction_net,
)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="default: the shipped checkpoint of --size")
    p.add_argument("--size", type=int, default=32, help="grid side (even)")
    p.add_argument("--layouts", type=int, default=8)
    p.add_argument("--samples", type=int, default=256, help="Ritz right-hand sides per layout")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    if a.size < 4 or a.size % 2:
        p.error(f"--size must be an even grid side ≥ 4, got {a.size}")
    if a.out is None:
        a.out = CHECKPOINTS.get(a.size, Path(f"dcdm_poisson{a.size}.pt"))
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    grids = [PoissonGrid.build(obstacle_mask(a.size, seed=100 + i)) for i in range(a.layouts)]
    data = []
    for i, g in enumerate(grids):
        _, V = lanczos_ritz(g.matrix(), min(g.n, 400), seed=i)
        data.append(g.to_grid(torch.from_numpy(ritz_rhs(V, a.samples, seed=i).astype(np.float32))))
    net = DirectionNet()
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
    gen = torch.Generator().manual_seed(a.seed)
    running = 1.0
    for step in range(a.steps):
        g = int(torch.randint(0, len(grids), (1,), generator=gen))
        idx = torch.randint(0, a.samples, (a.batch,), generator=gen)
        loss = line_search_loss(net, grids[g], data[g][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * float(loss.detach())
        if step % 100 == 0 or step == a.steps - 1:
            print(f"step {step:5d}  loss {running:.4f}", flush=True)
    net.eval()
    save_direction_net(
        net,
        a.out,
        trained_by="benchmarks/train_dcdm.py",
        args={k: str(v) for k, v in vars(a).items()},
        final_loss=running,
    )
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
