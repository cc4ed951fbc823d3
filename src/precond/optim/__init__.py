"""PyTorch optimizers that precondition with matrix structure."""

from precond.optim._soap_math import soap_block_step_
from precond.optim.soap import SOAP

__all__ = ["SOAP", "soap_block_step_"]
