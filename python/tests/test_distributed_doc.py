"""docs/DISTRIBUTED.md's example runs on one machine as written (in a
temporary folder, its own local Ray instance), twice in the same folder, and
prints what it says."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("ray", reason="Ray is not installed: pip install './python[ray]'")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install './python[ray]'")


def test_the_distributed_example_runs_as_written(tmp_path):
    doc = (REPO / "docs" / "DISTRIBUTED.md").read_text()
    m = re.search(r"## Example.*?```python\n(.*?)```", doc, re.S)
    assert m, "docs/DISTRIBUTED.md has no Python example under 'Example'"
    script = tmp_path / "example.py"
    script.write_text(m.group(1))
    # Twice in the same folder: the second run must work as the first did.
    for _ in range(2):
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-4000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    # What the comments in the example say it prints.
    printed = [line.split("#")[1].split(":")[0].strip() for line in m.group(1).splitlines() if "print(" in line]
    assert printed == ["d7", "shard 0", "1000", "d3"], printed
    assert lines[0] == "d7" and lines[2] == "1000" and lines[3] == "d3", out.stdout
    seqs = json.loads(lines[1])  # a list of two ints
    assert len(seqs) == 2 and seqs[0] == seqs[1] > 0, lines[1]
