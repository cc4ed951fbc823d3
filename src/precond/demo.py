"""A short SOAP-vs-AdamW training demo on scikit-learn's embedded digits data (no download).

Run with ``python -m precond`` (or ``make demo``).  This is a demo, not a benchmark: one seed, each optimizer
at a small learning-rate sweep's best value, losses printed as training goes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from precond.optim import SOAP


def _digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - exercised only without the demo extra
        raise SystemExit("the demo needs scikit-learn: pip install 'precond[demo]'") from err
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_train = 1400
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 10))


def _train(
    make_opt: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    data: tuple[torch.Tensor, ...],
    steps: int,
    seed: int,
    log: Callable[[int, float, float], None] | None = None,
) -> tuple[float, float, float]:
    xtr, ytr, xva, yva = data
    model = _model(seed)
    opt = make_opt(list(model.parameters()))
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    val = acc = float("nan")
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(ytr), (128,), generator=gen)
        loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % (steps // 5) == 0 or step == steps:
            with torch.no_grad():
                logits = model(xva)
                val = nn.functional.cross_entropy(logits, yva).item()
                acc = (logits.argmax(1) == yva).float().mean().item()
            if log is not None:
                log(step, val, acc)
    return val, acc, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m precond", description=__doc__)
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 5:
        parser.error("--steps must be at least 5")
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    data = _digits(args.seed)
    candidates = {
        "AdamW": lambda lr: lambda ps: torch.optim.AdamW(ps, lr=lr, betas=(0.9, 0.95), weight_decay=0.01),
        "SOAP": lambda lr: lambda ps: SOAP(ps, lr=lr, weight_decay=0.01),
    }
    lrs = (1e-3, 3e-3, 1e-2, 3e-2)
    print(f"digits MLP (64-128-128-10), {args.steps} steps of batch 128; lr sweep {lrs} on a short run")
    results = {}
    for name, factory in candidates.items():
        sweep = {lr: _train(factory(lr), data, max(5, args.steps // 3), args.seed)[0] for lr in lrs}
        best = min(sweep, key=lambda lr: sweep[lr])
        print(
            f"\n{name}: best lr {best:g}  (short-run val loss: " + ", ".join(f"{v:.3f}" for v in sweep.values()) + ")"
        )

        def show(step: int, val: float, acc: float) -> None:
            print(f"  step {step:5d}   val loss {val:.4f}   val acc {acc:.3f}")

        results[name] = _train(factory(best), data, args.steps, args.seed, log=show)
    print("\n  optimizer   final val loss   val acc   wall-clock")
    for name, (val, acc, secs) in results.items():
        print(f"  {name:10s}  {val:14.4f}   {acc:7.3f}   {secs:8.2f} s")


if __name__ == "__main__":
    main()
