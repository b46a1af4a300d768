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
