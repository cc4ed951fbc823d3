"""What a benchmark figure depends on besides its inputs: the code it ran and the machine it ran on.

* :class:`SourceSet`: the explicit list of files (glob patterns under the ``precond`` package) whose text an
  area's results depend on; its :meth:`~SourceSet.digest` is that area's code version, so editing one area's
  harness never invalidates another area's stored results, and :meth:`~SourceSet.files` says what is included.
* :class:`RunConditions`: torch threads, cores and the load average at the start and end of a timed run, recorded
  with every trial; :func:`timing_warnings` says when the wall-clock figures of compared runs are not comparable.
* :func:`machine_record`: the machine, Python and library versions, for the JSON records.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import precond

__all__ = [
    "BUSY_LOAD_MARGIN",
    "LOAD_SPREAD",
    "RunConditions",
    "SourceSet",
    "load_average",
    "machine_record",
    "package_root",
    "timing_warnings",
]


def package_root() -> Path:
    """The folder of the imported ``precond`` package (looked up at call time)."""
    return Path(precond.__file__).resolve().parent


# ------------------------------------------------------------------------------------------------------ code


@dataclass(frozen=True)
class SourceSet:
    """The source files an area's results depend on: ``patterns`` are globs relative to the ``precond`` package
    folder (``"optim/**/*.py"`` includes ``optim/*.py``)."""

    name: str
    patterns: tuple[str, ...]

    def files(self, root: Path | None = None) -> tuple[str, ...]:
        """The matching files, as sorted package-relative POSIX paths."""
        base = package_root() if root is None else Path(root)
        found = {p.relative_to(base).as_posix() for pattern in self.patterns for p in base.glob(pattern) if p.is_file()}
        return tuple(sorted(found))

    def digest(self, root: Path | None = None) -> str:
        """12 hex digits of SHA-256 over every file's relative path and bytes (in :meth:`files` order)."""
        base = package_root() if root is None else Path(root)
        h = hashlib.sha256()
        for name in self.files(base):
            h.update(name.encode() + b"\0")
            h.update((base / name).read_bytes() + b"\0")
        return h.hexdigest()[:12]

    def describe(self, root: Path | None = None) -> str:
        """One line: each pattern with the number of files it matched."""
        base = package_root() if root is None else Path(root)
        parts = []
        for pattern in self.patterns:
            count = sum(1 for p in base.glob(pattern) if p.is_file())
            parts.append(pattern if count == 1 and "*" not in pattern else f"{pattern} ({count} files)")
        return f"{self.name} code version hashes precond/" + ", precond/".join(parts)


# --------------------------------------------------------------------------------------------------- machine


def load_average() -> float | None:
    """The 1-minute load average (runnable threads, averaged), or ``None`` where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class RunConditions:
    """The conditions one timed run ran under: ``threads`` torch intra-op threads on ``cpu_count`` cores, with
    1-minute load averages ``load_start`` and ``load_end`` (``None`` where unknown)."""

    threads: int
    cpu_count: int
    load_start: float | None = None
    load_end: float | None = None

    @classmethod
    def now(cls) -> RunConditions:
        """The current threads, cores and load average (``load_start``; ``load_end`` is set by :meth:`ended`)."""
        import torch

        return cls(torch.get_num_threads(), os.cpu_count() or 1, load_average())

    def ended(self) -> RunConditions:
        """A copy with ``load_end`` set to the current load average."""
        return RunConditions(self.threads, self.cpu_count, self.load_start, load_average())

    @property
    def load(self) -> float | None:
        """The larger of the start and end load averages (``None`` if neither is known)."""
        known = [v for v in (self.load_start, self.load_end) if v is not None]
        return max(known) if known else None

    @property
    def background(self) -> float | None:
        """Load beyond the run's own threads, per core: ``max(0, load - threads) / cpu_count``."""
        load = self.load
        return None if load is None else max(0.0, load - self.threads) / self.cpu_count

    @property
    def busy(self) -> bool:
        """More runnable threads than cores, beyond :data:`BUSY_LOAD_MARGIN`: ``max(load, threads) > cores +
        margin``; then the run time-shared its cores and its wall-clock is inflated."""
        demand = max(self.load or 0.0, float(self.threads))
        return demand > self.cpu_count + BUSY_LOAD_MARGIN

    def describe(self) -> str:
        load = "load unknown" if self.load is None else f"load average {self.load:.2f}"
        return f"{self.threads} threads on {self.cpu_count} cores, {load}"


#: Runnable threads beyond the core count that still count as a quiet machine (noise, the shell, the OS).
BUSY_LOAD_MARGIN = 0.5
#: Largest difference of :attr:`RunConditions.background` (per core) between compared runs.
LOAD_SPREAD = 0.5


def timing_warnings(conditions: Iterable[RunConditions | None], what: str = "trials") -> list[str]:
    """Why the wall-clock figures of runs with these ``conditions`` should not be compared (empty if they can):
    different thread counts or core counts, a busy machine (:attr:`RunConditions.busy`) in any of them, a spread of
    background load over :data:`LOAD_SPREAD` per core, or conditions not recorded (older store rows)."""
    seen = list(conditions)
    known = [c for c in seen if c is not None]
    out: list[str] = []
    unknown = len(seen) - len(known)
    if unknown:
        out.append(
            f"{unknown} of the {len(seen)} compared {what} have no recorded threads or load (stored by an "
            "older precond): their wall-clock may come from other machine conditions"
        )
    threads = sorted({c.threads for c in known})
    if len(threads) > 1:
        out.append(f"the compared {what} ran with different thread counts ({', '.join(map(str, threads))})")
    cores = sorted({c.cpu_count for c in known})
    if len(cores) > 1:
        out.append(f"the compared {what} ran on machines with different core counts ({', '.join(map(str, cores))})")
    busy = [c for c in known if c.busy]
    if busy:
        worst = max(busy, key=lambda c: c.load or 0.0)
        out.append(
            f"{len(busy)} of the compared {what} ran on a busy machine (more runnable threads than cores; worst: "
            f"{worst.describe()})"
        )
    backgrounds = [c.background for c in known if c.background is not None]
    if len(backgrounds) > 1 and max(backgrounds) - min(backgrounds) > LOAD_SPREAD:
        out.append(
            f"the background load of the compared {what} differed by {max(backgrounds) - min(backgrounds):.2f} per core"
        )
    if out:
        out.append(
            "wall-clock figures (time→target, time speedup, step ×) are unreliable; step counts and losses are "
            "not affected. Rerun into a fresh --db on a quiet machine, with --threads 1 on a shared one"
        )
    return out


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_record(distributions: Sequence[str] = ("precond", "torch", "numpy")) -> dict[str, Any]:
    """The machine, its cores and current load, Python, and the versions of ``distributions`` (``None`` if absent)."""
    load = load_average()
    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "cpu_count": os.cpu_count(),
        "load_average": None if load is None or not math.isfinite(load) else load,
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in distributions},
    }
