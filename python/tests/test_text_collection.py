"""Collections bound to a model (tiny random models from encoder_reference):
documents upserted as texts, queries as text, checked against the numpy
reference encoder and a naive f64 MaxSim; and the refusals a user meets (no
model, wrong dimension, a model changed since it was bound, empty texts),
each leaving nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import encoder_reference as R
import tessera

WORDS = R.DEFAULT_WORDS
DOCS = R.SAMPLE_TEXTS


def ranking(model, docs, query, k):
    dv = R.reference_encode(model, docs, is_query=False)
    qv = R.reference_encode(model, [query], is_query=True)[0]
    scores = [float((qv @ d.astype(np.float16).astype(np.float64).T).max(axis=1).sum()) for d in dv]
    return sorted(range(len(docs)), key=lambda i: -scores[i])[:k], scores


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_text_upsert_and_text_search(tmp_path, arch):
    model = R.write_tiny_model(tmp_path / "model", arch, seed=8)
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", model=model, index="none", text="none")
        assert col.dim == R.reference_dim(model)
        assert col.model["identity"]["architecture"] == arch
        ids = [f"d{i}" for i in range(len(DOCS))]
        assert col.upsert(ids, texts=DOCS, payloads=[{"n": i} for i in range(len(DOCS))]) == len(DOCS)
        # Stored tokens are the reference encoder's (as f16).
        got = col.get(ids, tokens=True)
        for d, ref in zip(got, R.reference_encode(model, DOCS, is_query=False)):
            np.testing.assert_allclose(d.tokens.astype(np.float64), ref, atol=2e-3)
        for query in ["quick fox", "money bank", "red planet mars"]:
            order, scores = ranking(model, DOCS, query, 3)
            hits = col.search(query, k=3)
            assert [h.id for h in hits] == [ids[i] for i in order]
            for h, i in zip(hits, order):
                assert abs(h.score - scores[i]) < 2e-3
                assert h.text == DOCS[i]
        # The collection's model gives the vectors themselves.
        for v, r in zip(col.encode(DOCS[:2], is_query=True), R.reference_encode(model, DOCS[:2], is_query=True)):
            np.testing.assert_allclose(v.astype(np.float64), r, atol=1e-4)
        # Tokens and texts mix in one batch; tokens given are kept as given.
        t = R.reference_encode(model, ["python"], is_query=False)[0].astype(np.float32)
        col.upsert(["x", "y"], tokens=None, texts=["rust", "python"])
        col.upsert(["z"], [t])
        assert len(col) == len(DOCS) + 3


def test_text_query_is_hybrid_with_bm25_by_default(tmp_path):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=9)
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", model=model)
        col.upsert([f"d{i}" for i in range(len(DOCS))], texts=DOCS)
        hybrid = col.search("money bank", k=3)
        exact = col.search("money bank", k=3, exact=True)
        # The final order is MaxSim in both (the collection's ranking); the hybrid
        # search only adds BM25 candidates, so on six documents they agree.
        assert [h.id for h in hybrid] == [h.id for h in exact]
        assert all(h.sources for h in hybrid), "a hybrid hit names its sources"


def test_refusals_write_nothing(tmp_path):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=10, dense=[(8, False)])
    other = R.write_tiny_model(tmp_path / "other", "bert", seed=10, dense=[(12, False)])
    with tessera.Database(tmp_path / "db") as db:
        plain = db.create_collection("plain", dim=8)
        with pytest.raises(tessera.InvalidInputError, match="has no model"):
            plain.upsert(["a"], texts=["quick fox"])
        with pytest.raises(tessera.InvalidInputError, match="has no model"):
            plain.search("quick fox")
        assert len(plain) == 0
        # A model of another dimension: refused at creation (nothing created) and at binding.
        with pytest.raises(tessera.InvalidInputError, match="differs from the model"):
            db.create_collection("c", dim=8, model=other)
        assert "c" not in db.list_collections()
        with pytest.raises(tessera.InvalidInputError, match="12-dimensional"):
            plain.bind_model(other)
        assert plain.model is None
        col = db.create_collection("c", model=model)
        # One empty text fails the whole batch.
        with pytest.raises(tessera.InvalidInputError, match="no tokens and no text"):
            col.upsert(["a", "b"], texts=["quick fox", "  "])
        with pytest.raises(tessera.InvalidInputError):
            col.upsert(["a"])
        assert len(col) == 0
        with pytest.raises(tessera.InvalidInputError, match="not both"):
            col.search(np.ones((2, 8), np.float32), query_text="fox")
        with pytest.raises(tessera.InvalidInputError, match="empty"):
            col.search("   ")
        with pytest.raises(tessera.InvalidInputError, match="give one"):
            col.search("fox", query_text="dog")
        with pytest.raises(tessera.InvalidInputError, match="offsets"):
            col.upsert(["a"], texts=["fox"], offsets=[0, 1])
        with pytest.raises(tessera.InvalidInputError):
            db.open_or_create_collection("c", model=tmp_path / "no-such-model")
        # A long text is cut at the document length, as the model says.
        col.upsert(["long"], texts=[" ".join(WORDS)])
        assert col.get(["long"], tokens=True)[0].tokens.shape[0] == 16
        # Binding a model of the right dimension works and is kept.
        plain.bind_model(model)
        assert plain.model["identity"]["checksum"] == col.model["identity"]["checksum"]
    with tessera.Database(tmp_path / "db") as db:
        assert db.collection("plain").model is not None


def test_a_model_changed_since_binding_is_refused_until_rebound(tmp_path):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=11)
    with tessera.Database(tmp_path / "db") as db:
        db.create_collection("c", model=model).upsert(["a"], texts=["quick fox"])
    # New weights in the same folder (a fine-tuned model written over the old).
    R.write_tiny_model(tmp_path / "model", "bert", seed=12)
    script = f"""
import json, sys, tessera
db = tessera.Database({str(tmp_path / "db")!r})
c = db.collection("c")
try:
    c.search("quick fox")
    print("searched")
except tessera.InvalidInputError as e:
    print("refused:", e)
c.bind_model({str(model)!r})
print("rebound:", [h.id for h in c.search("quick fox")])
"""
    # A new process: a process keeps the model it loaded.
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "refused:" in out and "not the one collection" in out and "bind the new one" in out, out
    assert "rebound: ['a']" in out, out


def test_texts_through_the_server(tmp_path, make_server):
    """A collection bound to a model takes texts over HTTP too: the Client
    sends documents without tokens and text queries (`query_text`), and the
    server's engine encodes them with the bound model — the same hits as the
    embedded engine gives."""
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=13)
    ids = [f"d{i}" for i in range(len(DOCS))]
    with tessera.Database(tmp_path / "server-db") as db:
        db.create_collection("c", model=model)
    server = make_server()
    remote = tessera.Client(server.url).collection("c")
    assert remote.upsert(ids, texts=DOCS) == len(DOCS)
    # Checked whole before anything is sent (a large call goes as several requests).
    with pytest.raises(tessera.InvalidInputError, match="no tokens and no text"):
        remote.upsert(["e", "f"], texts=["fine", " "])
    with pytest.raises(tessera.InvalidInputError, match="give one"):
        remote.search("fox", query_text="dog")
    got = {q: [h.id for h in remote.search(q, k=3)] for q in ["quick fox", "money bank"]}
    # POST /v1/collections/{name}/encode: the vectors themselves (packed f16).
    for is_query in (False, True):
        vectors = remote.encode(DOCS[:2], is_query=is_query)
        for v, r in zip(vectors, R.reference_encode(model, DOCS[:2], is_query=is_query)):
            assert v.dtype == np.float32
            np.testing.assert_allclose(v.astype(np.float64), r, atol=2e-3)
    with pytest.raises(tessera.InvalidInputError, match="empty"):
        remote.encode(["fine", ""])
    server.stop()
    with tessera.Database(tmp_path / "server-db") as db:
        col = db.collection("c")
        assert len(col) == len(DOCS)
        for q, hits in got.items():
            assert hits == [h.id for h in col.search(q, k=3)]
            order, _ = ranking(model, DOCS, q, 3)
            assert hits == [ids[i] for i in order]
