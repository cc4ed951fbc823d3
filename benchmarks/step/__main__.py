"""``python -m benchmarks.step`` (from the repository root), the same as ``python benchmarks/optimizer_step.py``."""

from .cli import main

main()
