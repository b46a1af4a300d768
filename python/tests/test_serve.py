"""tessera.serve on a local Ray instance: the HTTP API of `tessera serve`
over sharded collections, driven by the unchanged `tessera.Client`, answers
what one embedded collection holding the same documents answers, with the
single-node server's error codes."""

from __future__ import annotations

import json
import socket
import urllib.request

import numpy as np
import pytest

import tessera
from conftest import corpus, load

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install './python[ray]'")
serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install './python[ray]'")
from tessera.serve import run  # noqa: E402

DIM = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(ray_cluster, tmp_path):
    url = run(str(tmp_path / "root"), shards=2, replicas=2, port=free_port())
    yield url, tmp_path / "root"
    serve.shutdown()


def pairs(hits) -> list:
    return [(h.id, h.score, h.text, h.payload) for h in hits]


def test_the_client_of_the_single_node_server_works_unchanged(served, tmp_path, rng):
    url, root = served
    docs = corpus(rng, 120, DIM)
    client = tessera.Client(url)
    assert client.health()["status"] == "ok"
    remote = client.create_collection("docs", DIM, text="plain")
    with tessera.Database(tmp_path / "one") as db:
        one = db.create_collection("docs", DIM, text="plain")
        for col in (remote, one):
            load(col, docs)
            assert col.delete(["doc-0003", "nope"]) == 1
        assert len(remote) == len(one) == 119
        info = remote.stats()
        assert (info["shards"], info["replicas"], info["dim"], info["text"]) == (2, 2, DIM, "plain")
        queries = [rng.standard_normal((4, DIM)).astype(np.float32) for _ in range(3)]
        for q in queries:
            for opts in (dict(exact=True), dict(exact=True, filter={"field": "even", "eq": True}), dict(candidates=1000)):
                want = one.search(q, k=10, exact=True, filter=opts.get("filter"))
                assert pairs(remote.search(q, k=10, **opts)) == pairs(want), opts
        assert [pairs(h) for h in remote.search_batch(queries, k=5, exact=True)] == [
            pairs(one.search(q, k=5, exact=True)) for q in queries
        ]
        ids = ["doc-0001", "doc-0003", "doc-0002"]
        for g, w in zip(remote.get(ids, tokens=True), one.get(ids, tokens=True)):
            assert (g is None) == (w is None)
            if w is not None:
                assert (g.id, g.n_tokens, g.text, g.payload) == (w.id, w.n_tokens, w.text, w.payload)
                np.testing.assert_array_equal(g.tokens, w.tokens)
        r, w = remote.rerank(queries[0], ["doc-0009", "doc-0001", "nope"]), one.rerank(queries[0], ["doc-0009", "doc-0001", "nope"])
        assert pairs(r.hits) == pairs(w.hits) and list(r.missing) == list(w.missing)
        # Hybrid (BM25 per shard) merges by MaxSim: every document a candidate is exact.
        got = remote.search(queries[0], k=5, text="topic 2", candidates=1000)
        assert pairs(got) == pairs(one.search(queries[0], k=5, text="topic 2", candidates=1000))
        # BM25 alone merges by BM25 score, with the fused score and sources.
        got = remote.search(None, k=5, text="topic 2 passage")
        assert [h.sources[0]["rank"] for h in got] == [1, 2, 3, 4, 5] and got[0].fused > got[-1].fused
    # The single-node server's errors, as the client raises them.
    with pytest.raises(tessera.InvalidInputError, match="dim"):
        remote.upsert(["x"], [np.zeros((2, DIM + 1), np.float32)])
    with pytest.raises(tessera.AlreadyExistsError):
        client.create_collection("docs", DIM)
    with pytest.raises(tessera.NotFoundError):
        client.collection("nope")
    assert client.open_or_create_collection("docs", DIM, text="plain").name == "docs"
    with pytest.raises(tessera.AlreadyExistsError):
        client.open_or_create_collection("docs", DIM, text="english")
    for path, body, status, code in (
        ("/v1/collections/docs/search", b'{"tokens": [[1.0]], "bogus": 1}', 400, "bad_request"),
        ("/v1/collections/docs/search", b"not json", 400, "bad_request"),
        ("/v1/collections/bad%20name/search", b"{}", 400, "bad_request"),
        ("/v1/nothing", b"{}", 404, "not_found"),
    ):
        req = urllib.request.Request(url + path, data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert (e.value.code, json.loads(e.value.read())["error"]["code"]) == (status, code), path
    assert client.list_collections() == ["docs"]
    client.drop_collection("docs")
    assert client.list_collections() == [] and not (root / "docs").exists()
    client.close()


def test_collections_come_back_when_the_router_restarts(served, tmp_path, rng):
    url, root = served
    docs = corpus(rng, 30, DIM)
    client = tessera.Client(url)
    load(client.create_collection("a", DIM), docs)
    q = rng.standard_normal((3, DIM)).astype(np.float32)
    before = pairs(client.collection("a").search(q, k=5, exact=True))
    serve.shutdown()
    url = run(str(root), shards=2, replicas=2, port=free_port())
    again = tessera.Client(url)
    assert again.list_collections() == ["a"] and len(again.collection("a")) == 30
    assert pairs(again.collection("a").search(q, k=5, exact=True)) == before
