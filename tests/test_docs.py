"""The documentation site builds (Sphinx, offline, warnings as errors) and has a
page for every public name; a public name without a docstring fails it."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("pydata_sphinx_theme")
pytest.importorskip("sphinx_gallery")

import fastmlp  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
# the site itself: the session fixture ``site`` (conftest.py), shared with test_site_browser.py


def test_the_site_builds_with_a_page_per_public_name(site):
    assert (site / "index.html").is_file() and (site / "api.html").is_file()
    pages = {p.stem for p in (site / "generated").glob("*.html")}
    for name in fastmlp.__all__:
        if name in ("engines",):               # internals: the architecture page's subject
            continue
        assert f"fastmlp.{name}" in pages, name
    for module in ("sklearn", "distributed", "sparse", "stream"):
        assert f"fastmlp.{module}" in pages


def test_the_gallery_ran_every_example_and_shows_its_figure(site):
    import re
    examples = sorted(p.stem for p in (DOCS.parent / "examples").glob("*.py"))
    for name in examples:
        page = (site / "auto_examples" / f"{name}.html").read_text(encoding="utf-8")
        assert re.search(rf'<img[^>]*src="[^"]*sphx_glr_{name}_001\.png"', page), name
    recipe = (site / "auto_examples" / "mnist_98_recipe.html").read_text(encoding="utf-8")
    accuracy = float(re.search(r"test accuracy (\d+\.\d+)% after 20 epochs", recipe).group(1))
    assert accuracy >= 98.0                  # the recipe's own run, in this build


def test_nothing_is_fetched_when_a_page_is_viewed(site):
    import re
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r'<(link|script|img)[^>]*(href|src)="(https?:)?//', text), page


def test_a_public_name_without_a_docstring_is_a_warning(monkeypatch):
    spec = importlib.util.spec_from_file_location("docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    said = []
    monkeypatch.setattr(conf._log, "warning", said.append)

    def undocumented():
        pass
    conf._needs_docstring(None, "function", "fastmlp.undocumented", undocumented, {}, [])
    conf._needs_docstring(None, "function", "fastmlp.documented", undocumented, {}, ["Does."])
    conf._needs_docstring(None, "function", "fastmlp._private", undocumented, {}, [])
    assert said == ["public function fastmlp.undocumented has no docstring"]
