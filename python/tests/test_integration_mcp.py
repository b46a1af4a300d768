"""The MCP server (tessera.mcp), driven by the MCP SDK's own client: in
process over the embedded engine and over a server (every tool's answer
equals the direct engine call; write tools only with allow_writes), and as a
subprocess over stdio and over streamable HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("mcp", reason="the MCP SDK is not installed: pip install './python[mcp]' (Python >= 3.10)")

from mcp import Client, StdioServerParameters  # noqa: E402

import encoder_reference as R  # noqa: E402
import tessera  # noqa: E402
from conftest import REPO  # noqa: E402
from tessera.mcp import build_server  # noqa: E402

TEXTS = R.SAMPLE_TEXTS


def fill(backend, model_ref):
    col = backend.create_collection("docs", model=model_ref, text="english")
    ids = [f"t{i}" for i in range(len(TEXTS))]
    col.upsert(ids, texts=TEXTS, payloads=[{"n": i, "lang": "en" if i % 2 else "de"} for i in range(len(TEXTS))])
    backend.create_collection("vectors", 8)
    return col


def hits(hs):
    return [{k: v for k, v in (("id", h.id), ("score", h.score), ("text", h.text), ("payload", h.payload)) if v is not None} for h in hs]


async def check_tools(backend, col):
    async with Client(build_server(backend)) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert names == {"list_collections", "describe_collection", "search", "get_documents"}

        r = await c.call_tool("list_collections", {})
        assert not r.is_error
        listed = {x["name"]: x for x in r.structured_content["collections"]}
        assert set(listed) == set(backend.list_collections())
        assert listed["docs"]["documents"] == len(col) and listed["docs"]["dim"] == col.dim
        assert listed["docs"]["model"] == col.model["identity"]["name"]
        assert listed["vectors"]["model"] is None

        r = await c.call_tool("describe_collection", {"collection_name": "docs"})
        assert r.structured_content["documents"] == len(col)
        assert r.structured_content["ranking"] == col.ranking()
        assert r.structured_content["model"] == col.model

        for query, k, f, engine_f in [
            ("quick bank", 3, None, None),
            ("cat on the mat", 10, {"lang": "en"}, {"field": "lang", "eq": "en"}),
            ("mars", 4, {"field": "n", "range": {"gte": 2}}, {"field": "n", "range": {"gte": 2}}),
        ]:
            args = {"collection_name": "docs", "query": query, "k": k}
            if f is not None:
                args["filter"] = f
            r = await c.call_tool("search", args)
            assert not r.is_error, r.content
            assert r.structured_content["hits"] == hits(col.search(query, k=k, filter=engine_f))

        r = await c.call_tool("get_documents", {"collection_name": "docs", "ids": ["t1", "nope", "t3"]})
        got = r.structured_content
        assert got["missing"] == ["nope"]
        for d, ref in zip(got["documents"], [x for x in col.get(["t1", "t3"])]):
            assert d == {"id": ref.id, "n_tokens": ref.n_tokens, "text": ref.text, "payload": ref.payload}

        # Errors reach the agent as tool errors with the engine's words.
        r = await c.call_tool("search", {"collection_name": "missing", "query": "x"})
        assert r.is_error and "missing" in r.content[0].text
        r = await c.call_tool("search", {"collection_name": "vectors", "query": "x"})
        assert r.is_error and "no bound model" in r.content[0].text
        r = await c.call_tool("search", {"collection_name": "docs", "query": "x", "filter": {"lang": {"$regex": "e"}}})
        assert r.is_error and "unknown operator" in r.content[0].text
        r = await c.call_tool("search", {"collection_name": "docs", "query": "x", "k": 0})
        assert r.is_error and "InvalidInputError" in r.content[0].text
        # Read-only: no write tool, and calling one is refused.
        r = await c.call_tool("delete", {"collection_name": "docs", "ids": ["t1"]})
        assert r.is_error
        assert col.get(["t1"])[0] is not None

    async with Client(build_server(backend, allow_writes=True)) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"upsert", "delete"} <= names
        r = await c.call_tool(
            "upsert",
            {"collection_name": "docs", "documents": [{"id": "new", "text": "money in the river bank", "payload": {"n": 9}}]},
        )
        assert r.structured_content == {"upserted": 1}
        d = col.get(["new"], tokens=True)[0]
        assert d.text == "money in the river bank" and d.payload == {"n": 9}
        ref = col.encode(["money in the river bank"])[0]
        assert np.allclose(d.tokens.astype(np.float32), ref, atol=2e-3)
        r = await c.call_tool("upsert", {"collection_name": "docs", "documents": [{"id": "x"}]})
        assert r.is_error and "string id and text" in r.content[0].text
        r = await c.call_tool("upsert", {"collection_name": "docs", "documents": [{"id": "x", "text": ""}]})
        assert r.is_error and "no text to encode" in r.content[0].text
        assert col.get(["x"]) == [None]
        r = await c.call_tool("delete", {"collection_name": "docs", "ids": ["new", "never"]})
        assert r.structured_content == {"deleted": 1}
        assert col.get(["new"]) == [None]


async def test_tools_over_the_embedded_engine(tmp_path):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=11)
    with tessera.Database(tmp_path / "db") as db:
        col = fill(db, str(model))
        await check_tools(db, col)


async def test_tools_over_a_server(tmp_path, make_server):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=11)
    s = make_server(args=("--model", f"tiny={model}"))
    with tessera.Client(s.url) as client:
        col = fill(client, "tiny")
        await check_tools(client, col)
        # Listing is one request however many collections there are.
        calls = []
        real = client._call
        client._call = lambda *a, **k: calls.append(a[:2]) or real(*a, **k)
        async with Client(build_server(client)) as c:
            r = await c.call_tool("list_collections", {})
        client._call = real
        assert not r.is_error and len(r.structured_content["collections"]) == 2
        assert calls == [("GET", "/v1/collections")], calls


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


async def test_stdio_subprocess_read_only_beside_a_writer(tmp_path):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=11)
    db = tessera.Database(tmp_path / "db")
    col = fill(db, str(model))
    db.close()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "tessera.mcp", "--db", str(tmp_path / "db"), "--refresh", "0"],
        env=_env(),
        cwd=str(REPO),
    )
    # The writer keeps the database open: the MCP server opens it read-only beside it.
    with tessera.Database(tmp_path / "db") as db:
        col = db.collection("docs")
        async with Client(params) as c:
            assert {t.name for t in (await c.list_tools()).tools} == {
                "list_collections", "describe_collection", "search", "get_documents",
            }
            r = await c.call_tool("search", {"collection_name": "docs", "query": "river bank", "k": 3})
            assert r.structured_content["hits"] == hits(col.search("river bank", k=3))
            # A write made after the MCP server opened the folder shows (it opens it again).
            col.upsert(["later"], texts=["a late document about the bank"])
            r = await c.call_tool("get_documents", {"collection_name": "docs", "ids": ["later"]})
            assert r.structured_content["missing"] == [] and r.structured_content["documents"][0]["id"] == "later"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_streamable_http_subprocess_with_writes(tmp_path):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=11)
    with tessera.Database(tmp_path / "db") as db:
        fill(db, str(model))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera.mcp", "--db", str(tmp_path / "db"), "--allow-writes",
         "--transport", "streamable-http", "--port", str(port)],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the MCP server did not listen within 60 s"
                time.sleep(0.1)
        async with Client(f"http://127.0.0.1:{port}/mcp") as c:
            assert {"upsert", "delete"} <= {t.name for t in (await c.list_tools()).tools}
            r = await c.call_tool("delete", {"collection_name": "docs", "ids": ["t0"]})
            assert r.structured_content == {"deleted": 1}
            r = await c.call_tool("get_documents", {"collection_name": "docs", "ids": ["t0", "t1"]})
            assert r.structured_content["missing"] == ["t0"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_command_line_refusals(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "tessera.mcp", *args], env=_env(), capture_output=True, text=True)

    r = run()
    assert r.returncode == 2 and "--db" in r.stderr
    r = run("--db", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no database folder" in r.stderr
    r = run("--db", str(tmp_path), "--api-key-env", "X")
    assert r.returncode == 2 and "goes with --url" in r.stderr
    r = run("--url", "http://127.0.0.1:1", "--api-key-env", "TESSERA_TEST_UNSET_KEY")
    assert r.returncode == 2 and "is not set" in r.stderr
    r = run("--db", str(tmp_path), "--port", "9")
    assert r.returncode == 2 and "streamable-http" in r.stderr
    r = run("--db", str(tmp_path), "--transport", "streamable-http", "--host", "0.0.0.0")
    assert r.returncode == 2 and "no authentication" in r.stderr and "--allow-remote" in r.stderr
    r = run("--db", str(tmp_path), "--refresh", "-1")
    assert r.returncode == 2 and "--refresh" in r.stderr
