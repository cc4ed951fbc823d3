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

TINY = [
    "--workload",
    "quadratic",
    "--preset",
    "tiny",
    "--optimizers",
    "adamw,soap",
    "--lr-points",
    "2",
    "--lr-extend",
    "0",
    "--lr-refine",
    "0",
]


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
    plan = Plan("quadratic", ("adamw", "soap"), preset="tiny", lr_points=1, lr_extend=0, lr_refine=0, seeds=2)
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


# --------------------------------------------------------------------------- issue 11, item 13: CLI structure

from precond.cli import _fill_defaults as fill_defaults  # noqa: E402
from precond.cli import build_parser  # noqa: E402

#: every shared option of `precond bench` with a non-default value and the parsed value it must give
SHARED = [
    ("--workload", "mlp", "workload", "mlp"),
    ("--preset", "tiny", "preset", "tiny"),
    ("--optimizers", "soap", "optimizers", ("soap",)),
    ("--baseline", "sgd", "baseline", "sgd"),
    ("--lr-points", "2", "lr_points", 2),
    ("--sweep-wd", None, "sweep_wd", True),
    ("--seeds", "5", "seeds", 5),
    ("--db", "other.sqlite", "db", Path("other.sqlite")),
    ("--out", "elsewhere", "out", Path("elsewhere")),
    ("--threads", "1", "threads", 1),
    ("--no-progress", None, "no_progress", True),
]
REPORT_OPTIONS = {"workload", "preset", "optimizers", "baseline", "lr_points", "sweep_wd", "seeds", "db", "out"}


def _parse(argv: list[str]):
    parser = build_parser()
    args = parser.parse_args(argv)
    fill_defaults(parser, args)
    return args


@pytest.mark.parametrize(
    ("flag", "value", "dest", "expected", "action"),
    [(*o, action) for action in ("run", "report") for o in SHARED if action == "run" or o[2] in REPORT_OPTIONS],
)
def test_every_shared_option_works_before_and_after_the_action(flag, value, dest, expected, action) -> None:
    """`precond bench --optimizers soap run` and `precond bench run --optimizers soap` both mean soap (the run
    options that do not apply to report are refused there: see the next test)."""
    option = [flag] if value is None else [flag, value]
    default = getattr(_parse(["bench", action]), dest)
    assert default != expected
    before = _parse(["bench", *option, action])
    after = _parse(["bench", action, *option])
    assert getattr(before, dest) == getattr(after, dest) == expected
    if action == "run":
        assert getattr(_parse(["bench", *option]), dest) == expected  # no action: run
    for other, _, other_dest, _ in SHARED:  # and nothing else changed
        if other_dest != dest and hasattr(before, other_dest):
            assert getattr(before, other_dest) == getattr(_parse(["bench", action]), other_dest), other


def test_run_options_are_refused_for_report(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--threads", "2", "report"])
    assert exc.value.code == 2 and "--threads does not apply to `precond bench report`" in capsys.readouterr().err


def test_option_before_the_action_is_what_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    """End to end: the plan given before `run` is the plan trained (was: the defaults)."""
    import precond.bench.protocol as protocol

    trained: list[str] = []
    real = protocol.run_trial

    def spy(workload, spec, progress=None):
        assert spec.workload == "quadratic", f"trained the default workload {spec.workload}"
        trained.append(spec.optimizer)
        return real(workload, spec, progress)

    monkeypatch.setattr(protocol, "run_trial", spy)
    argv = [
        "bench",
        "--workload",
        "quadratic",
        "--preset",
        "tiny",
        "--optimizers",
        "soap",
        "--lr-points",
        "1",
        "--lr-extend",
        "0",
        "--lr-refine",
        "0",
    ]
    argv += ["--seeds", "1", "--db", str(tmp_path / "b.sqlite"), "--out", str(tmp_path), "run", "--no-progress"]
    assert main(argv) == 0
    assert trained == ["adamw", "soap"]  # the baseline is added; not muon
    assert "workload quadratic/tiny" in capsys.readouterr().out


def _tiny_run(tmp_path: Path, *extra: str) -> list[str]:
    db, out = tmp_path / "bench.sqlite", tmp_path / "out"
    args = [
        "bench",
        "--workload",
        "quadratic",
        "--preset",
        "tiny",
        "--optimizers",
        "adamw",
        "--lr-points",
        "2",
        "--lr-extend",
        "0",
        "--lr-refine",
        "0",
    ]
    return [*args, "--seeds", "1", "--db", str(db), "--out", str(out), "--no-progress", *extra]


def test_report_without_options_renders_the_latest_run(tmp_path: Path, capsys) -> None:
    """After `precond bench --preset tiny ...`, a bare `precond bench report` finds that run (was: lm/quick)."""
    assert main(_tiny_run(tmp_path)) == 0
    run_table = capsys.readouterr().out.split("\n| optimizer")[1].split("\n\n")[0]
    (tmp_path / "out" / "quadratic-tiny.json").unlink()
    assert main(["bench", "report", "--db", str(tmp_path / "bench.sqlite"), "--out", str(tmp_path / "out")]) == 0
    report = capsys.readouterr().out
    assert report.split("\n| optimizer")[1].split("\n\n")[0] == run_table
    assert (tmp_path / "out" / "quadratic-tiny.json").exists()
    # options given override the recorded plan (the rest stays): soap was never run, adamw's trials are found
    argv = ["bench", "report", "--optimizers", "adamw,soap", "--db", str(tmp_path / "bench.sqlite")]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| soap " in table and "missing [0/2 trials]" in table and "baseline" in table


def test_report_of_a_store_without_recorded_runs_uses_the_latest_trial(tmp_path: Path, capsys) -> None:
    from precond.bench.store import Store
    from precond.bench.trial import code_version

    plan = Plan("quadratic", ("adamw",), preset="tiny", lr_points=1, lr_extend=0, lr_refine=0, seeds=1)
    (lr,) = (p["lr"] for p in plan.grid("adamw"))
    with Store(tmp_path / "b.sqlite") as store:
        store.put(_result("adamw", lr, 0, 1.0, [(0, 3.0, 0.0), (20, 1.0, 2.0)]), code_version())
    argv = [
        "bench",
        "report",
        "--lr-points",
        "1",
        "--lr-extend",
        "0",
        "--lr-refine",
        "0",
        "--seeds",
        "1",
        "--optimizers",
        "adamw",
    ]
    assert main([*argv, "--db", str(tmp_path / "b.sqlite"), "--out", str(tmp_path)]) == 0
    assert "on quadratic/tiny" in capsys.readouterr().out


def test_report_messages_name_what_the_store_holds(tmp_path: Path) -> None:
    from precond.bench.store import Store
    from precond.bench.trial import code_version

    db = tmp_path / "b.sqlite"
    Store(db).close()
    with pytest.raises(SystemExit, match="holds no trials yet; run `precond bench` first"):
        main(["bench", "report", "--db", str(db), "--out", str(tmp_path)])
    with Store(db) as store:
        store.put(_result("adamw", 0.001, 0, 1.0, [(0, 3.0, 0.0), (20, 1.0, 2.0)]), "0.0.1+old")
    # only another code version's trials of this workload: say so, and do not list this code version as "other"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "report", "--db", str(db), "--out", str(tmp_path)])
    text = str(exc.value.code)
    assert "no quadratic/tiny trials of this code version" in text and "other code versions (0.0.1+old)" in text
    assert text.count(code_version()) == 1
    # trials of this code version, but of another workload than the one asked for
    with Store(db) as store:
        store.put(_result("adamw", 0.001, 0, 1.0, [(0, 3.0, 0.0), (20, 1.0, 2.0)]), code_version())
    with pytest.raises(SystemExit, match=r"no trials for lm/quick in .*; it holds quadratic/tiny \(2 trials\)"):
        main(["bench", "report", "--workload", "lm", "--db", str(db), "--out", str(tmp_path)])


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import precond.bench.protocol as protocol

    def refuse(*args, **kwargs):
        raise AssertionError("a trial was trained although the arguments were invalid")

    monkeypatch.setattr(protocol, "run_trial", refuse)


def _bad_paths(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "a-file").write_text("keep me")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all, just some bytes " * 20)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    (tmp_path / "d" / "quadratic-tiny.json").mkdir(parents=True)
    return {
        "db is a folder": (["--db", str(tmp_path)], r"--db .*: .* is a folder; name a file in it instead"),
        "db folder missing": (["--db", str(tmp_path / "no" / "b.sqlite")], r"--db .*does not exist; create"),
        "db parent is a file": (["--db", str(tmp_path / "a-file" / "b.sqlite")], r"--db .*does not exist; create"),
        "db not sqlite": (["--db", str(junk)], r"--db .*junk.sqlite: .* is not an SQLite database"),
        "db foreign": (["--db", str(foreign)], r"--db .*is an SQLite database but not a precond bench store"),
        "out is a file": (["--out", str(tmp_path / "a-file")], r"--out .*a-file is a file, not a folder"),
        "out under a file": (["--out", str(tmp_path / "a-file" / "sub")], r"--out .*cannot write there"),
        "out record is a folder": (["--out", str(tmp_path / "d")], r"--out .*quadratic-tiny.json is a folder"),
    }


CASES = [
    "db is a folder",
    "db folder missing",
    "db parent is a file",
    "db not sqlite",
    "db foreign",
    "out is a file",
    "out under a file",
    "out record is a folder",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_db_or_out_fails_before_any_training(case: str, tmp_path: Path, no_training: None) -> None:
    option, match = _bad_paths(tmp_path)[case]
    argv = _tiny_run(tmp_path)
    with pytest.raises(SystemExit, match=match):
        main([*argv, *option])  # the later --db/--out wins
    assert (tmp_path / "a-file").read_text() == "keep me"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (unwritable even for root)")
def test_unwritable_db_and_out_fail_before_any_training(tmp_path: Path, no_training: None) -> None:
    with pytest.raises(SystemExit, match=r"--db /proc/precond.sqlite: cannot open or create"):
        main([*_tiny_run(tmp_path), "--db", "/proc/precond.sqlite"])
    with pytest.raises(SystemExit, match=r"--out /proc/precond-out: cannot write there"):
        main([*_tiny_run(tmp_path), "--out", "/proc/precond-out"])


@pytest.mark.parametrize("case", ["db not sqlite", "db foreign", "out is a file", "out record is a folder"])
def test_report_checks_db_and_out_too(case: str, tmp_path: Path) -> None:
    assert main(_tiny_run(tmp_path)) == 0
    option, match = _bad_paths(tmp_path)[case]
    argv = ["bench", "report", "--db", str(tmp_path / "bench.sqlite"), "--out", str(tmp_path / "out"), *option]
    with pytest.raises(SystemExit, match=match):
        main(argv)


def test_soaps_option_variants_are_planned_as_soap_against_soap() -> None:
    """Issue 18's comparison parses: each variant is swept and seeded exactly as soap, with soap as baseline."""
    from precond.cli import _plan

    variants = ("soap_drift", "soap_stagger", "soap_cholqr")
    args = _parse(["bench", "--optimizers", ",".join(("soap", *variants)), "--baseline", "soap", "--seeds", "3"])
    plan = _plan(args)
    assert plan.optimizers == ("soap", *variants) and plan.baseline == "soap"
    for name in variants:
        assert plan.expected_trials(name) == plan.expected_trials("soap") == 3 + 2 * 2 + 2
        assert [g["lr"] for g in plan.grid(name)] == [g["lr"] for g in plan.grid("soap")]
        assert plan.spec_for(name, {"lr": 0.01}).optimizer == name
