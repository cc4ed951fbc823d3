"""Train a small MLP with SOAP sharded across processes (DDP, or FSDP2 with ``--fsdp``), save and resume with
``torch.distributed.checkpoint``.  On CPU:

    torchrun --nproc-per-node 2 examples/distributed_soap.py            # DDP + ShardedOptimizer(SOAP)
    torchrun --nproc-per-node 2 examples/distributed_soap.py --fsdp     # FSDP2 (fully_shard) instead
    torchrun --nproc-per-node 2 examples/distributed_soap.py --optimizer muon

Each rank trains on its own part of every batch; each parameter's preconditioner is computed by one rank only.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

from precond.optim import SOAP, Muon, Shampoo
from precond.optim.distributed import ShardedOptimizer

OPTIMIZERS = {"soap": SOAP, "shampoo": Shampoo, "muon": Muon}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="soap")
    parser.add_argument("--fsdp", action="store_true", help="shard the model with FSDP2 fully_shard instead of DDP")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial weights on every rank
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    if args.fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        net: nn.Module = model
    else:
        net = nn.parallel.DistributedDataParallel(model)
    opt = ShardedOptimizer(OPTIMIZERS[args.optimizer], model.named_parameters(), lr=3e-3)

    data = torch.Generator().manual_seed(1)
    x = torch.randn(64 * world, 32, generator=data)
    y = torch.sin(x.sum(1, keepdim=True))
    mine = slice(64 * rank, 64 * (rank + 1))

    def train(steps: int) -> float:
        for _ in range(steps):
            opt.zero_grad()
            loss = (net(x[mine]) - y[mine]).square().mean()
            loss.backward()
            opt.step()
        return float(loss.detach())

    loss = train(args.steps)
    owned = sum(opt.owner(p) == rank for p in model.parameters())
    print(f"rank {rank}/{world}: owns {owned} of {len(list(model.parameters()))} parameters, loss {loss:.4f}")

    folder = [tempfile.mkdtemp() if rank == 0 else None]
    dist.broadcast_object_list(folder)
    dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=folder[0])
    state = {"optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=folder[0])
    set_optimizer_state_dict(model, opt, state["optim"])
    print(f"rank {rank}: resumed from {folder[0]}, loss after 5 more steps {train(5):.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
