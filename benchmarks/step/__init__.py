"""Time optimizer ``step()`` of precond's optimizers against AdamW and their PyPI peers, side by side in one process.

    python benchmarks/optimizer_step.py                # SOAP mode, full run (2 CPU cores: ~10 minutes)
    python benchmarks/optimizer_step.py --quick        # smoke run
    python benchmarks/optimizer_step.py --profile 20   # also profile 20 steps of our SOAP per model
    python benchmarks/optimizer_step.py --family       # family mode: Shampoo, Muon, Lion, M-FAC vs their peers
    python benchmarks/optimizer_step.py --family --quick --families muon --workloads conv   # a smoke run

SOAP mode (the default) writes ``results/optimizer_step.json``; family mode ``results/optimizer_family.json``.
``python -m benchmarks.step`` (from the repository root) is the same command.  Modules: ``models`` (the two models
and their fixed gradients), ``timing`` (runners, warm-up, the round-robin), ``soap`` and ``floor`` (SOAP mode),
``families`` (family mode), ``output`` (tables), ``cli``.

Models (seeded): the ``lm`` workload's decoder-only transformer (``precond.bench.workloads.CharTransformer``; 4
layers, d_model 256, 4 heads, fused query/key/value, MLP 4×, biases, vocab 256, context 128, *untied* LM head, batch
16) and a conv net for 32×32×3 inputs (3×3 convs with 32/64/128 channels, each followed
by ReLU and 2×2 max-pooling, linear head to 10 classes, batch 32).

What is timed: ``opt.step()`` only.  One fixed set of gradients per model is computed once (fixed random
inputs/targets) and copied into preallocated ``p.grad`` buffers before every step, outside the timed region.
Optimizers run interleaved in one process, in rounds of ``--block`` steps each (the starting optimizer rotates
every round), so machine noise hits all of them alike; ``--block`` is a multiple of the refresh period, so every
block holds the same number of basis refreshes.

SOAP mode, same hyperparameters everywhere: lr 3e-3, betas (0.95, 0.95), shampoo_beta 0.95, eps 1e-8, weight decay 0.01,
basis refresh every 10 steps, max_precond_dim 4096 (larger than every matrix side: every matrix is
preconditioned on both sides, no blocking), 1-D parameters plain Adam, conv kernels as [out, in·kh·kw].

The *floor* is the matrix work any SOAP must do, timed in the same round-robin as a pseudo-optimizer: per matrix
m×n and step, the factor update (G Gᵀ, Gᵀ G), the projection (Q_Lᵀ G Q_R) and the projection back (Q_L U Q_Rᵀ),
3 units of m·n·(m+n) multiply-adds; every 10th step additionally, per factor of side d, A @ Q (d³), a QR of the
d×d result and the rotation Q_newᵀ Q_old (d³), plus one unit of momentum transport.  Plain ``torch.matmul`` /
``torch.linalg.qr`` calls, one per matrix, on preallocated fp32 tensors of the real shapes, so its mean step is
``per-step matmuls + refresh / 10``.  A second floor row transports the momentum directly,
Q_L,newᵀ (Q_L,old M Q_R,oldᵀ) Q_R,new (2 units, no Q_newᵀ Q_old formed), which is never more work.

Peer settings that could not be matched one-to-one are explained where each peer is built (optimizer_specs).

Family mode (``--family``): per workload and family, our optimizer, its peers and torch AdamW (foreach=True, the
hyperparameters above) as the yardstick, timed the same way (same models, fixed gradients, one round-robin per
family).  Each row has mean/median step time (the mean over every timed step, refresh steps included), ×ours
(its mean over ours), ×AdamW, the peak state memory (every tensor reachable from ``opt.state``) and its ratio
to ours.  Steps per family (full / ``--quick``; ``--steps``/``--warmup``/``--max-warmup`` override) are in
PLANS; the full run is sized for about 12 minutes on 2 quiet cores.

* shampoo -- all params.  ``precond.optim.Shampoo(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.01,
  precondition_frequency=10, max_precond_dim=4096, grafting="adam")`` (batched eigh roots) vs
  ``pytorch_optimizer.Shampoo`` (SVD roots one factor at a time, summed factors, no grafting; given the 2+-dim
  params, torch AdamW the 1-D ones) and ``pytorch_optimizer.ScalableShampoo`` (coupled Schur–Newton roots,
  RMSProp grafting, block_size 4096, start_preconditioning_step 10).  All three recompute the roots at steps 10,
  20, 30, ...: warm-up and timed blocks are multiples of 10 steps, so each timed block holds one recomputation
  per optimizer (counted in the "refreshes" column).  Peers get the [out, in·kh·kw]-kernel twin of the conv net.
* muon -- the 2-D hidden matrices only (the blocks' weights; the conv kernels, 4-D) for every row, AdamW
  included: ``torch.optim.Muon`` accepts nothing else, so embeddings, heads and 1-D params are left out.
  ``precond.optim.Muon([{"params": mats, "use_muon": True}], lr=0.02)`` (fp32 Newton–Schulz) vs
  ``torch.optim.Muon`` (2-D only: the kernel twin; weight_decay=0 like the others), ``pytorch_optimizer.Muon``
  (a ``use_muon=True`` group, foreach) and ``heavyball.Muon`` (torch.compile'd: longer warm-up).  The three peers
  run Newton–Schulz in bf16, ~0.5 s per transformer matrix on CPUs without bf16 units: on the transformer they
  are capped at 4 timed steps after 2 warm-up steps (HeavyBall 3), spread over the rounds (--quick: 1 and 1).
* lion -- all params.  ``precond.optim.Lion(lr=1e-4, weight_decay=0.1)`` vs ``pytorch_optimizer.Lion`` (same,
  foreach=True).
* mfac -- all params.  ``precond.optim.MFAC(num_grads=32)`` (one window over the whole model: 32 × 3.3 M floats
  for the transformer) has no PyPI peer: it runs against torch AdamW and torch SGD (foreach, no momentum).
"""
