"""The README's and the Python guide's examples run as written (in a temporary folder)."""

from __future__ import annotations

from conftest import doc_example, run_example


def test_readme_example_runs(tmp_path):
    out = run_example(doc_example("README.md", "## Use it from Python"), tmp_path)
    first = out.splitlines()[0].split()
    assert first[0] == "b", out  # the query is made from document b's tokens


def test_python_guides_first_example_runs(tmp_path):
    """docs/PYTHON.md's first example (the embedded engine) runs as written."""
    run_example(doc_example("docs/PYTHON.md", "## The embedded engine"), tmp_path)
    assert (tmp_path / "restored.db" / "collections" / "docs").is_dir()
