"""Benchmarking: CPU-sized workloads (:mod:`precond.bench.workloads`) on which to compare the optimizers."""

from precond.bench.workloads import PRESETS, WORKLOADS, Task, Workload, get_workload

__all__ = ["PRESETS", "WORKLOADS", "Task", "Workload", "get_workload"]
