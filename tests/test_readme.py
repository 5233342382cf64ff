"""Every README snippet marked ``<!-- readme-test -->`` runs as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPETS = re.findall(r"<!-- readme-test -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_tested_snippets():
    assert len(SNIPPETS) >= 1


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_a_readme_snippet_runs_as_written(code, tmp_path):
    needs = re.findall(r"^(?:import|from) (\w+)", code, re.M)
    for name in set(needs) - {"fastmlp", "numpy"}:
        pytest.importorskip(name)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
