"""Hyperparameters, labels and output paths shared by both modes of the step-time benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FREQ = 10  # basis refresh period of every SOAP here
MAX_DIM = 4096  # > every matrix side of both models: full two-sided preconditioning, no blocking
HP: dict[str, Any] = dict(lr=3e-3, betas=(0.95, 0.95), eps=1e-8, weight_decay=0.01)
SOAP_HP: dict[str, Any] = dict(shampoo_beta=0.95, precondition_frequency=FREQ, **HP)  # every SOAP, ours and peers
OURS = "precond SOAP"
ADAMW = "torch AdamW"
FLOOR = "floor (bare matmul+QR)"
FLOOR_DIRECT = "floor, direct transport"
RESULTS = Path(__file__).resolve().parents[1] / "results"
DEFAULT_OUT = RESULTS / "optimizer_step.json"
FAMILY_OUT = RESULTS / "optimizer_family.json"
