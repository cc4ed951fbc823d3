"""The budgeted child process shared by the benchmark areas (:mod:`precond.bench._harness`), with jobs from tests."""

from __future__ import annotations

import os
import time

import pytest

from precond.bench._harness import THREAD_VARIABLES, run_budgeted, thread_env
from tests.bench import stubs


def test_overrunning_child_is_killed_after_the_budget() -> None:
    t0 = time.perf_counter()
    outcome = run_budgeted(stubs.sleep_forever, budget=0.5, threads=1, grace=0.2, setup_timeout=120)
    elapsed = time.perf_counter() - t0
    assert outcome.status == "timeout" and outcome.payload is None
    assert outcome.setup_seconds is not None and elapsed - outcome.setup_seconds >= 0.5  # setup not counted


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "status", "message"),
    [
        (stubs.raise_after_start, "error", "RuntimeError: deliberate failure"),
        (stubs.raise_in_setup, "error", "ValueError: setup went wrong"),
        (stubs.crash, "crashed", "child exited with code 7"),
        (stubs.never_start, "setup_timeout", "no timed part started within 3 s of setup"),
    ],
)
def test_failures_are_outcomes_not_exceptions(target, status: str, message: str) -> None:
    # a generous setup time (spawning and importing torch can take long on a loaded machine), except for the
    # job that never starts: it is given 3 s and must end as a setup timeout, however slow its imports are
    setup_timeout = 3 if target is stubs.never_start else 300
    outcome = run_budgeted(target, budget=60, threads=1, grace=0.2, setup_timeout=setup_timeout)
    assert outcome.status == status
    assert outcome.message.splitlines()[-1] == message
    assert (outcome.setup_seconds is None) == (target in (stubs.raise_in_setup, stubs.never_start))


@pytest.mark.slow
def test_child_gets_the_arguments_and_the_threads() -> None:
    outcome = run_budgeted(stubs.echo_threads, ("a", 3, 0.5), budget=60, threads=1, grace=1, setup_timeout=120)
    assert outcome.status == "done"
    assert outcome.payload == {"args": ["a", 3, 0.5], "torch_threads": 1, "omp": "1", "mkl": "1"}


def test_thread_env_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with thread_env(2):
        assert all(os.environ[k] == "2" for k in THREAD_VARIABLES)
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ
