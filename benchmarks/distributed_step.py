"""Per-step optimizer time of SOAP, Shampoo and Muon on 1, 2 and 4 CPU processes (gloo): every rank computing
every preconditioner (replicated, the naive data-parallel optimizer) against ``ShardedOptimizer`` (each
parameter's preconditioner on one rank, one all_gather per param group), and the bytes each rank receives per
step.  Gradients are random and identical on every rank (what DDP leaves); only ``opt.step()`` is timed.

    python benchmarks/distributed_step.py                 # full run: widths 512, 1, 2 and 4 processes
    python benchmarks/distributed_step.py --quick         # smoke run (tiny model, 2 steps)

Writes ``benchmarks/results/distributed_step.json`` (``--out``) and prints a table.  On a 2-core machine the
4-process rows measure oversubscription (overhead), not speedup.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent / "src")] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

from precond.optim import SOAP, Muon, Shampoo  # noqa: E402
from precond.optim.distributed import ShardedOptimizer, imbalance, rank_loads  # noqa: E402

OPTIMIZERS = {"soap": SOAP, "shampoo": Shampoo, "muon": Muon}
HPARAMS: dict[str, dict[str, Any]] = {
    "soap": {"precondition_frequency": 10},
    "shampoo": {"precondition_frequency": 10},
    "muon": {},
}


def _model(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [
            nn.Linear(width, 4 * width if i % 2 == 0 else width),
            nn.Linear(4 * width if i % 2 == 0 else width, width),
        ]
    return nn.Sequential(*layers)


def _received_bytes(opt: ShardedOptimizer, world: int) -> int:
    """Bytes one rank receives per step in the update all_gathers: (W − 1) segments of the largest rank load."""
    total = 0
    for group in opt.param_groups:
        loads = [0] * world
        for p in group["params"]:
            loads[opt.owner(p)] += p.numel()
        total += (world - 1) * max(loads) * 4  # float32 exchange (the default, exact)
    return total


def _worker(rank: int, world: int, tmp: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world)
    rows = []
    for name in args.optimizers:
        for mode in ("replicated", "sharded"):
            model = _model(args.width, args.depth)
            params = list(model.parameters())
            if mode == "replicated":
                opt: torch.optim.Optimizer = OPTIMIZERS[name](params, **HPARAMS[name])
            else:
                opt = ShardedOptimizer(OPTIMIZERS[name], params, **HPARAMS[name])
            gen = torch.Generator().manual_seed(1)
            times = []
            for step in range(args.warmup + args.steps):
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen) * 1e-2
                dist.barrier()
                start = time.perf_counter()
                opt.step()
                elapsed = time.perf_counter() - start
                slowest = torch.tensor([elapsed])
                dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # the step ends when the slowest rank ends
                if step >= args.warmup:
                    times.append(float(slowest))
            row: dict[str, Any] = {
                "optimizer": name,
                "mode": mode,
                "world": world,
                "step_ms": 1e3 * statistics.median(times),
            }
            if isinstance(opt, ShardedOptimizer):
                row["received_bytes_per_rank"] = _received_bytes(opt, world)
                costs = [float(p.numel()) for g in opt.param_groups for p in g["params"]]
                owners = [opt.owner(p) for g in opt.param_groups for p in g["params"]]
                row["numel_imbalance"] = imbalance(costs, owners, world)
                row["numel_per_rank"] = rank_loads(costs, owners, world)
            else:
                row["received_bytes_per_rank"] = 0
            rows.append(row)
    if rank == 0:
        Path(tmp, "rows.json").write_text(json.dumps(rows))
    dist.destroy_process_group()


def _run(world: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=_worker, args=(r, world, tmp, args)) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=args.timeout)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"world {world}: a worker failed (exit codes {[p.exitcode for p in procs]})")
        return json.loads(Path(tmp, "rows.json").read_text())  # type: ignore[no-any-return]


def _relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it (records stay machine-independent)."""
    try:
        return str(path.resolve().relative_to(_HERE.parent))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: width 32, depth 1, 2 steps, worlds 1 and 2")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2, help="pairs of (w→4w, 4w→w) or (w→w, w→w) layers")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--optimizers", nargs="+", choices=sorted(OPTIMIZERS), default=["soap", "shampoo", "muon"])
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per world size before the run is killed")
    parser.add_argument("--out", type=Path, default=_HERE / "results" / "distributed_step.json")
    args = parser.parse_args()
    if args.quick:
        args.width, args.depth, args.steps, args.warmup, args.worlds = 32, 1, 2, 1, [1, 2]
        if args.out == _HERE / "results" / "distributed_step.json":
            args.out = _HERE / "results" / "distributed_step_quick.json"
    rows = [row for world in args.worlds for row in _run(world, args)]
    print(f"{'optimizer':9} {'mode':10} {'W':>2} {'step ms':>9} {'recv MB/rank':>12} {'numel max/ideal':>15}")
    for r in rows:
        mb = r["received_bytes_per_rank"] / 2**20
        imb = f"{r['numel_imbalance']:.2f}" if "numel_imbalance" in r else "-"
        print(f"{r['optimizer']:9} {r['mode']:10} {r['world']:>2} {r['step_ms']:>9.1f} {mb:>12.2f} {imb:>15}")
    record = {
        "rows": rows,
        "args": {k: (_relative(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpus": mp.cpu_count(), "torch": torch.__version__},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
