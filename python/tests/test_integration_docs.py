"""docs/INTEGRATIONS.md's examples, run as written in a folder holding a
model at ./colbert-model (a tiny random one from encoder_reference), each
checked for what it claims to print."""

from __future__ import annotations

import json
import re

import pytest

import encoder_reference as R
from conftest import REPO, doc_example, run_example

DOC = "docs/INTEGRATIONS.md"


@pytest.fixture
def folder(tmp_path):
    R.write_tiny_model(tmp_path / "colbert-model", "bert", seed=41)
    return tmp_path


def test_langchain_example(folder):
    pytest.importorskip("langchain_core", reason="LangChain is not installed: pip install './python[langchain]'")
    out = run_example(doc_example(DOC, "## LangChain"), folder).splitlines()
    hits = [line.split()[1] for line in out[:2]]
    assert len(hits) == 2 and set(hits) <= {"a", "c"}, out  # the filter keeps 2020 and later
    assert set(eval(out[2])) <= {"a", "b", "c"} and len(eval(out[2])) == 2


def test_llamaindex_example(folder):
    pytest.importorskip("llama_index.core", reason="LlamaIndex is not installed: pip install './python[llamaindex]'")
    out = run_example(doc_example(DOC, "## LlamaIndex"), folder).splitlines()
    got = sorted(line.split(" ", 1)[1] for line in out)
    assert got == sorted(["Tessera ranks passages by MaxSim over token embeddings.", "ColBERT keeps one vector per token."])


def test_haystack_example(folder):
    pytest.importorskip("haystack", reason="Haystack is not installed: pip install './python[haystack]'")
    out = run_example(doc_example(DOC, "## Haystack"), folder).splitlines()
    got = sorted(line.split(" ", 1)[1] for line in out)
    assert got == sorted(["Tessera ranks passages by MaxSim over token embeddings.", "ColBERT keeps one vector per token."])


def test_mcp_registration_is_json_the_server_accepts():
    text = (REPO / DOC).read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    entry = json.loads(block.replace("…a read key…", "k"))["mcpServers"]["tessera"]
    assert entry["args"][:2] == ["-m", "tessera.mcp"]
    pytest.importorskip("mcp", reason="the MCP SDK is not installed: pip install './python[mcp]'")
    from tessera import mcp

    with pytest.raises(SystemExit) as e:
        mcp.main(entry["args"][2:] + ["--help"])
    assert e.value.code == 0
