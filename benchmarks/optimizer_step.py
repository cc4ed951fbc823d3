"""Time optimizer ``step()`` for precond's SOAP against torch AdamW and the PyPI SOAP peers, in one process.

    python benchmarks/optimizer_step.py            # full run (CPU: a few minutes)
    python benchmarks/optimizer_step.py --quick    # smoke run

Models: a 4-layer decoder-only transformer (d=256, 4 heads, MLP 4×, vocab 256, context 128, untied head) and a
conv net for 32×32×3 images.  Gradients are computed once and re-assigned before every step, so only
``opt.step()`` is timed.  Optimizers run interleaved, in rounds of ``--block`` steps each, so machine noise hits
all of them alike.  Same hyperparameters everywhere: lr 3e-3, betas (0.95, 0.95), shampoo_beta 0.95, eps 1e-8,
weight decay 0.01, refresh every 10 steps, every matrix preconditioned on both sides (no blocking), conv
kernels as [out, in·kh·kw], 1-D parameters Adam.

The *floor* is what any SOAP must compute: per matrix m×n and step, the factor update (G Gᵀ, Gᵀ G), the
projection (Q_Lᵀ G Q_R) and the projection back (Q_L U Q_Rᵀ) — 3 units of m·n·(m+n) multiply-adds — plus, every
10 steps, per factor A@Q and a QR, the rotation Q_newᵀ Q_old and one unit of momentum transport.  It is timed
with plain ``torch.matmul`` / ``torch.linalg.qr`` calls, one per matrix, on the real shapes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

HP = dict(lr=3e-3, betas=(0.95, 0.95), eps=1e-8, weight_decay=0.01)
FREQ = 10


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 256, d: int = 256, layers: int = 4, heads: int = 4, ctx: int = 128) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.blocks(x)))


def convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 4 * 4, 10),
    )  # fmt: skip


def make_workload(name: str, seed: int) -> tuple[nn.Module, list[torch.Tensor]]:
    """A model and one fixed set of gradients for it."""
    torch.manual_seed(seed)
    if name == "transformer":
        model: nn.Module = TinyGPT()
        idx = torch.randint(0, 256, (16, 128))
        loss = nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    else:
        model = convnet()
        x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    return model, grads


def optimizers() -> dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]]:
    from precond.optim import SOAP

    out: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
        "torch AdamW": lambda ps: torch.optim.AdamW(ps, **HP),
        "precond SOAP": lambda ps: SOAP(ps, shampoo_beta=0.95, precondition_frequency=FREQ, max_precond_dim=4096, **HP),
    }
    try:
        import heavyball

        # HeavyBall's refresh is "probability accumulated": with the schedule off (use_precond_schedule=False) it
        # accumulates 1/precondition_frequency per step and refreshes every 10th step, like the others.
        # merge_dims=True is its conv merge ([out, in·kh·kw]-like); it compiles its kernels on first use.
        out["HeavyBall SOAP"] = lambda ps: heavyball.SOAP(
            ps, shampoo_beta=0.95, precondition_frequency=FREQ, max_precond_dim=4096, merge_dims=True,
            use_precond_schedule=False, **HP,
        )  # fmt: skip
    except ImportError:
        print("heavyball not installed: skipped", file=sys.stderr)
    try:
        import pytorch_optimizer

        # Its merge_dims=True crashes on 1-D parameters (4.1.0: "shape '[1]' is invalid for input of size 256"),
        # so it runs unmerged: conv kernels get one small factor per dim (cheaper, different math) — the
        # transformer comparison is the like-for-like one.
        out["pytorch_optimizer SOAP"] = lambda ps: pytorch_optimizer.SOAP(
            ps, shampoo_beta=0.95, precondition_frequency=FREQ, max_precondition_dim=4096, merge_dims=False, **HP
        )
    except ImportError:
        print("pytorch_optimizer not installed: skipped", file=sys.stderr)
    return out


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of all tensors in the optimizer state, each storage counted once."""
    seen: dict[int, int] = {}

    def visit(x: object) -> None:
        if isinstance(x, torch.Tensor):
            s = x.untyped_storage()
            seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
        elif isinstance(x, dict):
            for v in x.values():
                visit(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)

    for st in opt.state.values():
        visit(st)
    return sum(seen.values())


def matrix_shapes(model: nn.Module) -> list[tuple[int, int]]:
    return [(p.shape[0], p[0].numel()) for p in model.parameters() if p.dim() >= 2]


def floor_timer(shapes: list[tuple[int, int]]) -> tuple[Callable[[], None], Callable[[], None]]:
    """Bare per-step matmuls and the bare refresh, on preallocated fp32 tensors of the real shapes."""
    mats = [
        (torch.randn(m, n), torch.randn(m, m), torch.randn(n, n), torch.randn(m, m), torch.randn(n, n))
        for m, n in shapes
    ]

    def per_step() -> None:
        for g, ql, qr, gl, gr in mats:
            gl.addmm_(g, g.T)
            gr.addmm_(g.T, g)
            u = ql.T @ g @ qr
            ql @ u @ qr.T

    def refresh() -> None:
        for g, ql, qr, gl, gr in mats:
            for gg, q in ((gl, ql), (gr, qr)):
                q_new = torch.linalg.qr(gg @ q).Q
                q_new.T @ q
            ql @ g @ qr.T  # one unit of momentum transport

    return per_step, refresh


def timed(fn: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run_workload(name: str, args: argparse.Namespace) -> dict:
    factories = optimizers()
    runs = {}
    for label, factory in factories.items():
        model, grads = make_workload(name, args.seed)
        params = list(model.parameters())
        opt = factory(params)

        consumes_grad = label.startswith("HeavyBall")  # HeavyBall frees p.grad after use

        def step(params=params, grads=grads, opt=opt, fresh=consumes_grad) -> None:
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone() if fresh else g
            opt.step()

        t0 = time.perf_counter()
        warm = args.warmup * (3 if label.startswith("HeavyBall") else 1)
        for _ in range(warm):
            step()
        print(f"  [{name}] {label}: warm-up {warm} steps in {time.perf_counter() - t0:.1f} s", flush=True)
        runs[label] = dict(step=step, opt=opt, times=[])
    rounds = max(1, args.steps // args.block)
    for _ in range(rounds):
        for r in runs.values():
            r["times"] += timed(r["step"], args.block)
    per_step, refresh = floor_timer(matrix_shapes(make_workload(name, args.seed)[0]))
    per_step(), refresh()
    floor_step = statistics.median(timed(per_step, max(5, args.steps // 10)))
    floor_refresh = statistics.median(timed(refresh, 3))
    floor = floor_step + floor_refresh / FREQ
    result: dict = {"floor_ms": 1e3 * floor, "floor_step_ms": 1e3 * floor_step, "floor_refresh_ms": 1e3 * floor_refresh}
    adamw = statistics.mean(runs["torch AdamW"]["times"])
    for label, r in runs.items():
        mean, median = statistics.mean(r["times"]), statistics.median(r["times"])
        result[label] = dict(
            mean_ms=1e3 * mean,
            median_ms=1e3 * median,
            x_adamw=mean / adamw,
            x_floor=mean / floor,
            state_mib=state_bytes(r["opt"]) / 2**20,
        )
    return result


def print_table(name: str, res: dict) -> None:
    print(f"\n{name}: floor {res['floor_ms']:.1f} ms/step "
          f"(per-step matmuls {res['floor_step_ms']:.1f} + refresh {res['floor_refresh_ms']:.1f}/{FREQ})")  # fmt: skip
    print(f"  {'optimizer':24s} {'mean ms':>9s} {'median ms':>10s} {'×AdamW':>8s} {'×floor':>8s} {'state MiB':>10s}")
    labels = [k for k in res if isinstance(res[k], dict)]
    for label in labels:
        r = res[label]
        print(
            f"  {label:24s} {r['mean_ms']:9.2f} {r['median_ms']:10.2f} {r['x_adamw']:8.2f} "
            f"{r['x_floor']:8.2f} {r['state_mib']:10.2f}"
        )
    ours = res["precond SOAP"]["mean_ms"]
    for label in labels:
        if "SOAP" in label and label != "precond SOAP":
            print(f"  precond SOAP / {label}: {ours / res[label]['mean_ms']:.2f}× mean step time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per optimizer (default 100)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up steps (HeavyBall: 3×, compile)")
    parser.add_argument("--block", type=int, default=10, help="steps per optimizer per interleaved round")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workloads", default="transformer,conv")
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke testing")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "optimizer_step.json")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.block = 10, 3, 5
    if args.threads:
        torch.set_num_threads(args.threads)
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    meta = {
        "command": " ".join(["python", *sys.argv]),
        "torch": torch.__version__,
        "heavyball": version("heavyball"),
        "pytorch_optimizer": version("pytorch_optimizer"),
        "precond": version("precond"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(meta))
    results = {"meta": meta}
    for name in args.workloads.split(","):
        results[name] = run_workload(name, args)
        print_table(name, results[name])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
