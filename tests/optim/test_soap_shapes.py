"""Large and odd shapes: blocking, conv merging, embeddings, 0-d/1-d, bf16/fp16 parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from precond.linalg import plan_layout
from precond.optim import SOAP


def _grads(shape, n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dtype) for _ in range(n)]


def _run(params, grads_per_param, **kw):
    opt = SOAP(params, **kw)
    for step_grads in zip(*grads_per_param, strict=True):
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
    return opt


def test_blocked_dim_equals_soap_on_each_block_separately():
    """A 30×8 matrix with max_precond_dim=10 is three 10×8 blocks, each exactly a SOAP of its own."""
    torch.manual_seed(0)
    w0 = torch.randn(30, 8)
    grads = _grads((30, 8), 12)
    whole = nn.Parameter(w0.clone())
    opt = _run([whole], [grads], max_precond_dim=10, precondition_frequency=3, lr=1e-2)
    assert len(opt.state[whole]["Q"]) == 3
    blocks = [nn.Parameter(w0[i : i + 10].clone()) for i in range(0, 30, 10)]
    _run(blocks, [[g[i : i + 10] for g in grads] for i in range(0, 30, 10)], precondition_frequency=3, lr=1e-2)
    torch.testing.assert_close(whole.detach(), torch.cat([b.detach() for b in blocks]))


def test_blocking_off_leaves_large_dim_unrotated():
    p = nn.Parameter(torch.randn(30, 8))
    opt = _run([p], [_grads((30, 8), 3)], max_precond_dim=10, blocking=False)
    q_left, q_right = opt.state[p]["Q"][0]
    assert q_left is None and q_right.shape == (8, 8)


def test_conv_kernel_is_preconditioned_as_out_by_fan_in_matrix():
    """Default merge: a [out, in, kh, kw] kernel behaves exactly like the [out, in·kh·kw] matrix."""
    torch.manual_seed(0)
    w0 = torch.randn(6, 3, 3, 3)
    grads = _grads((6, 3, 3, 3), 8)
    conv = nn.Parameter(w0.clone())
    opt = _run([conv], [grads], precondition_frequency=3, lr=1e-2)
    assert [q.shape for q in opt.state[conv]["Q"][0]] == [(6, 6), (27, 27)]
    mat = nn.Parameter(w0.reshape(6, 27).clone())
    _run([mat], [[g.reshape(6, 27) for g in grads]], precondition_frequency=3, lr=1e-2)
    torch.testing.assert_close(conv.detach().reshape(6, 27), mat.detach())


def test_channels_last_greedy_merge_updates_through_a_copy():
    p = nn.Parameter(torch.randn(4, 3, 3, 5))  # NHWC kernel
    opt = _run([p], [_grads((4, 3, 3, 5), 5)], merge_dims=True, max_precond_dim=16, data_format="channels_last")
    layout = plan_layout((4, 3, 3, 5), 16, merge="greedy", channels_last=True)
    assert layout.merged_shape == (4, 15, 3)
    assert [q.shape for q in opt.state[p]["Q"][0]] == [(4, 4), (15, 15), (3, 3)]
    assert torch.isfinite(p).all()


def test_embedding_and_lm_head_with_large_vocab_are_blocked():
    emb = nn.Embedding(1000, 16)
    head = nn.Linear(16, 1000, bias=False)
    opt = SOAP([*emb.parameters(), *head.parameters()], max_precond_dim=256)
    tokens = torch.randint(0, 1000, (4, 32))
    for _ in range(3):
        opt.zero_grad()
        logits = head(emb(tokens))
        nn.functional.cross_entropy(logits.view(-1, 1000), tokens.view(-1)).backward()
        opt.step()
    blocks = opt.state[emb.weight]["Q"]
    assert len(blocks) == 4 and blocks[0][0].shape == (250, 250) and blocks[0][1].shape == (16, 16)
    assert len(opt.state[head.weight]["Q"]) == 4
    assert torch.isfinite(emb.weight).all() and torch.isfinite(head.weight).all()


def test_scalar_and_vector_params_get_adam():
    """0-d and 1-d parameters are plain Adam(W): compare with torch.optim.AdamW."""
    torch.manual_seed(0)
    a0, b0 = torch.randn(()), torch.randn(7)
    grads_a, grads_b = _grads((), 10, seed=1), _grads((7,), 10, seed=2)
    mine = [nn.Parameter(a0.clone()), nn.Parameter(b0.clone())]
    opt = _run(mine, [grads_a, grads_b], lr=1e-2, weight_decay=0.1)
    assert opt.state[mine[1]]["Q"][0] == [None]
    ref = [nn.Parameter(a0.clone()), nn.Parameter(b0.clone())]
    adamw = torch.optim.AdamW(ref, lr=1e-2, betas=(0.95, 0.95), eps=1e-8, weight_decay=0.1)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        ref[0].grad, ref[1].grad = ga.clone(), gb.clone()
        adamw.step()
    for x, y in zip(ref, mine, strict=True):
        torch.testing.assert_close(y, x, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_parameters_train_with_float32_state(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)).to(dtype)
    x, y = torch.randn(64, 16).to(dtype), torch.randn(64, 4).to(dtype)
    opt = SOAP(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = (model(x) - y).float().square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    st = opt.state[model[0].weight]
    assert st["exp_avg"][0].dtype == torch.float32 and st["Q"][0][0].dtype == torch.float32
    assert model[0].weight.dtype == dtype and all(torch.isfinite(p).all() for p in model.parameters())


def test_same_shaped_blocks_share_one_batched_buffer():
    """Batching: four 12×12 weights of one group live in one [4, 12, 12] factor tensor."""
    layers = [nn.Linear(12, 12) for _ in range(4)]
    params = [layer.weight for layer in layers]
    opt = _run(params, [_grads((12, 12), 2, seed=i) for i in range(4)])
    storages = {opt.state[p]["GG"][0][0].untyped_storage().data_ptr() for p in params}
    assert len(storages) == 1
    assert opt.state[params[0]]["GG"][0][0]._base.shape == (4, 12, 12)


def test_parameter_unfrozen_after_the_first_step_is_trained():
    frozen = nn.Parameter(torch.randn(5, 4), requires_grad=False)
    live = nn.Parameter(torch.randn(5, 4))
    opt = SOAP([frozen, live])
    live.grad = torch.randn(5, 4)
    opt.step()
    assert frozen not in opt.state
    frozen.requires_grad_(True)
    before = frozen.detach().clone()
    frozen.grad, live.grad = torch.randn(5, 4), torch.randn(5, 4)
    live_state_step = opt.state[live]["step"].item()
    opt.step()
    assert not torch.equal(frozen.detach(), before)
    assert opt.state[live]["step"].item() == live_state_step + 1  # existing state carried over
