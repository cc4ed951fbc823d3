"""Per-area code versions: each area hashes exactly its own sources, so editing one area's harness never
invalidates another area's stored results (issue 11, item 15)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import precond
from precond.bench import versions
from precond.bench.environment import SourceSet, package_root
from precond.bench.trial import code_version

SRC = Path(precond.__file__).resolve().parent


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the precond package that ``precond.__file__`` (hence every code version) points at."""
    root = tmp_path / "precond"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(precond, "__file__", str(root / "__init__.py"))
    assert package_root() == root.resolve()
    return root


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


def test_the_copy_has_the_same_versions(tree: Path) -> None:
    assert versions.OPTIMIZER.digest(tree) == versions.OPTIMIZER.digest(SRC)
    assert versions.OT.digest(tree) == versions.OT.digest(SRC)


@pytest.mark.parametrize(
    "edited", ["bench/ot/runners.py", "bench/ot/problems.py", "bench/ot/run.py", "bench/_harness.py", "ot/sinkhorn.py"]
)
def test_editing_the_ot_harness_keeps_the_optimizer_version(tree: Path, edited: str) -> None:
    optimizer, ot = code_version(), versions.code_version("ot")
    _edit(tree / edited)
    assert code_version() == optimizer
    assert versions.code_version("ot") != ot


def test_a_new_ot_module_keeps_the_optimizer_version(tree: Path) -> None:
    optimizer = code_version()
    (tree / "bench" / "ot" / "extra.py").write_text("X = 1\n")
    (tree / "bench" / "completion").mkdir(exist_ok=True)
    (tree / "bench" / "completion" / "extra.py").write_text("Y = 2\n")
    assert code_version() == optimizer


@pytest.mark.parametrize("edited", ["optim/soap.py", "bench/trial.py", "bench/workloads.py", "bench/_text.py"])
def test_editing_optimizer_code_changes_only_the_optimizer_version(tree: Path, edited: str) -> None:
    optimizer, ot = code_version(), versions.code_version("ot")
    _edit(tree / edited)
    assert code_version() != optimizer
    assert versions.code_version("ot") == ot


def test_linalg_is_shared_by_both(tree: Path) -> None:
    optimizer, ot = code_version(), versions.code_version("ot")
    _edit(tree / "linalg" / "_cg.py")
    assert code_version() != optimizer and versions.code_version("ot") != ot


@pytest.mark.parametrize(
    "edited",
    [
        "bench/store.py",
        "bench/protocol.py",
        "bench/report.py",
        "bench/ot/output.py",
        "bench/completion/output.py",
        "bench/completion/cli.py",
        "cli.py",
    ],
)
def test_storage_reporting_and_cli_invalidate_nothing(tree: Path, edited: str) -> None:
    before = {area: versions.code_version(area) for area in versions.AREAS}
    _edit(tree / edited)
    assert {area: versions.code_version(area) for area in versions.AREAS} == before


@pytest.mark.parametrize(
    "edited",
    [
        "bench/completion/problems.py",
        "bench/completion/runners.py",
        "bench/completion/run.py",
        "completion/_solve.py",
    ],
)
def test_editing_completion_code_changes_only_the_completion_version(tree: Path, edited: str) -> None:
    before = {area: versions.code_version(area) for area in versions.AREAS}
    _edit(tree / edited)
    after = {area: versions.code_version(area) for area in versions.AREAS}
    assert after["completion"] != before["completion"]
    assert after["optimizer"] == before["optimizer"] and after["ot"] == before["ot"]


def test_files_are_named_explicitly_and_described() -> None:
    files = versions.OPTIMIZER.files()
    assert "optim/soap.py" in files and "linalg/_cg.py" in files and "bench/trial.py" in files
    assert not any(f.startswith(("bench/ot/", "ot/")) or f == "bench/_harness.py" for f in files)
    ot_files = versions.OT.files()
    assert "bench/ot/runners.py" in ot_files and "ot/sinkhorn.py" in ot_files and "bench/_harness.py" in ot_files
    assert not any(f.startswith("optim/") for f in ot_files)
    text = versions.OPTIMIZER.describe()
    assert text.startswith("optimizer code version hashes precond/optim/**/*.py (")
    assert "precond/bench/trial.py" in text


def test_digest_is_sha256_over_paths_and_bytes(tmp_path: Path) -> None:
    """The digest pinned on a two-file tree: the algorithm is the one the stored keys were made with."""
    import hashlib

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_bytes(b"x = 1\n")
    (tmp_path / "b.py").write_bytes(b"y = 2\n")
    expected = hashlib.sha256(b"a/x.py\0x = 1\n\0b.py\0y = 2\n\0").hexdigest()[:12]
    assert SourceSet("t", ("b.py", "a/**/*.py")).digest(tmp_path) == expected


def test_every_source_file_is_hashed_by_an_area_or_listed_as_unhashed() -> None:
    """A new module must be put in an area's SourceSet (it can change that area's figures) or in
    versions.UNHASHED (it cannot): a module silently left out would let stale results be reused."""
    covered = {f for s in versions.AREAS.values() for f in s.files()}
    unhashed = set(SourceSet("unhashed", versions.UNHASHED).files())
    every = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if "__pycache__" not in p.parts}
    assert every - covered - unhashed == set()
    assert covered & unhashed == set()


def test_unknown_area_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown benchmark area 'nope'; choose from optimizer, ot"):
        versions.code_version("nope")
