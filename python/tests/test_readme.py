"""The README's Python example runs as written (in a temporary folder)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_readme_example_runs(tmp_path):
    readme = (REPO / "README.md").read_text()
    m = re.search(r"## Use it from Python.*?```python\n(.*?)```", readme, re.S)
    assert m, "README has no Python example under 'Use it from Python'"
    script = tmp_path / "example.py"
    script.write_text(m.group(1))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0].split()
    assert first[0] == "b", out.stdout  # the query is made from document b's tokens


def test_python_guides_first_example_runs(tmp_path):
    """docs/PYTHON.md's first example (the embedded engine) runs as written."""
    guide = (REPO / "docs" / "PYTHON.md").read_text()
    m = re.search(r"## The embedded engine.*?```python\n(.*?)```", guide, re.S)
    assert m, "docs/PYTHON.md has no example under 'The embedded engine'"
    script = tmp_path / "example.py"
    script.write_text(m.group(1))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "restored.db" / "collections" / "docs").is_dir()
