"""Time optimizer ``step()`` of precond's optimizers against AdamW and their PyPI peers (the ``benchmarks/step``
package; its docstring, or ``--help``, describes both modes, the models and what is timed).

    python benchmarks/optimizer_step.py                # SOAP mode, full run (2 CPU cores: ~10 minutes)
    python benchmarks/optimizer_step.py --quick        # smoke run
    python benchmarks/optimizer_step.py --family       # family mode: Shampoo, Muon, Lion, M-FAC vs their peers
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0]: import the package as ``benchmarks.step`` from the repository root
# instead (and keep ``benchmarks/ot.py`` from shadowing POT's ``ot`` for the peers).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from benchmarks.step.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
