"""The code version of each benchmark area: a hash over the explicit list of sources its results depend on.

Each area lists the package files (globs under ``src/precond``) that can change its figures, and nothing else:
editing the OT harness leaves stored optimizer trials valid, editing an optimizer leaves OT records valid, and
editing storage, reporting or the CLI invalidates nothing. A new area (completion, registration, solvers) adds
its :class:`~precond.bench.environment.SourceSet` to :data:`AREAS`.

* ``optimizer``: ``precond.optim`` and ``precond.linalg`` (the optimizers and their kernels), the training loop
  (``bench/trial.py``), the workloads and their data (``bench/workloads.py``, ``bench/_text.py``). Not the sweep
  ranges or the protocol: a trial's hyperparameters are part of its key already.
* ``ot``: ``precond.ot`` and ``precond.linalg`` (the solvers), the OT problems and runners, the result rows
  (``bench/ot/run.py``) and the budgeted subprocess harness they run under (``bench/_harness.py``).
* ``completion``: ``precond.completion`` and ``precond.linalg`` (the solvers), the completion problems and
  runners, the result rows and targets (``bench/completion/run.py``) and ``bench/_harness.py``.
* ``registration``: ``precond.registration`` and ``precond.linalg``, the registration scenes, runners and rows
  (``bench/registration/{scenes,runners,run}.py``) and ``bench/_harness.py``.
"""

from __future__ import annotations

from pathlib import Path

import precond
from precond.bench.environment import SourceSet

__all__ = ["AREAS", "COMPLETION", "OPTIMIZER", "OT", "REGISTRATION", "SOLVERS", "UNHASHED", "code_version"]

OPTIMIZER = SourceSet(
    "optimizer",
    ("optim/**/*.py", "linalg/**/*.py", "bench/_text.py", "bench/trial.py", "bench/workloads.py", "bench/interface.py"),
)
OT = SourceSet(
    "ot",
    (
        "ot/**/*.py",
        "linalg/**/*.py",
        "bench/_harness.py",
        "bench/ot/problems.py",
        "bench/ot/runners.py",
        "bench/ot/run.py",
    ),
)
COMPLETION = SourceSet(
    "completion",
    (
        "completion/**/*.py",
        "linalg/**/*.py",
        "bench/_harness.py",
        "bench/completion/problems.py",
        "bench/completion/runners.py",
        "bench/completion/run.py",
    ),
)
REGISTRATION = SourceSet(
    "registration",
    (
        "registration/**/*.py",
        "linalg/**/*.py",
        "bench/_harness.py",
        "bench/registration/scenes.py",
        "bench/registration/runners.py",
        "bench/registration/run.py",
    ),
)
SOLVERS = SourceSet(
    "solvers",
    (
        "linalg/**/*.py",
        "linalg/learned/*.pt",
        "bench/solvers/problems.py",
        "bench/solvers/run.py",
        "bench/solvers/least_squares.py",
        "bench/solvers/_timing.py",
    ),
)
AREAS: dict[str, SourceSet] = {s.name: s for s in (OPTIMIZER, OT, COMPLETION, REGISTRATION, SOLVERS)}
#: Modules no area's figures depend on (storage, protocol, reporting, command line, environment record): editing
#: them invalidates nothing. Every module of the package is in an area's sources or here (a test checks it).
UNHASHED = (
    "__init__.py",
    "__main__.py",
    "_args.py",
    "cli.py",
    "bench/__init__.py",
    "bench/environment.py",
    "bench/versions.py",
    "bench/store.py",
    "bench/protocol.py",
    "bench/tuning.py",
    "bench/search.py",
    "bench/compare.py",
    "bench/report.py",
    "bench/ot/__init__.py",
    "bench/ot/output.py",
    "bench/ot/cli.py",
    "bench/completion/__init__.py",
    "bench/completion/output.py",
    "bench/completion/cli.py",
    "bench/registration/__init__.py",
    "bench/registration/cli.py",
    "bench/solvers/__init__.py",
    "bench/solvers/cli.py",
)


def code_version(area: str = "optimizer", root: Path | None = None) -> str:
    """``"<precond version>+<12 hex>.torch<torch version>"`` for ``area``: the hex digits hash the area's source
    files (:data:`AREAS`; ``root`` is the package folder, default the imported one). The torch version is included
    because it changes numerics (and torch's own optimizers)."""
    import torch

    if area not in AREAS:
        raise ValueError(f"unknown benchmark area {area!r}; choose from {', '.join(AREAS)}")
    return f"{precond.__version__}+{AREAS[area].digest(root)}.torch{torch.__version__}"
