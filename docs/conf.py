"""Sphinx configuration of fastmlp's documentation site (``docs/``).

Build it (offline: nothing is fetched at build or view time) with

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import fastmlp  # noqa: E402

project = "fastmlp"
author = "the fastmlp developers"
copyright = "2026, the fastmlp developers"
release = version = fastmlp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",          # the docstrings' Google style (Args:, Returns:, Raises:)
    "sphinx.ext.viewcode",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build"]
nitpicky = False

html_theme = "pydata_sphinx_theme"
html_title = f"fastmlp {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": True,
}
html_static_path = []

# --- checks and filters --------------------------------------------------------------------

from sphinx.util import logging as _logging  # noqa: E402

_log = _logging.getLogger("fastmlp-docs")


def _skip(app, what, name, obj, skip, options):
    """Leave out names imported from other packages, and what scikit-learn's
    base classes add (metadata-routing setters, whose docstrings point into
    scikit-learn's own site)."""
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and not module.startswith("fastmlp"):   # imported from elsewhere
        return True
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def _needs_docstring(app, what, name, obj, options, lines):
    """A public name without a docstring is a warning, so the -W build fails."""
    short = name.rsplit(".", 1)[-1]
    if not short.startswith("_") and not any(line.strip() for line in lines) \
            and what in ("module", "class", "function", "method"):
        _log.warning(f"public {what} {name} has no docstring")


def setup(app):
    app.connect("autodoc-skip-member", _skip)
    app.connect("autodoc-process-docstring", _needs_docstring)
