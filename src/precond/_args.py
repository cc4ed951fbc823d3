"""Argument types and checks shared by the ``precond`` command's parsers: errors name what was expected and what
came, or the option and the fix."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type accepting integers ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type accepting finite numbers ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class UsageError(ValueError):
    """A command-line value that cannot work (e.g. an output folder that is a file); the message names the option
    and the fix. Commands turn it into a usage error (exit status 2) before any work starts."""


def writable_folder(path: Path, option: str, files: Sequence[str] = ()) -> Path:
    """Create folder ``path`` if missing and check that ``files`` can be written into it; else :class:`UsageError`
    naming ``option``. Called before a command's work, so that results are never computed and then lost."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder; name a folder for the results (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(
            f"{option} {path}: cannot write there ({exc.strerror or exc}); choose a writable folder"
        ) from None
    for name in files:
        if (path / name).is_dir():
            raise UsageError(
                f"{option} {path}: {path / name} is a folder, the results file cannot replace it; "
                f"remove it or choose another {option}"
            )
    return path


def script_main(
    description: str | None,
    add_arguments: Callable[..., None],
    run_from_args: Callable[..., Any],
    argv: Sequence[str] | None,
    *,
    out_default: Path,
    prog: str | None,
) -> Any:
    """The body of an area's full-grid benchmark script (``benchmarks/<area>.py``): parse ``argv`` with the
    area's ``add_arguments`` (full grid by default), run ``run_from_args`` with the command line as typed, and
    turn a :class:`UsageError` into argparse's usage error (exit status 2)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, quick_default=False, out_default=out_default)
    args = parser.parse_args(argv)
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        return run_from_args(args, shlex.join([prog or Path(sys.argv[0]).name, *words]), out_default=out_default)
    except UsageError as err:
        parser.error(str(err))
