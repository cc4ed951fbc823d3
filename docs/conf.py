"""Sphinx configuration of precond's documentation site (``make docs``; built with warnings as errors)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

project = "precond"
author = "precond developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "precond"
autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_typehints = "description"
myst_heading_anchors = 3
napoleon_use_ivar = True
