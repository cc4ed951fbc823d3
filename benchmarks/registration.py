"""Degenerate point-to-plane registration: precond.registration (DCReg, none, SR, TSVD, TReg, LOAM) side by side
with Open3D (point-to-plane, generalized ICP) and small_gicp (GICP), where installed.

    python benchmarks/registration.py            # full run: 7 scenes at 10k points per cloud, 9 methods
    python benchmarks/registration.py --quick    # quick run: 2k points per cloud
    python benchmarks/registration.py --scenes shifted_cylinder,noisy_corridor --methods "precond dcreg,small_gicp gicp"

Peers: small_gicp comes with ``requirements/ci.txt``; Open3D with ``pip install -r requirements/peers.txt`` plus the
system library (``apt-get install libusb-1.0-0``). A peer that does not import is skipped, with a note in the
printout and in the record's ``meta.notes``.

Writes ``results/registration.json`` and ``results/registration.png`` (``registration_quick.*`` with --quick). The
same benchmark is ``precond bench registration`` (quick by default, ``--full`` for this one). Scenes, methods and
fairness rules are described in :mod:`precond.bench.registration`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from precond.bench.registration import main

if __name__ == "__main__":
    main(sys.argv[1:], out_default=Path(__file__).parent / "results", prog="benchmarks/registration.py")
