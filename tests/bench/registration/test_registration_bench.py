"""The registration benchmark's pieces: scenes, the error split, the table, one budgeted run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from precond.bench.registration import KINDS, PERTURBATION, SceneSpec, errors, make_scene, run_benchmark
from precond.registration import apply_increment


@pytest.mark.parametrize("kind", KINDS)
def test_scenes_are_deterministic_with_orthonormal_degenerate_bases(kind: str) -> None:
    a, b = make_scene(SceneSpec(kind, 300, 3)), make_scene(SceneSpec(kind, 300, 3))
    np.testing.assert_array_equal(a.source, b.source)
    assert a.source.shape == a.target.shape == (300, 3)
    d = a.degenerate
    np.testing.assert_allclose(d @ d.T, np.eye(len(d)), atol=1e-12)


def test_error_split_of_the_initial_guess() -> None:
    # the initial guess itself: drift 0, and the corridor's degenerate part is its tx error exactly
    init = apply_increment(np.eye(4), PERTURBATION)
    e = errors(init, make_scene(SceneSpec("corridor", 300, 0)).degenerate)
    assert e["degenerate_drift"] == pytest.approx(0.0, abs=1e-15)
    xi = -PERTURBATION  # truth = init · Exp(ξ) gives ξ = (−ω₀, −R₀ᵀv₀): the same norms as −PERTURBATION
    assert e["rotation_error_deg"] == pytest.approx(np.degrees(np.linalg.norm(xi[:3])), rel=1e-12)
    assert e["translation_error"] == pytest.approx(np.linalg.norm(xi[3:]), rel=1e-12)
    assert e["observable_error"] ** 2 + e["degenerate_error"] ** 2 == pytest.approx(np.linalg.norm(xi) ** 2, rel=1e-12)


@pytest.mark.slow
def test_one_budgeted_run_writes_table_figure_and_json(tmp_path: Path) -> None:
    out = run_benchmark(
        [SceneSpec("room", 600, 0)], ["precond dcreg", "precond none"], budget=30.0, out=tmp_path, notes=["skip x"]
    )
    rows = out["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    # PCG to convergence is the Gauss–Newton step: DCReg's pose equals the direct solve's
    np.testing.assert_allclose(rows[0]["transform"], rows[1]["transform"], atol=1e-6)
    record = json.loads((tmp_path / "registration_quick.json").read_text())
    assert record["meta"]["code_version"] and len(record["rows"]) == 2 and record["meta"]["notes"] == ["skip x"]
    assert (tmp_path / "registration_quick.png").exists()


def test_a_peer_that_does_not_import_is_skipped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    from precond.bench.registration import runners

    monkeypatch.setitem(runners._MODULE, "open3d", "precond_no_such_module_xyz")
    keep, notes = runners.available_methods(["precond dcreg", "open3d point_to_plane", "open3d gicp"])
    assert keep == ["precond dcreg"]
    assert len(notes) == 2 and all("not installed" in n and "requirements/peers.txt" in n for n in notes)
    assert "libusb-1.0-0" in notes[0]


def test_an_import_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from precond.bench.registration import runners

    (tmp_path / "broken_peer_xyz.py").write_text("raise OSError('libusb-1.0.so.0: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert runners._import_error("broken_peer_xyz") == (
        "does not import (OSError: libusb-1.0.so.0: cannot open shared object file)"
    )
    assert runners._import_error("json") is None
