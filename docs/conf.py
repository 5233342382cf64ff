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
    "sphinx_gallery.gen_gallery",   # examples/ run at build time: the gallery and its figures
]
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build"]
# the gallery's configuration holds functions: Sphinx cannot pickle it for its cache
suppress_warnings = ["config.cache"]
nitpicky = False

# --- the example gallery ---------------------------------------------------------------------

import tempfile  # noqa: E402

_ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
_SHARED = os.path.join(os.path.dirname(_ROOT), "shared", "datasets")
if os.path.isdir(os.path.join(_SHARED, "mnist")):       # this project's copy of MNIST
    os.environ.setdefault("FASTMLP_DATA", _SHARED)
os.environ.setdefault("MPLBACKEND", "Agg")
_FIGURES = tempfile.mkdtemp(prefix="fastmlp-gallery-")  # where the scripts write their PNGs


def _argv(gallery_conf, script_vars):
    """Each script's command line: its defaults, its PNG into the scratch folder."""
    return ["--out", _FIGURES]


def _written_pngs(block, block_vars, gallery_conf):
    """The PNGs a script wrote (fastmlp.plot saves and closes its figures), moved
    to the gallery's image paths."""
    import glob
    import shutil

    from sphinx_gallery.scrapers import figure_rst
    paths = []
    for png, target in zip(sorted(glob.glob(os.path.join(_FIGURES, "*.png"))),
                           block_vars["image_path_iterator"]):
        shutil.move(png, target)
        paths.append(target)
    return figure_rst(paths, gallery_conf["src_dir"])


sphinx_gallery_conf = {
    "examples_dirs": os.path.join(_ROOT, "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r".*\.py$",          # run every example
    "reset_argv": _argv,
    "image_scrapers": (_written_pngs,),
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "write_computation_times": False,       # its page loads jQuery and DataTables from CDNs
    "plot_gallery": "True",
}

html_theme = "pydata_sphinx_theme"
html_title = f"fastmlp {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": True,
}
html_static_path = []
# Without a default the theme's script finds an empty mode on a first visit and logs a
# console error (tests/test_site_browser.py caught it): follow the reader's system.
html_context = {"default_mode": "auto"}

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
