"""PyTorch optimizers that precondition with matrix structure."""

from precond.optim._shampoo_math import shampoo_block_step_
from precond.optim._soap_math import soap_block_step_
from precond.optim.lion import Lion
from precond.optim.mfac import MFAC, mfac_step_
from precond.optim.muon import Muon, muon_step_
from precond.optim.registry import REGISTRY, OptimizerSpec, available, create
from precond.optim.shampoo import Shampoo
from precond.optim.soap import SOAP

__all__ = [
    "MFAC",
    "REGISTRY",
    "SOAP",
    "Lion",
    "Muon",
    "OptimizerSpec",
    "Shampoo",
    "available",
    "create",
    "mfac_step_",
    "muon_step_",
    "shampoo_block_step_",
    "soap_block_step_",
]
