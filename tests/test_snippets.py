"""Every snippet marked to be tested runs as written: in README.md those after
``<!-- readme-test -->``, in the site's pages (docs/) those after a
``.. snippet-test`` comment."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def marked_snippets():
    """(where, code) of every marked snippet, README first, then the pages."""
    found = [("README.md", code) for code in re.findall(
        r"<!-- readme-test -->\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)]
    for page in sorted((ROOT / "docs").rglob("*.rst")):
        if "_build" in page.parts:
            continue
        text = page.read_text(encoding="utf-8")
        marks = text.count(".. snippet-test\n")
        blocks = re.findall(r"^\.\. snippet-test\n\n\.\. code-block:: python\n\n"
                            r"((?:(?:   .*)?\n)+)", text, re.M)
        assert len(blocks) == marks, f"{page}: a snippet-test mark not followed by Python"
        where = str(page.relative_to(ROOT))
        found += [(where, textwrap.dedent(block)) for block in blocks]
    return found


SNIPPETS = marked_snippets()


def test_the_readme_and_the_guide_have_tested_snippets():
    places = {where for where, _ in SNIPPETS}
    assert "README.md" in places
    assert sum(where.startswith("docs/guide/") for where in places) >= 4


@pytest.mark.parametrize("where, code", SNIPPETS,
                         ids=[f"{w}-{i}" for i, (w, _) in enumerate(SNIPPETS)])
def test_a_snippet_runs_as_written(where, code, tmp_path, request):
    needs = re.findall(r"^(?:import|from) (\w+)", code, re.M)
    for name in set(needs) - {"fastmlp", "numpy"}:
        pytest.importorskip(name)
    env = dict(os.environ)
    if "load_mnist" in code:                     # MNIST from this project's copy, else skip
        env["FASTMLP_DATA"] = str(request.getfixturevalue("mnist_dir").parent)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
