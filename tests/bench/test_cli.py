"""End-to-end: the ``precond`` command on the tiny preset, the report re-rendered from the database, bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from precond.bench.protocol import Plan, summarize
from precond.bench.report import format_table, headline, plot
from precond.bench.trial import TrialResult, TrialSpec
from precond.cli import main

TINY = ["--workload", "quadratic", "--preset", "tiny", "--optimizers", "adamw,soap", "--lr-points", "2"]


def test_bench_runs_end_to_end_then_reuses_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, out = tmp_path / "bench.sqlite", tmp_path / "out"
    args = ["bench", *TINY, "--seeds", "2", "--db", str(db), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "| adamw" in first and "| soap" in first and "baseline" in first
    assert first.count("(reused)") == 0
    rows = sqlite3.connect(db).execute("select optimizer, status from trials").fetchall()
    assert sorted(rows) == [("adamw", "ok")] * 3 + [("soap", "ok")] * 3  # 2 lrs + 1 extra seed each
    png = out / "quadratic-tiny.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "quadratic-tiny.json").read_text())
    assert [o["optimizer"] for o in record["optimizers"]] == ["adamw", "soap"]

    # the same command again trains nothing: every trial comes from the database
    assert main(args) == 0
    assert capsys.readouterr().out.count("(reused)") == 6

    # `bench report` renders the same table from the database alone
    png.unlink()
    assert main(["bench", "report", *TINY, "--seeds", "2", "--db", str(db), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert first.split("\n| optimizer")[1].split("\n\n")[0] == report.split("\n| optimizer")[1].split("\n\n")[0]
    assert png.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bench", "--optimizers", "adamw,nope"], "--optimizers"),
        (["bench", "--workload", "imagenet"], "--workload"),
        (["bench", "--seeds", "0"], "--seeds"),
        (["bench", "--preset", "huge"], "--preset"),
    ],
)
def test_bad_arguments_are_usage_errors_naming_the_argument(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_report_without_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="does not exist"):
        main(["bench", "report", "--db", str(tmp_path / "missing.sqlite")])


def test_python_dash_m_precond_works() -> None:
    done = subprocess.run([sys.executable, "-m", "precond", "bench", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--optimizers" in done.stdout


def _result(optimizer: str, lr: float, seed: int, final: float, curve: list[tuple[int, float, float]]) -> TrialResult:
    spec = TrialSpec.make("quadratic", "tiny", optimizer, {"lr": lr}, seed)
    return TrialResult(spec, "ok", final, tuple(curve), curve[-1][0], curve[-1][2], 0.001, 1024, 2048)


def test_report_table_headline_and_plot_from_synthetic_results(tmp_path: Path) -> None:
    plan = Plan("quadratic", ("adamw", "soap"), preset="tiny", lr_points=1, seeds=2)
    (lr_a,) = (p["lr"] for p in plan.grid("adamw"))
    (lr_s,) = (p["lr"] for p in plan.grid("soap"))
    results = [
        _result("adamw", lr_a, 0, 1.0, [(0, 3.0, 0.0), (10, 2.0, 1.0), (20, 1.0, 2.0)]),
        _result("adamw", lr_a, 1, 1.0, [(0, 3.0, 0.0), (10, 2.0, 1.0), (20, 1.0, 2.0)]),
        _result("soap", lr_s, 0, 0.5, [(0, 3.0, 0.0), (10, 1.0, 2.0), (20, 0.5, 4.0)]),
        _result("soap", lr_s, 1, 0.5, [(0, 3.0, 0.0), (10, 1.0, 2.0), (20, 0.5, 4.0)]),
    ]
    summary = summarize(plan, results)
    table = format_table(summary, legend=False)
    soap_row = next(line for line in table.splitlines() if line.startswith("| soap"))
    # soap reaches adamw's final loss 1.0 at step 10 (adamw: step 20): 2.00× fewer steps, 2 s vs 2 s of training
    assert "2.00×" in soap_row and "1.00×" in soap_row and "0.5000 ± 0.0000 (n=2)" in soap_row
    assert "soap: reaches the target in 10 steps (2.00× fewer" in headline(summary)
    png = plot(summary, tmp_path / "p.png")
    assert png.stat().st_size > 10_000


def test_ctrl_c_keeps_finished_trials_and_the_rerun_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    import precond.bench.protocol as protocol

    real, calls = protocol.run_trial, []

    def interrupted_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(protocol, "run_trial", interrupted_on_the_third)
    db = tmp_path / "bench.sqlite"
    args = ["bench", *TINY, "--seeds", "1", "--db", str(db), "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 130
    assert "rerun the same command" in capsys.readouterr().err
    assert sqlite3.connect(db).execute("select count(*) from trials").fetchone() == (2,)

    monkeypatch.setattr(protocol, "run_trial", real)
    assert main(args) == 0
    assert capsys.readouterr().out.count("(reused)") == 2  # the 2 finished trials; the other 2 are trained now
    assert sqlite3.connect(db).execute("select count(*) from trials").fetchone() == (4,)
