"""The workload interface: clear errors for what is not a workload, loading user workloads, the user path and the
built-in path giving identical records, routing hints, and equal-time trials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from precond.bench import compare, get_workload, load_workload
from precond.bench.interface import WorkloadError, check_workload
from precond.bench.protocol import Plan, run_plan
from precond.bench.store import Store
from precond.bench.trial import TrialSpec, run_trial
from tests.bench.test_trial_store import Quadratic1D

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Partial:
    name: str = "x"
    steps: int = 10


def test_check_workload_names_what_is_missing() -> None:
    with pytest.raises(WorkloadError, match=r"missing preset, warmup, eval_every, build"):
        check_workload(Partial())
    with pytest.raises(WorkloadError, match="warmup=30 exceeds steps=20"):
        check_workload(Quadratic1D(warmup=30))
    with pytest.raises(WorkloadError, match="name must be a non-empty str"):
        check_workload(Quadratic1D(name="a/b"))
    assert check_workload(get_workload("mlp", "tiny")).name == "mlp"


def test_load_workload_errors_say_which_part_failed(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="expected a built-in name"):
        load_workload("nocolon")
    with pytest.raises(WorkloadError, match="no such file"):
        load_workload(str(tmp_path / "none.py") + ":f")
    with pytest.raises(WorkloadError, match="cannot import module 'no_such_pkg_xyz'"):
        load_workload("no_such_pkg_xyz:f")
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(WorkloadError, match="importing it failed: RuntimeError: boom"):
        load_workload(f"{bad}:f")
    ok = tmp_path / "ok.py"
    ok.write_text("def f():\n    return 3\n\ndef g():\n    raise ValueError('no')\n")
    with pytest.raises(WorkloadError, match=r"has no attribute 'h' \(it has \['f', 'g'\]\)"):
        load_workload(f"{ok}:h")
    with pytest.raises(WorkloadError, match=r"calling g\(\) failed: ValueError: no"):
        load_workload(f"{ok}:g")
    with pytest.raises(WorkloadError, match=r"int is not a precond\.bench workload"):
        load_workload(f"{ok}:f")
    assert load_workload("tests.bench.test_trial_store:Quadratic1D").name == "quad1d"


@dataclass(frozen=True)
class UserQuadratic:
    """A user's own class delegating to the built-in quadratic's data and model: the same workload by another
    path."""

    name: str = "quadratic"
    preset: str = "tiny"
    steps: int = 20
    warmup: int = 2
    eval_every: int = 2

    def build(self, seed: int):
        return get_workload("quadratic", "tiny").build(seed)


def _comparable(result):
    return (result.spec, result.status, result.final_val, tuple(p[:2] for p in result.curve), result.steps_run)


def test_user_workload_path_and_builtin_path_give_identical_records() -> None:
    plan = Plan("quadratic", ("soap",), preset="tiny", lr_points=2, lr_extend=1, lr_refine=1, seeds=2)
    with Store(":memory:") as builtin_store:
        builtin = run_plan(plan, builtin_store, code_version="t")  # the CLI's path: get_workload by name
        a = sorted(map(_comparable, builtin_store.results()), key=repr)
    with Store(":memory:") as user_store:
        user = compare(UserQuadratic(), ["soap"], lr_points=2, lr_extend=1, lr_refine=1, seeds=2, db=user_store)
        b = sorted(map(_comparable, user_store.results()), key=repr)
    assert a == b and len(a) >= 2 * (2 + 1 + 1)
    assert user.summary.get("soap").best_hparams == builtin.get("soap").best_hparams


def test_routing_hints_reach_muon_and_unknown_names_are_errors() -> None:
    from precond.bench.interface import Task

    @dataclass(frozen=True)
    class Hinted(Quadratic1D):
        hint: str = "weight"

        def build(self, seed: int) -> Task:
            t = super().build(seed)
            return Task(t.model, t.train_loss, t.validate, adamw_params=(self.hint,))

    ok = run_trial(Hinted(), TrialSpec.make("quad1d", "tiny", "muon", {"lr": 0.01}, 0))
    assert ok.ok
    bad = run_trial(Hinted(hint="nope"), TrialSpec.make("quad1d", "tiny", "muon", {"lr": 0.01}, 0))
    assert bad.status == "error" and "adamw_params names ['nope']" in bad.message


def test_equal_time_trial_spends_its_budget_with_index_aligned_evaluations() -> None:
    wl = Quadratic1D(steps=20, eval_every=5)
    spec = TrialSpec.make("quad1d", "tiny", "sgd", {"lr": 0.01, "momentum": 0.0}, 0, budget_seconds=0.05)
    result = run_trial(wl, spec)
    assert result.ok and result.train_seconds >= 0.05  # it stops only once the budget is spent
    assert len(result.curve) == 20 // 5 + 1 and result.curve[-1][2] == result.train_seconds
    assert "budget_seconds" in spec.canonical("v") and "budget_seconds" not in spec.with_seed(0).__class__.make(
        "quad1d", "tiny", "sgd", {}, 0
    ).canonical("v")
    with pytest.raises(ValueError, match="budget_seconds must be a positive"):
        TrialSpec.make("quad1d", "tiny", "sgd", {}, 0, budget_seconds=0)


def test_plain_torch_example_runs_under_the_protocol() -> None:
    wl = load_workload(f"{ROOT / 'examples' / 'plain_torch.py'}:workload")
    a, b = wl.build(3), wl.build(3)
    assert float(a.train_loss(17)) == float(b.train_loss(17))  # batches and init are functions of (seed, step)
    result = compare(wl, ["adamw"], lr_points=2, lr_extend=0, lr_refine=1, seeds=1)
    assert result.summary.baseline.final_mean is not None
    assert result.summary.baseline.final_mean < result.summary.baseline.curve[0][1]


@pytest.mark.slow
def test_hf_gpt2_example_runs_under_the_protocol() -> None:
    pytest.importorskip("transformers")
    wl = load_workload(f"{ROOT / 'examples' / 'hf_gpt2.py'}:workload")
    result = compare(wl, ["muon"], lr_points=1, lr_extend=0, lr_refine=0, seeds=1)
    for name in ("adamw", "muon"):
        o = result.summary.get(name)
        assert o.final_mean is not None and o.final_mean < o.curve[0][1]  # it learned
