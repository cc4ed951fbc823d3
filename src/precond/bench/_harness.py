"""Run one benchmark job in a spawned child process under a hard time budget (shared by every area's harness).

The job is a top-level (picklable) callable ``target(*args, started=...)`` run in a fresh ``spawn`` child with
``threads`` torch/OpenMP/MKL/OpenBLAS threads. It does its untimed setup (imports, building its problem,
calibration), calls ``started()`` when the timed part begins and returns a picklable result. The parent waits up
to ``setup_timeout`` seconds for ``started()`` and then ``budget + grace`` seconds for the result; a child still
running then is killed. A child whose parent dies exits on its own, so that no solver keeps running unobserved.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

__all__ = ["THREAD_VARIABLES", "BudgetOutcome", "run_budgeted", "thread_env"]

#: Environment variables that set the thread count of the BLAS/OpenMP libraries a child loads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

#: ``done``: the target returned (``payload`` is its result); ``timeout``: killed ``budget + grace`` after it
#: started; ``error``: it raised (``message`` is the traceback); ``setup_timeout``: it never called ``started()``
#: within ``setup_timeout``; ``crashed``: the child died without a word (``exitcode``).
OutcomeStatus = Literal["done", "timeout", "error", "setup_timeout", "crashed"]


@dataclass(frozen=True)
class BudgetOutcome:
    """What became of a budgeted child (see :data:`OutcomeStatus`); ``setup_seconds`` is the time from launch to
    ``started()`` (``None`` if it never started)."""

    status: OutcomeStatus
    payload: Any = None
    message: str = ""
    setup_seconds: float | None = None
    exitcode: int | None = None


@contextlib.contextmanager
def thread_env(threads: int) -> Iterator[None]:
    """Set :data:`THREAD_VARIABLES` to ``threads`` while a child is spawned (it inherits the environment)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: str(threads) for k in THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _exit_with_parent() -> None:
    """End this child if its parent dies (e.g. killed itself)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _child(conn: Connection, target: Callable[..., Any], args: Sequence[Any], threads: int) -> None:
    """Body of the child: set the threads, run ``target``, send ``("start", None)`` then ``("done", result)``."""
    try:
        _exit_with_parent()
        import torch

        torch.set_num_threads(threads)
        out = target(*args, started=lambda: conn.send(("start", None)))
        conn.send(("done", out))
    except BaseException:  # report everything to the parent
        conn.send(("error", traceback.format_exc(limit=4)))
    finally:
        conn.close()


def _receive(conn: Connection, timeout: float) -> tuple[str, Any]:
    """The child's next message, ``("timeout", None)`` after ``timeout`` seconds, ``("crashed", None)`` on EOF."""
    if not conn.poll(max(0.0, timeout)):
        return "timeout", None
    try:
        message: tuple[str, Any] = conn.recv()
    except (EOFError, OSError):
        return "crashed", None
    return message


def run_budgeted(
    target: Callable[..., Any],
    args: Sequence[Any] = (),
    *,
    budget: float,
    threads: int,
    grace: float,
    setup_timeout: float,
) -> BudgetOutcome:
    """Run ``target(*args, started=...)`` in a spawned child; kill it ``budget + grace`` seconds after it called
    ``started()`` (or ``setup_timeout`` seconds after launch if it never does). See the module docstring."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, target, tuple(args), threads), daemon=True)
    launched = time.perf_counter()
    with thread_env(threads):
        proc.start()
    sender.close()
    try:
        what, payload = _receive(receiver, setup_timeout)
        setup: float | None = None
        if what == "start":
            setup = time.perf_counter() - launched
            what, payload = _receive(receiver, budget + grace)
            if what == "timeout":
                return BudgetOutcome("timeout", setup_seconds=setup)
        elif what == "timeout":
            return BudgetOutcome("setup_timeout", message=f"no timed part started within {setup_timeout:g} s of setup")
        if what == "done":
            return BudgetOutcome("done", payload, setup_seconds=setup)
        if what == "error":
            return BudgetOutcome("error", message=str(payload).strip(), setup_seconds=setup)
        proc.join(timeout=5)  # crashed, or an unexpected message
        return BudgetOutcome(
            "crashed", message=f"child exited with code {proc.exitcode}", setup_seconds=setup, exitcode=proc.exitcode
        )
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receiver.close()


def record_outcome(row: dict[str, Any], outcome: BudgetOutcome, budget: float) -> Any:
    """Fill a benchmark result ``row`` from ``outcome`` and return the child's payload if it finished, else ``None``.

    Every area records the failures alike: a killed child as ``status="timeout"`` (``timed_out``, ``killed``,
    ``seconds = budget``), an exception or a start-up failure as ``status="failed"`` with its message; the start-up
    time goes to ``setup_seconds`` when known.  A finished payload is the caller's to record.
    """
    if outcome.setup_seconds is not None:
        row["setup_seconds"] = outcome.setup_seconds
    if outcome.status == "done":
        return outcome.payload
    if outcome.status == "timeout":
        row.update(status="timeout", timed_out=True, killed=True, seconds=budget)
    elif outcome.status == "error":
        row.update(status="failed", message=outcome.message.splitlines()[-1] if outcome.message else "error")
    else:  # setup_timeout, crashed
        row.update(status="failed", message=outcome.message)
    return None
