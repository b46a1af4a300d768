"""The Haystack integration (tessera.integrations.haystack): the DocumentStore
test mixins Haystack ships (haystack.testing.document_store, sync and async)
over the embedded engine and over a server, the store bound to a tiny model
(the numpy reference encoder); filters against Haystack's own filter
evaluation (haystack.utils.filters.document_matches_filter) on random
documents; the retrievers against a naive f64 MaxSim; serialisation in a
pipeline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("haystack", reason="Haystack is not installed: pip install './python[haystack]'")

from haystack import Document, Pipeline  # noqa: E402
from haystack.document_stores.types import DuplicatePolicy  # noqa: E402
from haystack.errors import FilterError  # noqa: E402
from haystack.testing.document_store import (  # noqa: E402
    CountDocumentsByFilterTest,
    DocumentStoreBaseExtendedTests,
)
from haystack.testing.document_store_async import (  # noqa: E402
    CountDocumentsAsyncTest,
    CountDocumentsByFilterAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    UpdateByFilterAsyncTest,
    WriteDocumentsAsyncTest,
)
from haystack.utils.filters import document_matches_filter  # noqa: E402

import encoder_reference as R  # noqa: E402
import tessera  # noqa: E402
from conftest import maxsim  # noqa: E402
from tessera.integrations.haystack import (  # noqa: E402
    TesseraDocumentStore,
    TesseraEmbeddingRetriever,
    TesseraRetriever,
)

_names = (f"hs{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


class Suite(
    DocumentStoreBaseExtendedTests,
    CountDocumentsByFilterTest,
    WriteDocumentsAsyncTest,
    DeleteDocumentsAsyncTest,
    CountDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    UpdateByFilterAsyncTest,
    CountDocumentsByFilterAsyncTest,
):
    """Haystack's mixins; the store's order of documents is by id, so lists
    compare sorted by id (as the mixins invite a store to)."""

    @staticmethod
    def assert_documents_are_equal(received, expected):
        assert sorted(received, key=lambda d: d.id) == sorted(expected, key=lambda d: d.id)

    # The mixins leave the default policy to the store: NONE is FAIL here.
    def test_write_documents(self, document_store):
        doc = Document(content="test doc")
        assert document_store.write_documents([doc]) == 1
        with pytest.raises(Exception, match="already exist"):
            document_store.write_documents([doc])
        self.assert_documents_are_equal(document_store.filter_documents(), [doc])

    async def test_write_documents_async(self, document_store):
        doc = Document(content="test doc")
        assert await document_store.write_documents_async([doc]) == 1
        with pytest.raises(Exception, match="already exist"):
            await document_store.write_documents_async([doc])
        self.assert_documents_are_equal(await document_store.filter_documents_async(), [doc])


class TestEmbedded(Suite):
    @pytest.fixture
    def document_store(self, tmp_path, tiny_model):
        store = TesseraDocumentStore(str(tmp_path / "db"), "docs", model=str(tiny_model))
        yield store
        store._target.backend.close()


class TestServer(Suite):
    @pytest.fixture
    def document_store(self, model_server):
        name = next(_names)
        store = TesseraDocumentStore(model_server.url, name, model="tiny")
        yield store
        client = store._target.backend
        if name in client.list_collections():
            client.drop_collection(name)
        client.close()


def random_docs(rng, n):
    docs = []
    for i in range(n):
        meta = {"lang": str(rng.choice(["en", "de", "fr"])), "n": int(rng.integers(-5, 5))}
        if i % 3:
            meta["date"] = f"{1960 + int(rng.integers(0, 60))}-0{1 + i % 9}-1{i % 10}T10:00:00"
        if i % 4 == 0:
            meta["score"] = float(rng.random())
        if i % 5 == 0:
            meta["n"] = None
        docs.append(Document(content=" ".join(rng.choice(R.DEFAULT_WORDS, size=5)), meta=meta))
    return docs


FILTERS = [
    {"field": "meta.lang", "operator": "==", "value": "en"},
    {"field": "meta.n", "operator": "!=", "value": 1},
    {"field": "meta.n", "operator": "==", "value": None},
    {"field": "meta.n", "operator": "!=", "value": None},
    {"field": "meta.n", "operator": ">", "value": 0},
    {"field": "meta.n", "operator": "<=", "value": -2},
    {"field": "meta.score", "operator": ">=", "value": 0.5},
    {"field": "meta.date", "operator": ">", "value": "1990-01-01T00:00:00"},
    {"field": "meta.date", "operator": "<", "value": "1975-06-15T00:00:00"},
    {"field": "meta.lang", "operator": "in", "value": ["de", "fr"]},
    {"field": "meta.lang", "operator": "not in", "value": ["de"]},
    {"field": "meta.n", "operator": "<", "value": None},
    {"field": "meta.n", "operator": "in", "value": [None, 1, 2]},
    {"field": "meta.n", "operator": "not in", "value": [None, -1]},
    {
        "operator": "OR",
        "conditions": [
            {"field": "meta.lang", "operator": "==", "value": "fr"},
            {"operator": "AND", "conditions": [
                {"field": "meta.n", "operator": ">=", "value": 2},
                {"field": "meta.date", "operator": ">=", "value": "1980-01-01T00:00:00"},
            ]},
        ],
    },
    {"operator": "NOT", "conditions": [
        {"field": "meta.lang", "operator": "==", "value": "en"},
        {"field": "meta.n", "operator": ">", "value": -1},
    ]},
]


def test_filters_select_what_haystack_selects(tmp_path, model, rng):
    docs = random_docs(rng, 80)
    store = TesseraDocumentStore(str(tmp_path / "db"), "docs", model=str(model))
    store.write_documents(docs)
    for f in FILTERS:
        want = sorted(d.id for d in docs if document_matches_filter(f, d))
        got = [d.id for d in store.filter_documents(f)]
        assert got == want, f
        assert store.count_documents_by_filter(f) == len(want)
    for bad in [
        {"field": "meta.n", "operator": ">", "value": "abc"},
        {"field": "meta.n", "operator": "in", "value": "en"},
        {"field": "content", "operator": "==", "value": "x"},
        {"field": "meta.n", "operator": "~", "value": 1},
        {"operator": "XOR", "conditions": []},
    ]:
        with pytest.raises(FilterError):
            store.filter_documents(bad)


def test_retrievers_rank_as_a_naive_maxsim(tmp_path, model, model_server, rng):
    docs = random_docs(rng, 30)
    texts = [d.content for d in docs]
    dv = R.reference_encode(model, texts, is_query=False)
    for store in [
        TesseraDocumentStore(str(tmp_path / "db"), "docs", model=str(model)),
        TesseraDocumentStore(model_server.url, next(_names), model="tiny"),
    ]:
        store.write_documents(docs)
        retriever = TesseraRetriever(store, top_k=5, search_options={"exact": True})
        for query in ["quick brown bank", "the cat on a mat"]:
            qv = R.reference_encode(model, [query], is_query=True)[0]
            scores = {d.id: maxsim(qv, v) for d, v in zip(docs, dv)}
            got = retriever.run(query=query)["documents"]
            want = sorted(scores, key=lambda i: (-round(scores[i], 3), i))[:5]
            assert [d.id for d in got] == want
            for d in got:
                assert d.score == pytest.approx(scores[d.id], abs=5e-3)
                assert d.content == next(x.content for x in docs if x.id == d.id)
            # Filters narrow the ranking; MERGE joins the retriever's own filters.
            f = {"field": "meta.lang", "operator": "==", "value": "en"}
            got = retriever.run(query=query, filters=f, top_k=30)["documents"]
            assert [d.id for d in got] == [i for i in sorted(scores, key=lambda i: (-round(scores[i], 3), i))
                                           if next(x for x in docs if x.id == i).meta["lang"] == "en"]
        # The embedding retriever takes the query's token matrix.
        qv = R.reference_encode(model, ["money bank"], is_query=True)[0]
        by_text = TesseraRetriever(store, top_k=4, search_options={"exact": True}).run(query="money bank")
        by_tokens = TesseraEmbeddingRetriever(store, top_k=4, search_options={"exact": True}).run(
            query_embedding=qv.tolist()
        )
        assert [d.id for d in by_tokens["documents"]] == [d.id for d in by_text["documents"]]


def test_pipeline_serialisation_round_trips(tmp_path, model):
    store = TesseraDocumentStore(str(tmp_path / "db"), "docs", model=str(model))
    store.write_documents([Document(content="a cat sat on the mat"), Document(content="river bank and money bank")])
    p = Pipeline()
    p.add_component("retriever", TesseraRetriever(store, top_k=1, filters={"field": "meta.x", "operator": "==", "value": None}))
    # The loaded pipeline's store shares the database this process opened.
    q = Pipeline.loads(p.dumps(), allowed_modules=["tessera.integrations.haystack"])
    out = q.run({"retriever": {"query": "money"}})
    assert [d.content for d in out["retriever"]["documents"]] == ["river bank and money bank"]


def test_token_matrices_and_kept_fields(tmp_path, rng):
    """A store without a model takes token-matrix embeddings; dense vectors,
    sparse embeddings and blobs come back as written."""
    from haystack.dataclasses import ByteStream, SparseEmbedding

    store = TesseraDocumentStore(str(tmp_path / "db"), "tok")
    with pytest.raises(tessera.InvalidInputError, match="no bound model"):
        store.write_documents([Document(content="x")])
    mats = [rng.standard_normal((int(rng.integers(2, 6)), 8)).astype(np.float32) for _ in range(10)]
    docs = [Document(content=f"d{i}", embedding=m.tolist(), meta={"i": i}) for i, m in enumerate(mats)]
    assert store.write_documents(docs) == 10
    q = rng.standard_normal((3, 8)).astype(np.float32)
    got = TesseraEmbeddingRetriever(store, top_k=3, search_options={"exact": True}).run(query_embedding=q.tolist())
    scores = {d.id: maxsim(q, m) for d, m in zip(docs, mats)}
    assert [d.id for d in got["documents"]] == sorted(scores, key=lambda i: -scores[i])[:3]
    # One single vector per document: one unit-length token each (cosine).
    store = TesseraDocumentStore(str(tmp_path / "db2"), "vec")
    d = Document(content="v", embedding=[0.5, 0.25, 2.0], sparse_embedding=SparseEmbedding([1, 5], [0.5, 0.25]),
                 blob=ByteStream(b"\x00\x01bytes", mime_type="application/octet-stream"), meta={"k": [1, "x"]})
    store.write_documents([d])
    assert store.filter_documents() == [d]
    with pytest.raises(ValueError, match="Tessera's"):
        store.write_documents([Document(content="y", embedding=[1.0, 0, 0], meta={"_haystack": 1})])
    assert store.write_documents([d], policy=DuplicatePolicy.SKIP) == 0
    assert store.write_documents([d, d], policy=DuplicatePolicy.OVERWRITE) == 1
