"""The documentation cannot rot: every ``python`` code block of the guides runs (each page's blocks in order, in
one namespace), and the site builds offline with warnings as errors."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = sorted(p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))


def test_the_guides_have_code_blocks() -> None:
    assert {p.name for p in PAGES} >= {"optimizers.md", "benchmark.md", "your-model.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_block_runs(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for number, code in enumerate(BLOCK.findall(page.read_text()), 1):
        exec(compile(code, f"{page.name} block {number}", "exec"), module.__dict__)


@pytest.mark.slow
def test_the_site_builds_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    pytest.importorskip("myst_parser")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "your-model.html").exists() and (tmp_path / "api.html").exists()
