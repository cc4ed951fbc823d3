"""SOAP, Shampoo and Muon on ``torch.distributed``: each parameter's preconditioner owned by one rank.

:class:`ShardedOptimizer` wraps the single-process class; DDP (replicated) and FSDP2 (``fully_shard``) parameters
are supported, and the state saves and loads through ``torch.distributed.checkpoint``.  Design, communication
volumes and the scaling analysis: ``docs/distributed.md``.
"""

from precond.optim.distributed._plan import assign_owners, imbalance, rank_loads
from precond.optim.distributed._sharded import ShardedOptimizer

__all__ = ["ShardedOptimizer", "assign_owners", "imbalance", "rank_loads"]
