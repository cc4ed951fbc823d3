"""What each forked rank runs for ``test_sharded.py``: every scenario in one process-group lifetime.

Each scenario compares :class:`ShardedOptimizer` with the single-process optimizer stepping a replica on the same
global gradients (the independent oracle), and reports plain numbers (max differences, counts, messages); the
parent asserts on them.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

from precond.optim import SOAP, Muon, Shampoo
from precond.optim.distributed import ShardedOptimizer

CLASSES = {"soap": SOAP, "shampoo": Shampoo, "muon": Muon}
#: hyperparameters that make a few steps exercise the refreshes (eigh/QR, inverse roots)
HPARAMS: dict[str, dict[str, Any]] = {
    "soap": {"lr": 1e-2, "precondition_frequency": 2},
    "shampoo": {"lr": 1e-2, "precondition_frequency": 2, "start_preconditioning_step": 2},
    "muon": {"lr": 2e-2},
}
STEPS = 5


class Net(nn.Module):
    """Even widths (bitwise batched eigh/QR on any subset of a batch), repeated shapes, and a dead layer."""

    def __init__(self, dims: tuple[int, ...] = (16, 8, 8, 8, 4)) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.dead = nn.Linear(4, 4)  # never used: no gradient on any rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.tanh(layer(x))
        return self.layers[-1](x)


def _data(seed: int, n: int, d_in: int, d_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randn(n, d_out, generator=g)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model(x) - y).square().mean()


def _maxdiff(a: nn.Module, b: nn.Module) -> float:
    return max(
        float((p.detach() - q.detach()).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def _full(p: torch.Tensor) -> torch.Tensor:
    return p.full_tensor() if hasattr(p, "full_tensor") else p  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------- replicated (DDP)
def replicated_parity(name: str, rank: int) -> dict[str, Any]:
    """Every rank holds the full-batch gradient; sharded vs single-process, bitwise."""
    torch.manual_seed(0)
    model = Net()
    ref = copy.deepcopy(model)
    groups = lambda m: [  # noqa: E731  (two param groups: one collective each)
        {"params": [p for n, p in m.named_parameters() if n.endswith("weight")]},
        {"params": [p for n, p in m.named_parameters() if not n.endswith("weight")], "weight_decay": 0.0},
    ]
    opt = ShardedOptimizer(CLASSES[name], groups(model), **HPARAMS[name])
    ref_opt = CLASSES[name](groups(ref), **HPARAMS[name])
    x, y = _data(1, 32, 16, 4)
    counts: Counter[str] = Counter()
    for step in range(STEPS):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            _loss(m, x, y).backward()
        if step == STEPS - 1:
            with _counting(counts):
                opt.step()
        else:
            opt.step()
        ref_opt.step()
    owned = sum(1 for g in opt.param_groups for p in g["params"] if opt.owner(p) == rank)
    return {"diff": _maxdiff(model, ref), "counts": dict(counts), "owned": owned}


def lonely(rank: int, tmp: Path) -> dict[str, Any]:
    """One parameter on W ranks: all but its owner own nothing, yet step, save and load with the others."""
    torch.manual_seed(0)
    model = nn.Linear(8, 8, bias=False)
    ref = copy.deepcopy(model)
    opt = ShardedOptimizer(SOAP, model.parameters(), **HPARAMS["soap"])
    ref_opt = SOAP(ref.parameters(), **HPARAMS["soap"])
    x, y = _data(8, 16, 8, 8)
    for _ in range(3):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            (m(x) - y).square().mean().backward()
            o.step()
    dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=str(tmp / "lonely"))
    again = ShardedOptimizer(SOAP, model.parameters(), **HPARAMS["soap"])
    sd = {"optim": get_optimizer_state_dict(model, again)}
    dcp.load(sd, checkpoint_id=str(tmp / "lonely"))
    set_optimizer_state_dict(model, again, sd["optim"])
    loaded = _same_state(opt.state_dict()["state"], again.state_dict()["state"])
    return {"diff": _maxdiff(model, ref), "owns": opt.owner(model.weight) == rank, "loaded": loaded}


def ddp_parity(name: str, rank: int, world: int) -> dict[str, Any]:
    """Real DDP on each rank's part of the batch against one process on the whole batch (float tolerance).

    Not SOAP: its Adam in the eigenbasis divides the rounding noise of the null-space directions of a
    rank-deficient factor by that noise's own RMS, so ~1e-9 gradient differences become O(lr) steps; Shampoo's
    damped roots and Muon's Newton–Schulz are continuous in the gradient.
    """
    torch.manual_seed(0)
    model = Net()
    ref = copy.deepcopy(model)
    start = copy.deepcopy(model)
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    opt = ShardedOptimizer(CLASSES[name], model.parameters(), **HPARAMS[name])
    ref_opt = CLASSES[name](ref.parameters(), **HPARAMS[name])
    x, y = _data(2, 12 * world, 16, 4)
    mine = slice(12 * rank, 12 * (rank + 1))
    for _ in range(STEPS):
        opt.zero_grad()
        _loss(ddp, x[mine], y[mine]).backward()
        opt.step()
        ref_opt.zero_grad()
        _loss(ref, x, y).backward()
        ref_opt.step()
    with torch.no_grad():
        losses = (float(_loss(model, x, y)), float(_loss(ref, x, y)))
    return {"diff": _maxdiff(model, ref), "moved": _maxdiff(ref, start), "losses": losses}


def bf16_updates() -> dict[str, Any]:
    """``communication_dtype=bfloat16``: replicas stay identical, and close to the exact run."""
    torch.manual_seed(0)
    model = Net()
    ref = copy.deepcopy(model)
    opt = ShardedOptimizer(Shampoo, model.parameters(), communication_dtype=torch.bfloat16, **HPARAMS["shampoo"])
    ref_opt = Shampoo(ref.parameters(), **HPARAMS["shampoo"])
    x, y = _data(3, 32, 16, 4)
    start = copy.deepcopy(model)
    for _ in range(STEPS):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            _loss(m, x, y).backward()
            o.step()
    moved = _maxdiff(ref, start)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return {
        "diff": _maxdiff(model, ref),
        "moved": moved,
        "replicas": max(float((g - flat).abs().max()) for g in gathered),
    }


def checkpoint_same_world(tmp: Path) -> dict[str, Any]:
    """Train, save (DCP), train on; a fresh optimizer loads and trains the same steps: bitwise."""
    torch.manual_seed(0)
    model = Net()
    opt = ShardedOptimizer(SOAP, model.parameters(), **HPARAMS["soap"])
    x, y = _data(4, 32, 16, 4)

    def train(m: nn.Module, o: ShardedOptimizer, steps: int) -> None:
        for _ in range(steps):
            o.zero_grad()
            _loss(m, x, y).backward()
            o.step()

    fresh_model = copy.deepcopy(model)
    fresh = ShardedOptimizer(SOAP, fresh_model.parameters(), **HPARAMS["soap"])
    before = copy.deepcopy(fresh.state_dict()["state"])
    get_optimizer_state_dict(fresh_model, fresh)  # must not take a dummy step
    untouched = _same_state(before, fresh.state_dict()["state"]) and _maxdiff(fresh_model, model) == 0.0

    train(model, opt, 3)
    dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=str(tmp / "same"))
    resumed_model = copy.deepcopy(model)
    train(model, opt, 3)
    resumed = ShardedOptimizer(SOAP, resumed_model.parameters(), **HPARAMS["soap"])
    sd = {"optim": get_optimizer_state_dict(resumed_model, resumed)}
    dcp.load(sd, checkpoint_id=str(tmp / "same"))
    set_optimizer_state_dict(resumed_model, resumed, sd["optim"])
    train(resumed_model, resumed, 3)
    return {"diff": _maxdiff(model, resumed_model), "untouched": untouched}


def checkpoint_across_worlds(tmp: Path, rank: int) -> dict[str, Any]:
    """Save at this world size for the parent to load at W = 1; load the parent's W = 1 checkpoint and train on."""
    torch.manual_seed(0)
    model = Net()
    opt = ShardedOptimizer(SOAP, model.parameters(), **HPARAMS["soap"])
    x, y = _data(5, 32, 16, 4)
    for _ in range(3):
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()
    dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=str(tmp / "from_world"))
    if rank == 0:
        torch.save(model.state_dict(), tmp / "from_world_model.pt")
    # the parent wrote a W = 1 checkpoint of plain SOAP (and its model) before the launch
    model1 = Net()
    model1.load_state_dict(torch.load(tmp / "w1_model.pt"))
    opt1 = ShardedOptimizer(SOAP, model1.parameters(), **HPARAMS["soap"])
    sd = {"optim": get_optimizer_state_dict(model1, opt1)}
    dcp.load(sd, checkpoint_id=str(tmp / "w1"))
    set_optimizer_state_dict(model1, opt1, sd["optim"])
    for _ in range(3):
        opt1.zero_grad()
        _loss(model1, x, y).backward()
        opt1.step()
    return {"params": [p.detach().clone() for p in model1.parameters()]}


def refusals(rank: int) -> dict[str, Any]:
    """A gradient on some ranks only and a non-finite gradient on one rank: the same outcome on every rank."""
    out: dict[str, Any] = {}
    torch.manual_seed(0)
    model = Net()
    opt = ShardedOptimizer(Muon, model.parameters(), nonfinite="raise")
    x, y = _data(6, 8, 16, 4)
    _loss(model, x, y).backward()
    if rank == 0:
        model.dead.weight.grad = torch.zeros_like(model.dead.weight)
    out["partial"] = _error(opt.step)
    model.dead.weight.grad = None
    if rank == dist.get_world_size() - 1:
        model.layers[0].weight.grad[0, 0] = float("inf")  # type: ignore[index]
    before = copy.deepcopy(model)
    out["raise"] = _error(opt.step)
    skip = ShardedOptimizer(SOAP, model.parameters())  # nonfinite="skip": a step with an inf is skipped everywhere
    skip.step()
    out["skipped"] = _maxdiff(model, before) == 0.0
    out["skips"] = sum(int(s["nonfinite_skips"]) for s in skip.state.values() if "nonfinite_skips" in s)
    return out


# ---------------------------------------------------------------------------------------------- FSDP2
class Uneven(nn.Module):
    """Dim-0 sizes 8, 5, 3, 2: uneven shards on 2 and 3 ranks, an empty one (2 rows on 3 ranks), a dead layer."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 5)
        self.c = nn.Linear(5, 3)
        self.d = nn.Linear(3, 2)
        self.dead = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(torch.tanh(self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))))


def fsdp_parity(name: str, rank: int, world: int, tmp: Path) -> dict[str, Any]:
    """FSDP2 (each rank its part of the batch) against one process stepping on the same full gradients."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = Uneven()
    ref = copy.deepcopy(model)
    mesh = init_device_mesh("cpu", (world,))
    for layer in (model.a, model.b, model.c, model.d, model.dead):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = ShardedOptimizer(CLASSES[name], model.parameters(), **HPARAMS[name])
    ref_opt = CLASSES[name](ref.parameters(), **HPARAMS[name])
    x, y = _data(7, 8 * world, 6, 2)
    mine = slice(8 * rank, 8 * (rank + 1))
    counts: Counter[str] = Counter()

    def train(m: nn.Module, o: ShardedOptimizer, steps: int, mirror: bool) -> None:
        for step in range(steps):
            o.zero_grad()
            _loss(m, x[mine], y[mine]).backward()
            if mirror:
                for p, q in zip(m.parameters(), ref.parameters(), strict=True):
                    q.grad = None if p.grad is None else _full(p.grad).clone()
                ref_opt.step()
            if mirror and step == steps - 1:
                with _counting(counts):
                    o.step()
            else:
                o.step()

    train(model, opt, STEPS, mirror=True)
    diff = max(float((_full(p) - q).abs().max()) for p, q in zip(model.parameters(), ref.parameters(), strict=True))
    out: dict[str, Any] = {"diff": diff, "counts": dict(counts)}
    if name == "muon":  # bitwise resume under FSDP2
        dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=str(tmp / "fsdp"))
        saved = {k: _full(v).clone() for k, v in model.state_dict().items()}
        train(model, opt, 2, mirror=False)
        after = [_full(p).clone() for p in model.parameters()]
        with torch.no_grad():
            for k, v in model.state_dict().items():
                _local(v).copy_(_local_of(saved[k], v))
        fresh = ShardedOptimizer(Muon, model.parameters(), **HPARAMS["muon"])
        sd = {"optim": get_optimizer_state_dict(model, fresh)}
        dcp.load(sd, checkpoint_id=str(tmp / "fsdp"))
        set_optimizer_state_dict(model, fresh, sd["optim"])
        train(model, fresh, 2, mirror=False)
        out["resume"] = max(float((_full(p) - a).abs().max()) for p, a in zip(model.parameters(), after, strict=True))
        try:  # DTensor and plain parameters in one optimizer
            ShardedOptimizer(Muon, [*model.parameters(), nn.Parameter(torch.zeros(2, 2))])
            out["mixed"] = None
        except ValueError as err:
            out["mixed"] = str(err)
    return out


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t  # type: ignore[no-any-return]


def _local_of(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The rows of ``full`` that ``like`` (a ``Shard(0)`` DTensor) holds on this rank."""
    local = _local(like)
    rows = -(-full.shape[0] // dist.get_world_size()) if full.ndim else 0
    start = min(dist.get_rank() * rows, full.shape[0]) if full.ndim else 0
    return full[start : start + local.shape[0]] if full.ndim else full


# ---------------------------------------------------------------------------------------------- helpers
class _counting:
    """Count the collectives ``torch.distributed`` is asked for inside the block."""

    NAMES = ("all_reduce", "all_gather_into_tensor", "all_to_all_single", "all_gather", "broadcast", "all_to_all")

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self.saved: dict[str, Callable[..., Any]] = {}

    def __enter__(self) -> None:
        for name in self.NAMES:
            original = getattr(dist, name)
            self.saved[name] = original

            def wrapper(*args: Any, _name: str = name, _f: Callable[..., Any] = original, **kw: Any) -> Any:
                self.counts[_name] += 1
                return _f(*args, **kw)

            setattr(dist, name, wrapper)

    def __exit__(self, *exc: object) -> None:
        for name, f in self.saved.items():
            setattr(dist, name, f)


def _same_state(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    def flat(x: Any) -> list[Any]:
        if isinstance(x, dict):
            return [v for k in sorted(x, key=str) for v in flat(x[k])]
        if isinstance(x, (list, tuple)):
            return [v for item in x for v in flat(item)]
        return [x]

    fa, fb = flat(a), flat(b)
    return len(fa) == len(fb) and all(
        torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v for u, v in zip(fa, fb, strict=True)
    )


def _error(f: Callable[[], Any]) -> str | None:
    try:
        f()
    except ValueError as err:
        return str(err)
    return None


def worker(rank: int, world: int, tmp: str) -> None:
    """Run every scenario on this rank and save the results to ``{tmp}/{rank}.pt``."""
    torch.set_num_threads(1)
    path = Path(tmp)
    out: dict[str, Any] = {}
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
        )
        for name in CLASSES:
            out[f"replicated_{name}"] = replicated_parity(name, rank)
            out[f"fsdp_{name}"] = fsdp_parity(name, rank, world, path)
        for name in ("shampoo", "muon"):
            out[f"ddp_{name}"] = ddp_parity(name, rank, world)
        out["bf16"] = bf16_updates()
        out["lonely"] = lonely(rank, path)
        out["ckpt_same"] = checkpoint_same_world(path)
        out["ckpt_across"] = checkpoint_across_worlds(path, rank)
        out["refusals"] = refusals(rank)
        dist.destroy_process_group()
    except Exception:  # reported to the parent
        out = {"crash": traceback.format_exc()}
    torch.save(out, path / f"{rank}.pt")
