"""Linear solvers (issue 16): Learning-to-Relax tuners vs fixed ω and Young's ω*; DCDM vs CG, Jacobi-PCG,
IC(0)-PCG and pyamg SA-PCG (32², 64²); sketched LSQR vs scipy lsqr and numpy lstsq (20000×200, 100000×500).

    python benchmarks/solvers.py            # full run
    python benchmarks/solvers.py --quick    # smoke-sized run (= precond bench solvers)

Writes ``results/solvers.json`` and ``results/solvers.png`` (``solvers_quick.*`` with --quick).
"""

from __future__ import annotations

import sys
from pathlib import Path

from precond.bench.solvers.cli import main

if __name__ == "__main__":
    main(sys.argv[1:], out_default=Path(__file__).parent / "results", prog="benchmarks/solvers.py")
