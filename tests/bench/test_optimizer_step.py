"""``benchmarks/optimizer_step.py`` (the ``benchmarks.step`` package): it runs, end to end, on a tiny transformer,
and reports what it measured (rows, step counts, refreshes, state memory against closed forms).

No timing is checked: only that every optimizer was stepped, counted and written out as the JSON promises.
HeavyBall is hidden (its torch.compile warm-up takes minutes); the slow test runs the real ``--quick`` command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.step import cli, models
from benchmarks.step.settings import ADAMW, FLOOR, FLOOR_DIRECT, OURS
from precond.bench.workloads import CharTransformer

ROOT = Path(__file__).resolve().parents[2]
TINY = models.TransformerSize(vocab=64, width=16, depth=1, heads=2, context=8, batch=2)
STEPS = ["--steps", "10", "--warmup", "10", "--max-warmup", "10", "--block", "10"]


def tiny_matrices(size: models.TransformerSize) -> list[list[int]]:
    """The transformer's matrices in parameter order, from its definition: embeddings, per block the fused qkv,
    attention output and the two MLP matrices, then the LM head."""
    w = size.width
    block = [[3 * w, w], [w, w], [4 * w, w], [w, 4 * w]]
    return [[size.vocab, w], [size.context, w], *block * size.depth, [size.vocab, w]]


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> models.TransformerSize:
    monkeypatch.setattr(models, "TRANSFORMER", TINY)
    monkeypatch.setitem(sys.modules, "heavyball", None)  # import heavyball -> ImportError: skipped
    return TINY


def run(tmp_path: Path, *argv: str) -> dict[str, Any]:
    out = tmp_path / "out.json"
    threads = str(torch.get_num_threads())  # main() sets the thread count: keep the test process's
    cli.main([*argv, *STEPS, "--threads", threads, "--workloads", "transformer", "--out", str(out)])
    return json.loads(out.read_text())


def test_the_transformer_is_the_workload_model() -> None:
    model, grads = models.build_model("transformer", seed=0)
    assert isinstance(model, CharTransformer)
    assert len(grads) == len(list(model.parameters())) and all(torch.isfinite(g).all() for g in grads)
    assert [list(s) for s in models.matrix_shapes(model)] == tiny_matrices(models.TRANSFORMER)
    with pytest.raises(ValueError, match="unknown workload 'mlp'"):
        models.build_model("mlp", seed=0)


def test_soap_mode_runs_and_reports_every_row(tiny: models.TransformerSize, tmp_path: Path) -> None:
    res = run(tmp_path)
    assert res["meta"]["settings"]["steps"] == 10
    wl = res["transformer"]
    assert wl["matrices"] == tiny_matrices(tiny)
    rows = wl["optimizers"]
    assert set(rows) == {ADAMW, OURS, "pytorch_optimizer SOAP", FLOOR, FLOOR_DIRECT}
    for label, row in rows.items():
        assert len(row["step_times_ms"]) == 10, label
        assert row["warmup_steps"] == 10, label
        assert row["refreshes_timed"] == (0 if label == ADAMW else 1), label  # one refresh per 10 steps
    assert rows[ADAMW]["x_adamw"] == 1.0 and rows[FLOOR]["x_floor"] == 1.0
    model, _ = models.build_model("transformer", seed=0)
    params = list(model.parameters())
    numel = sum(p.numel() for p in params)
    # AdamW: exp_avg and exp_avg_sq (float32, like the params) and a float32 scalar step per parameter
    assert rows[ADAMW]["state_mib"] * 2**20 == 8 * numel + 4 * len(params)
    # every SOAP keeps at least both Kronecker factors and both eigenbases of every matrix
    at_least = sum(4 * 2 * (m * m + n * n) for m, n in wl["matrices"])
    for label in (OURS, "pytorch_optimizer SOAP"):
        assert rows[label]["state_mib"] * 2**20 >= at_least, label
    assert rows[FLOOR]["state_mib"] == 0.0  # a pseudo-optimizer: no state
    assert set(wl["ours_vs_peers"]) == {"pytorch_optimizer SOAP"} and wl["targets"]["fastest_peer"] == (
        "pytorch_optimizer SOAP"
    )


def test_soap_options_mode_adds_a_row_per_option(tiny: models.TransformerSize, tmp_path: Path) -> None:
    """``--soap-options``: our SOAP with each opt-in refresh option, p50/p99, ×default and state per param byte."""
    from benchmarks.step.soap import SOAP_OPTIONS

    res = run(tmp_path, "--soap-options")
    wl = res["transformer"]
    rows = wl["optimizers"]
    option_rows = {f"{OURS} ({name})" for name in SOAP_OPTIONS}
    assert option_rows <= set(rows) and set(wl["options_vs_default"]) == option_rows
    assert set(wl["ours_vs_peers"]) == {"pytorch_optimizer SOAP"}  # options are not peers
    for label, row in rows.items():
        assert row["min_ms"] <= row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], label
        assert row["refreshes_timed"] == (0 if label == ADAMW else 1), label
    model, _ = models.build_model("transformer", seed=0)
    params = list(model.parameters())
    numel = sum(p.numel() for p in params)
    adamw = rows[ADAMW]["state_per_param_byte"]
    assert adamw == (8 * numel + 4 * len(params)) / (4 * numel)  # two float32 moments + a step per param
    assert rows[FLOOR]["state_per_param_byte"] is None
    for label in (OURS, *option_rows):  # same state whatever the option
        assert rows[label]["state_per_param_byte"] == rows[OURS]["state_per_param_byte"] > adamw, label


def test_family_mode_runs_and_reports_every_row(tiny: models.TransformerSize, tmp_path: Path) -> None:
    res = run(tmp_path, "--family", "--families", "shampoo,lion,mfac")
    model, _ = models.build_model("transformer", seed=0)
    numel = sum(p.numel() for p in model.parameters())
    shampoo = res["transformer"]["shampoo"]["optimizers"]
    peers = ("pytorch_optimizer Shampoo", "pytorch_optimizer ScalableShampoo")
    assert set(shampoo) == {ADAMW, "precond Shampoo", "precond Shampoo grafting=none", *peers}
    # roots at steps 10 and 20: the timed steps 11-20 hold one
    for label in ("precond Shampoo", "precond Shampoo grafting=none", *peers):
        assert shampoo[label]["timed_steps"] == 10 and shampoo[label]["refreshes_timed"] == 1, label
        assert shampoo[label]["state_mib"] * 2**20 >= 4 * sum(m * m + n * n for m, n in tiny_matrices(TINY)), label
    lion, mfac = res["transformer"]["lion"]["optimizers"], res["transformer"]["mfac"]["optimizers"]
    assert set(lion) == {ADAMW, "precond Lion", "precond Lion nonfinite=off", "pytorch_optimizer Lion"}
    assert set(mfac) == {ADAMW, "precond MFAC", "torch SGD"}
    for row in (*lion.values(), *mfac.values()):
        assert row["timed_steps"] == 10 and row["refreshes_timed"] == 0
    assert lion["precond Lion"]["x_ours"] == 1.0 and lion["precond Lion"]["state_x_ours"] == 1.0
    assert lion["pytorch_optimizer Lion"]["state_mib"] * 2**20 == 4 * numel  # one float32 momentum
    assert mfac["precond MFAC"]["state_mib"] * 2**20 >= 32 * 4 * numel  # a window of 32 float32 gradients
    assert mfac["torch SGD"]["state_mib"] == 0.0  # no momentum: no state
    assert res["transformer"]["mfac"]["params"]["precond MFAC"] == numel


def test_bad_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--block", "15"], "--block must be a multiple of the refresh period 10"),
        (["--family", "--families", "adam"], "unknown families ['adam']"),
        (["--family", "--profile", "5"], "not with --family"),
        (["--family", "--soap-options"], "not with --family"),
        (["--workloads", "transformer,mlp"], "unknown workloads ['mlp']: choose from transformer,conv"),
    ):
        with pytest.raises(SystemExit) as info:
            cli.main([*argv, "--out", str(tmp_path / "x.json")])
        assert info.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "x.json").exists()
    for out in (tmp_path, tmp_path / "file" / "x.json"):  # a folder; a path under a file
        (tmp_path / "file").write_text("")
        with pytest.raises(SystemExit) as info:
            cli.main(["--quick", "--out", str(out)])
        assert info.value.code == 2 and "--out" in capsys.readouterr().err


@pytest.mark.slow
def test_the_quick_command_runs(tmp_path: Path) -> None:
    """The documented smoke run, HeavyBall included, through the script entry point."""
    out = tmp_path / "quick.json"
    cmd = [sys.executable, "benchmarks/optimizer_step.py", "--quick", "--workloads", "conv", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads(out.read_text())["conv"]["optimizers"]
    assert {ADAMW, OURS, FLOOR, FLOOR_DIRECT} <= set(rows)
    assert all(len(row["step_times_ms"]) == 20 for row in rows.values())
