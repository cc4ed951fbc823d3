"""The 1B-parameter scaling analysis of ``docs/distributed.md`` (arithmetic only, nothing is timed): state memory
per rank, bytes per rank per step and the load balance of ``ShardedOptimizer``'s ownership plan for a 24-layer,
d = 2048 transformer (MLP 8192, unfused q/k/v/o, tied 50 257-token embedding) on W ranks.

    python benchmarks/distributed_scaling.py            # W = 8 and 64
    python benchmarks/distributed_scaling.py --worlds 8 16 64 128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent / "src")] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch  # noqa: E402

from precond.optim import SOAP, Muon, Shampoo  # noqa: E402
from precond.optim.distributed import assign_owners, imbalance  # noqa: E402

D, MLP, LAYERS, VOCAB = 2048, 8192, 24, 50257
GB = 1e9


def shapes(embedding: bool = True) -> list[tuple[int, ...]]:
    """The hidden matrices plus the embedding (norm gains are negligible and left out)."""
    per_layer = [(D, D)] * 4 + [(MLP, D), (D, MLP)]
    return [(VOCAB, D)] * embedding + per_layer * LAYERS


def state_numel(name: str, opt: torch.optim.Optimizer, p: torch.Tensor) -> int:
    """fp32 state elements of ``p`` (SOAP/Shampoo: moments plus two d×d matrices per factored dim per block)."""
    if name == "muon":
        return p.numel() if p.shape[0] != VOCAB else 2 * p.numel()  # momentum; the embedding runs AdamW (m, v)
    group = opt.param_groups[0]
    layout = opt._plan(p, group)  # type: ignore[attr-defined]
    moments = 2 * p.numel()  # SOAP: exp_avg, exp_avg_sq; Shampoo: exp_avg, graft_sq
    matrices = sum(
        2 * d * d
        for shape, fac in zip(layout.block_shapes, layout.factored, strict=True)
        for d, on in zip(shape, fac, strict=True)
        if on
    )
    return moments + matrices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--no-embedding", action="store_true", help="hidden matrices only (embedding kept elsewhere)")
    args = parser.parse_args()
    params = [torch.empty(s, device="meta") for s in shapes(not args.no_embedding)]
    total = sum(p.numel() for p in params)
    print(f"parameters: {total / 1e9:.3f} B ({len(params)} matrices), fp32 = {4 * total / GB:.2f} GB")
    named = [(("embed.weight" if p.shape[0] == VOCAB else f"h{i}.weight"), p) for i, p in enumerate(params)]
    optimizers = {
        "soap": SOAP(params),
        "shampoo": Shampoo(params),
        "muon": Muon(named),
    }
    print(
        f"{'opt':8} {'W':>3} {'cost':6} {'state GB/rank (repl → sharded max)':>36} {'flops max/ideal':>16} "
        f"{'numel max/ideal':>16} {'DDP AR GB':>10} {'+AG GB':>8} {'FSDP2 GB':>9} {'+a2a GB':>8}"
    )
    for name, opt in optimizers.items():
        group = opt.param_groups[0]
        flops = [opt._work_estimate(p, group) for p in params]  # type: ignore[attr-defined]
        sizes = [float(p.numel()) for p in params]
        states = [state_numel(name, opt, p) for p in params]
        for world in args.worlds:
            for cost in ("flops", "numel"):
                owners = assign_owners(flops if cost == "flops" else sizes, world)
                state_max = max(sum(s for s, o in zip(states, owners, strict=True) if o == r) for r in range(world))
                numel_max = max(sum(n for n, o in zip(sizes, owners, strict=True) if o == r) for r in range(world))
                ddp = 2 * (world - 1) / world * total * 4 / GB  # ring all-reduce of the gradients, sent per rank
                gather = (world - 1) * numel_max * 4 / GB  # all_gather of the updates, padded to the largest load
                fsdp = 3 * (world - 1) / world * total * 4 / GB  # FSDP2: all-gather fwd + bwd, reduce-scatter
                a2a = 3 * (world - 1) / world**2 * total * 4 / GB  # gradient + parameter shards in, shards out
                print(
                    f"{name:8} {world:>3} {cost:6} {4 * sum(states) / GB:>17.1f} → {4 * state_max / GB:>6.2f}"
                    f"{'':>10} {imbalance(flops, owners, world):>16.2f} {imbalance(sizes, owners, world):>16.2f}"
                    f" {ddp:>10.2f} {gather:>8.2f} {fsdp:>9.2f} {a2a:>8.2f}"
                )


if __name__ == "__main__":
    main()
