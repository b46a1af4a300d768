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


def test_readme_text_example_runs(tmp_path):
    """The README's text example, with tiny random models in place of the model folders."""
    import encoder_reference as R

    code = doc_example("README.md", "Texts become tokens")
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=1)
    tuned = R.write_tiny_model(tmp_path / "tuned", "bert", seed=2)
    code = code.replace("path/to/colbert-model", str(model)).replace("path/to/fine-tuned-model", str(tuned))
    code = "import tessera\n" + code
    out = run_example(code, tmp_path)
    assert "Hit(" in out or "id=" in out, out
