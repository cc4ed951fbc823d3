"""PyTorch optimizers that precondition with matrix structure."""

from precond.optim._shampoo_math import shampoo_block_step_
from precond.optim._soap_math import soap_block_step_
from precond.optim.adamp import SGDP, AdamP
from precond.optim.auon import AuON
from precond.optim.conda import Conda, conda_step_
from precond.optim.dct import DCTAdamW, Trion, dct_adamw_step_, trion_step_
from precond.optim.fismo import FISMO, fismo_step_
from precond.optim.lion import Lion
from precond.optim.mfac import MFAC, mfac_step_
from precond.optim.muon import Muon, muon_step_
from precond.optim.registry import REGISTRY, OptimizerSpec, available, create
from precond.optim.shampoo import Shampoo
from precond.optim.soap import SOAP

__all__ = [
    "FISMO",
    "MFAC",
    "REGISTRY",
    "SGDP",
    "SOAP",
    "AdamP",
    "AuON",
    "Conda",
    "DCTAdamW",
    "Lion",
    "Muon",
    "OptimizerSpec",
    "Shampoo",
    "Trion",
    "available",
    "conda_step_",
    "create",
    "dct_adamw_step_",
    "fismo_step_",
    "mfac_step_",
    "muon_step_",
    "shampoo_block_step_",
    "soap_block_step_",
    "trion_step_",
]
