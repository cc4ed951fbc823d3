"""The two seeded models of the step-time benchmark and their fixed gradients.

The transformer is the ``lm`` workload's :class:`~precond.bench.workloads.CharTransformer` at the sizes of
:data:`TRANSFORMER`, with a fused ``[3d, d]`` query/key/value matrix and biases in the blocks (``fused_qkv``,
``bias``); the conv net (2-D convolutions on 32×32×3 inputs) exists only here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from precond.bench.workloads import CharTransformer

WORKLOADS = ("transformer", "conv")


class TransformerSize(NamedTuple):
    vocab: int
    width: int
    depth: int
    heads: int
    context: int
    batch: int


#: 4 layers, d_model 256, 4 heads, MLP 4×, vocab 256, context 128, untied LM head, batch 16.
TRANSFORMER = TransformerSize(vocab=256, width=256, depth=4, heads=4, context=128, batch=16)
CONV_BATCH = 32


class SmallConvNet(nn.Module):
    """Three 3×3 conv + ReLU + 2×2 max-pool stages (32/64/128 channels), then a linear head.

    ``flat_kernels=True`` stores each kernel as the [out, in·kh·kw] matrix it is reshaped from (same numbers,
    same gradients up to that reshape), for optimizers that cannot merge conv kernels that way themselves.
    """

    CHANNELS = (3, 32, 64, 128)

    def __init__(self, flat_kernels: bool = False, classes: int = 10) -> None:
        super().__init__()
        self.kernel_shapes = [
            (c_out, c_in, 3, 3) for c_in, c_out in zip(self.CHANNELS, self.CHANNELS[1:], strict=False)
        ]
        self.kernels = nn.ParameterList()
        self.biases = nn.ParameterList()
        for shape in self.kernel_shapes:
            fan_in = shape[1] * shape[2] * shape[3]
            kernel = torch.randn(shape) * (2.0 / fan_in) ** 0.5
            self.kernels.append(nn.Parameter(kernel.flatten(1) if flat_kernels else kernel))
            self.biases.append(nn.Parameter(torch.zeros(shape[0])))
        self.head = nn.Linear(self.CHANNELS[-1] * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kernel, bias, shape in zip(self.kernels, self.biases, self.kernel_shapes, strict=True):
            x = F.max_pool2d(F.relu(F.conv2d(x, kernel.view(shape), bias, padding=1)), 2)
        return self.head(x.flatten(1))


def build_model(workload: str, seed: int, flat_kernels: bool = False) -> tuple[nn.Module, list[torch.Tensor]]:
    """The seeded model and its gradients for one fixed random batch."""
    torch.manual_seed(seed)
    if workload == "transformer":
        size = TRANSFORMER
        model: nn.Module = CharTransformer(
            size.vocab, size.context, size.width, size.depth, size.heads, fused_qkv=True, bias=True
        )
        tokens = torch.randint(0, size.vocab, (size.batch, size.context))
        targets = torch.randint(0, size.vocab, (size.batch, size.context))
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
    elif workload == "conv":
        model = SmallConvNet(flat_kernels=flat_kernels)
        images = torch.randn(CONV_BATCH, 3, 32, 32)
        labels = torch.randint(0, 10, (CONV_BATCH,))
        loss = F.cross_entropy(model(images), labels)
    else:
        raise ValueError(f"unknown workload {workload!r}: choose from {', '.join(WORKLOADS)}")
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]  # type: ignore[union-attr]
    model.zero_grad(set_to_none=True)
    return model, grads


def matrix_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """Every parameter with 2+ dims as the [shape[0], prod(rest)] matrix SOAP preconditions."""
    return [(p.shape[0], p[0].numel()) for p in model.parameters() if p.dim() >= 2]


def hidden_matrices(model: nn.Module) -> list[str]:
    """Names of the hidden weight matrices: the blocks' 2-D weights, or the conv kernels (4-D, or their 2-D twins).

    Not the embeddings, the LM/classifier head, or any 1-D parameter: the params Muon is meant for, and the
    only ones ``torch.optim.Muon`` accepts.
    """
    return [n for n, p in model.named_parameters() if p.dim() >= 2 and n.startswith(("blocks.", "kernels."))]
