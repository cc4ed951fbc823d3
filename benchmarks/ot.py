"""Entropic OT to marginal error 1e-8: precond.ot (Sinkhorn, log-domain Sinkhorn, SNS) side by side with POT and RegOT.

    python benchmarks/ot.py            # full run (5 problems × 3 ε at n=2000, plus n=500/5000; 10 s hard budget)
    python benchmarks/ot.py --quick    # smoke run (n=500, 3 problems × 2 ε; 3 s budget)
    python benchmarks/ot.py --problems gauss --n 2000 --eps 1e-2 --budget 20   # one problem

Writes ``results/ot.json`` and ``results/ot_convergence.png`` (``results/ot_quick.json`` and
``results/ot_quick_convergence.png`` with --quick).  The same benchmark is ``precond bench ot`` (quick grid by
default, ``--full`` for this one).  Problems, methods and the fairness rules (one child process per method and
problem, hard time budget, each library's stopping criterion set to imply the target, our L1 error reported)
are described in :mod:`precond.bench.ot`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is itself named ``ot.py``: keep its folder off the path so that ``import ot`` finds POT.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from precond.bench.ot import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:], out_default=Path(__file__).parent / "results", prog="benchmarks/ot.py")
