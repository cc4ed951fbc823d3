"""Every ```python block of README.md runs as written, each in a fresh namespace (no names carried between them)."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number of the opening fence, code)`` for every fenced block tagged ``python``."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _FENCE.finditer(text)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))
LIMIT_S = 60  # a block that hangs fails instead of stalling the suite (the examples take a second or two)


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """``TimeoutError`` after ``seconds`` (SIGALRM, where the platform has it; otherwise no limit)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"README block still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2, "README.md lost its examples (or the fence pattern no longer matches them)"


def test_the_extractor_finds_exactly_the_python_blocks() -> None:
    text = "a\n```bash\nls\n```\n```python\nx = 1\n```\n```\nplain\n```\n```python\ny = 2\n\nz = 3\n```\n"
    assert python_blocks(text) == [(5, "x = 1\n"), (11, "y = 2\n\nz = 3\n")]


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_block_runs(line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # blocks may save files (opt.pt)
    compiled = compile("\n" * line + code, str(README), "exec")  # tracebacks give README.md's own line numbers
    with time_limit(LIMIT_S):
        exec(compiled, {"__name__": f"readme_block_{line}"})
