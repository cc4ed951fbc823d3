"""Bring your own model: a HuggingFace ``transformers`` GPT-2 built from a tiny config (no download), as a
``precond bench`` workload.

    pip install transformers
    precond bench --workload examples/hf_gpt2.py:workload --optimizers adamw,muon --seeds 2

The text is made here: sequences of a fixed random Markov chain over 32 tokens (its transition table does not
depend on the trial's seed), so the validation loss has a floor, the chain's entropy rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from precond.bench import Task

VOCAB, CONTEXT = 32, 32


def _chain(seed: int, count: int, table: torch.Tensor) -> torch.Tensor:
    """``count`` sequences of ``CONTEXT + 1`` tokens of the Markov chain ``table``, from generator ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.empty(count, CONTEXT + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, VOCAB, (count,), generator=gen)
    for t in range(CONTEXT):  # a loop over positions, vectorised over the sequences
        tokens[:, t + 1] = torch.multinomial(table[tokens[:, t]], 1, generator=gen).squeeze(1)
    return tokens


def _table() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.softmax(2.0 * torch.randn(VOCAB, VOCAB, generator=gen), dim=1)


@dataclass(frozen=True)
class TinyGPT2Workload:
    name: str = "hf-gpt2-tiny"
    preset: str = "v1"
    steps: int = 40
    warmup: int = 4
    eval_every: int = 10
    batch_size: int = 16

    def build(self, seed: int) -> Task:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=VOCAB,
            n_positions=CONTEXT + 1,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=0,
            eos_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
        table = _table()
        val = _chain(1_000_000, 64, table)  # fixed validation sequences

        def loss_on(ids: torch.Tensor) -> torch.Tensor:
            return model(input_ids=ids, labels=ids).loss

        def train_loss(step: int) -> torch.Tensor:
            return loss_on(_chain(seed * 100_003 + step + 1, self.batch_size, table))

        def validate() -> float:
            model.eval()
            with torch.no_grad():
                value = float(loss_on(val))
            model.train()
            return value

        # GPT-2 ties the output head to wte; Muon's own rule already leaves wte/wpe to AdamW, and the hint makes
        # the intent explicit (any name from model.named_parameters() can be listed).
        return Task(model, train_loss, validate, adamw_params=("transformer.wte.weight", "transformer.wpe.weight"))


def workload() -> TinyGPT2Workload:
    return TinyGPT2Workload()
