"""Jobs for the budgeted child process (:mod:`precond.bench._harness`) that misbehave on purpose.

They live in tests, not in ``src``; spawned children import them by name, which works because the parent's
``sys.path`` (with the repository root pytest put there) is handed to every spawned child.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def sleep_forever(*args: object, started: Callable[[], None]) -> dict:
    """Starts its timed part, then never finishes (to be killed at the budget)."""
    started()
    time.sleep(3600)
    return {}  # pragma: no cover


def raise_after_start(*args: object, started: Callable[[], None]) -> dict:
    started()
    raise RuntimeError("deliberate failure")


def raise_in_setup(*args: object, started: Callable[[], None]) -> dict:
    raise ValueError("setup went wrong")


def never_start(*args: object, started: Callable[[], None]) -> dict:
    """Hangs in its setup: never calls ``started()``."""
    time.sleep(3600)
    return {}  # pragma: no cover


def crash(*args: object, started: Callable[[], None]) -> dict:
    """Dies without a word after starting (as a segfaulting extension would)."""
    started()
    os._exit(7)


def echo_threads(*args: object, started: Callable[[], None]) -> dict:
    """Its arguments, torch's thread count and the thread variables it saw."""
    import torch

    started()
    return {
        "args": list(args),
        "torch_threads": torch.get_num_threads(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "mkl": os.environ.get("MKL_NUM_THREADS"),
    }
