"""``precond bench``: a fair optimizer benchmark (workloads, trials, SQLite store, protocol, report), and one
harness per further area (:mod:`precond.bench.ot`: entropic OT) sharing the budgeted subprocess runner
(:mod:`precond.bench._harness`), the environment record (:mod:`precond.bench.environment`) and per-area code
versions (:mod:`precond.bench.versions`)."""

from precond.bench.compare import Comparison, compare
from precond.bench.environment import RunConditions
from precond.bench.interface import Task, Workload, WorkloadError, check_workload, load_workload
from precond.bench.protocol import OptimizerSummary, Plan, Summary, run_plan, summarize
from precond.bench.search import LRSearch, bracket_search
from precond.bench.store import Store
from precond.bench.trial import TrialResult, TrialSpec, run_trial
from precond.bench.workloads import PRESETS, WORKLOADS, BuiltinWorkload, get_workload

__all__ = [
    "PRESETS",
    "WORKLOADS",
    "BuiltinWorkload",
    "Comparison",
    "LRSearch",
    "OptimizerSummary",
    "Plan",
    "RunConditions",
    "Store",
    "Summary",
    "Task",
    "TrialResult",
    "TrialSpec",
    "Workload",
    "WorkloadError",
    "bracket_search",
    "check_workload",
    "compare",
    "get_workload",
    "load_workload",
    "run_plan",
    "run_trial",
    "summarize",
]
