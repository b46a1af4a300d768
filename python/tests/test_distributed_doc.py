"""docs/DISTRIBUTED.md's example runs on one machine as written (in a
temporary folder, its own local Ray instance), twice in the same folder, and
prints what it says."""

from __future__ import annotations

import json

import pytest

from conftest import doc_example, run_example

pytest.importorskip("ray", reason="Ray is not installed: pip install './python[ray]'")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install './python[ray]'")


def test_the_distributed_example_runs_as_written(tmp_path):
    code = doc_example("docs/DISTRIBUTED.md", "## Example")
    # Twice in the same folder: the second run must work as the first did.
    for _ in range(2):
        out = run_example(code, tmp_path, timeout=600)
    lines = [line for line in out.splitlines() if line.strip()]
    # What the comments in the example say it prints.
    printed = [line.split("#")[1].split(":")[0].strip() for line in code.splitlines() if "print(" in line]
    assert printed == ["d7", "shard 0", "1000", "d3"], printed
    assert lines[0] == "d7" and lines[2] == "1000" and lines[3] == "d3", out
    seqs = json.loads(lines[1])  # a list of two ints
    assert len(seqs) == 2 and seqs[0] == seqs[1] > 0, lines[1]
