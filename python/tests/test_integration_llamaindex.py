"""The LlamaIndex integration (tessera.integrations.llamaindex).
llama-index-core ships no vector-store test helpers, so the reference is
LlamaIndex's own SimpleVectorStore: the same nodes with single-vector
embeddings (one unit-length token each: MaxSim is the cosine) must give the
same nodes for the same queries, metadata filters and node ids, embedded and
over a server; and, with a collection bound to a tiny model (the numpy
reference encoder), a VectorStoreIndex built and queried the documented way
ranks as a naive f64 MaxSim, and deletes what LlamaIndex says it deletes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("llama_index.core", reason="LlamaIndex is not installed: pip install './python[llamaindex]'")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores import SimpleVectorStore  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

import encoder_reference as R  # noqa: E402
from conftest import maxsim  # noqa: E402
from tessera.integrations.llamaindex import ModelEncodes, TesseraVectorStore  # noqa: E402

_names = (f"li{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def F(key, op, value):
    return MetadataFilter(key=key, operator=op, value=value)


FILTERS = [
    None,
    MetadataFilters(filters=[F("lang", FilterOperator.EQ, "en")]),
    MetadataFilters(filters=[F("lang", FilterOperator.NE, "en")]),
    MetadataFilters(filters=[F("year", FilterOperator.GT, 2005)]),
    MetadataFilters(filters=[F("year", FilterOperator.LTE, 2003)]),
    MetadataFilters(filters=[F("lang", FilterOperator.IN, ["de", "fr"])]),
    MetadataFilters(filters=[F("lang", FilterOperator.NIN, ["de"])]),
    MetadataFilters(filters=[F("tag", FilterOperator.IS_EMPTY, None)]),
    MetadataFilters(filters=[F("title", FilterOperator.GTE, "m")]),
    MetadataFilters(filters=[F("year", FilterOperator.EQ, None)]),
    MetadataFilters(filters=[F("year", FilterOperator.NE, None)]),
    MetadataFilters(
        filters=[F("year", FilterOperator.GTE, 2000), F("lang", FilterOperator.EQ, "de")], condition=FilterCondition.OR
    ),
    MetadataFilters(
        filters=[F("year", FilterOperator.LT, 2004), F("tag", FilterOperator.EQ, "x")], condition=FilterCondition.NOT
    ),
]


def random_nodes(rng, n, dim=8):
    nodes = []
    for i in range(n):
        meta = {"lang": str(rng.choice(["en", "de", "fr"])), "title": str(rng.choice(R.DEFAULT_WORDS))}
        if i % 3:
            meta["year"] = int(2000 + i % 10)
        if i % 4 == 0:
            meta["tag"] = str(rng.choice(["x", "y", ""]))
        emb = rng.standard_normal(dim)
        nodes.append(TextNode(id_=f"n{i:03d}", text=f"node {i}", metadata=meta, embedding=emb.tolist()))
    return nodes


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def assert_same_top(got, ref, scores, k, tol=2e-3):
    """`got` (ids, best first) is the top k of `scores` as `ref` (the
    reference's ids) is, up to near-ties within the f16 storage's rounding."""
    assert len(got) == len(ref)
    s = [scores[i] for i in got]
    assert all(a >= b - tol for a, b in zip(s, s[1:])), "not best first"
    left = [v for i, v in scores.items() if i not in set(got)]
    if left and got:
        assert min(s) >= max(left) - tol, "a better node was left out"
    for i, j in zip(got, ref):
        assert i == j or abs(scores[i] - scores[j]) <= tol


def test_same_nodes_as_simple_vector_store(tmp_path, model_server, rng):
    nodes = random_nodes(rng, 60)
    simple = SimpleVectorStore()
    simple.add(nodes)
    for where, client in [("embedded", str(tmp_path / "db")), ("server", model_server.url)]:
        store = TesseraVectorStore(client, next(_names), search_options={"exact": True})
        assert store.is_embedding_query, "no model: LlamaIndex embeds the query"
        assert store.add(nodes) == [n.node_id for n in nodes]
        for f in FILTERS:
            for _ in range(3):
                q = rng.standard_normal(8).tolist()
                vq = VectorStoreQuery(query_embedding=q, similarity_top_k=7, filters=f)
                got, ref = store.query(vq), simple.query(vq)
                # Restricted to the nodes the filter lets through, as SimpleVectorStore restricts them.
                allowed = set(simple.query(VectorStoreQuery(query_embedding=q, similarity_top_k=1000, filters=f)).ids)
                scores = {n.node_id: cosine(q, n.embedding) for n in nodes if n.node_id in allowed}
                assert_same_top(got.ids, ref.ids, scores, 7)
                for i, s, node in zip(got.ids, got.similarities, got.nodes):
                    assert s == pytest.approx(scores[i], abs=2e-3)
                    src = next(n for n in nodes if n.node_id == i)
                    assert node.node_id == i and node.get_content() == src.get_content()
                    assert node.metadata == src.metadata
        # node_ids restrict the query as SimpleVectorStore's do (scored
        # exactly: candidates from those ids, so no tensor-only option).
        store.search_options = {}
        q = rng.standard_normal(8).tolist()
        some = [n.node_id for n in nodes[::4]]
        vq = VectorStoreQuery(query_embedding=q, similarity_top_k=5, node_ids=some)
        scores = {i: cosine(q, next(n for n in nodes if n.node_id == i).embedding) for i in some}
        assert_same_top(store.query(vq).ids, simple.query(vq).ids, scores, 5)
        # get_nodes, delete_nodes and clear.
        got = store.get_nodes(node_ids=["n001", "zz", "n000"])
        assert [n.node_id for n in got] == ["n001", "n000"]
        en = MetadataFilters(filters=[F("lang", FilterOperator.EQ, "en")])
        assert sorted(n.node_id for n in store.get_nodes(filters=en)) == sorted(
            n.node_id for n in nodes if n.metadata["lang"] == "en"
        )
        # An empty list of ids deletes nothing (as SimpleVectorStore's).
        before = len(store.collection)
        store.delete_nodes(node_ids=[])
        store.delete_nodes(node_ids=[], filters=en)
        assert len(store.collection) == before
        store.delete_nodes(filters=en)
        assert all(n.metadata["lang"] != "en" for n in store.get_nodes(filters=MetadataFilters(filters=[])))
        left = len(store.collection)
        store.delete_nodes(node_ids=["n001", "n002", "n003"], filters=MetadataFilters(filters=[F("lang", FilterOperator.EQ, "de")]))
        assert len(store.collection) == left - sum(
            1 for n in nodes[1:4] if n.metadata["lang"] == "de"
        )
        store.clear()
        assert len(store.collection) == 0
        assert store.collection.dim == 8


def test_unsupported_operators_and_modes_are_refused(tmp_path, rng):
    store = TesseraVectorStore(str(tmp_path / "db"), "c")
    store.add(random_nodes(rng, 5))
    for op, v in [(FilterOperator.TEXT_MATCH, "a"), (FilterOperator.CONTAINS, "a"), (FilterOperator.ANY, ["a"])]:
        with pytest.raises(ValueError, match="not supported"):
            store.query(VectorStoreQuery(query_embedding=[1.0] * 8, filters=MetadataFilters(filters=[F("lang", op, v)])))
    with pytest.raises(ValueError, match="mode"):
        store.query(VectorStoreQuery(query_embedding=[1.0] * 8, mode="mmr"))
    with pytest.raises(ValueError, match="neither"):
        store.query(VectorStoreQuery(query_str="x"))
    with pytest.raises(ValueError, match="has none"):
        store.add([TextNode(text="no embedding")])
    with pytest.raises(ValueError, match="needs node_ids or filters"):
        store.delete_nodes()
    # Hybrid weights are the collection's ranking's: LlamaIndex's alpha is refused, not ignored.
    with pytest.raises(ValueError, match="alpha is not supported"):
        store.query(VectorStoreQuery(query_embedding=[1.0] * 8, alpha=0.5))
    with pytest.raises(ValueError, match="node_ids and an ids"):
        store.query(VectorStoreQuery(query_embedding=[1.0] * 8, node_ids=["n001"]), ids=["n002"])


DOCS = [
    ("the quick brown fox jumps over the lazy dog", {"lang": "en", "year": 2001}),
    ("a cat sat on the mat", {"lang": "en", "year": 2010}),
    ("river bank and money bank", {"lang": "de", "year": 2005}),
    ("late interaction search engine for token vectors", {"lang": "fr", "year": 2020}),
    ("the red planet is known as mars", {"lang": "en", "year": 1999}),
    ("python and rust", {"lang": "de", "year": 2015}),
]


@pytest.mark.parametrize("where", ["embedded", "server"])
def test_a_vector_store_index_over_a_bound_collection(tmp_path, model, model_server, where):
    client = str(tmp_path / "db") if where == "embedded" else model_server.url
    store = TesseraVectorStore(
        client, next(_names), model=str(model) if where == "embedded" else "tiny",
        create={"text": "english"},
    )
    assert not store.is_embedding_query, "a bound model encodes the query string"
    docs = [Document(text=t, metadata=m, id_=f"doc{i}") for i, (t, m) in enumerate(DOCS)]
    index = VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=ModelEncodes()
    )
    texts = [t for t, _ in DOCS]
    dv = R.reference_encode(model, texts, is_query=False)
    for query in ["quick bank", "the cat on a mat", "mars planet"]:
        qv = R.reference_encode(model, [query], is_query=True)[0]
        scores = {t: maxsim(qv, v) for t, v in zip(texts, dv)}
        got = index.as_retriever(similarity_top_k=3).retrieve(query)
        want = sorted(scores, key=lambda t: -scores[t])[:3]
        assert [n.get_content() for n in got] == want
        for n in got:
            assert n.score == pytest.approx(scores[n.get_content()], abs=5e-3)
            assert n.node.ref_doc_id == f"doc{texts.index(n.get_content())}"
        # Metadata filters through the retriever.
        f = MetadataFilters(filters=[F("lang", FilterOperator.EQ, "en"), F("year", FilterOperator.GTE, 2000)])
        got = index.as_retriever(similarity_top_k=6, filters=f).retrieve(query)
        allowed = [t for t, m in DOCS if m["lang"] == "en" and m["year"] >= 2000]
        assert [n.get_content() for n in got] == sorted(allowed, key=lambda t: -scores[t])
        # Hybrid: BM25 of the query string beside MaxSim, as the collection ranks it.
        got = index.as_retriever(similarity_top_k=3, vector_store_query_mode="hybrid").retrieve(query)
        col = store.collection
        q = col.encode([query], is_query=True)[0]
        assert [n.node.node_id for n in got] == [h.id for h in col.search(q, k=3, text=query)]
    # An index over the existing collection, as a later process opens it.
    again = VectorStoreIndex.from_vector_store(store, embed_model=ModelEncodes())
    got = again.as_retriever(similarity_top_k=2).retrieve("money bank")
    assert [n.node.node_id for n in got] == [n.node.node_id for n in index.as_retriever(similarity_top_k=2).retrieve("money bank")]
    # delete_ref_doc removes the document's nodes.
    index.delete_ref_doc("doc2")
    left = {n.get_content() for n in store.get_nodes(filters=MetadataFilters(filters=[]))}
    assert left == set(texts) - {texts[2]}


async def test_async_twins(tmp_path, model):
    store = TesseraVectorStore(str(tmp_path / "db"), "c", model=str(model), search_options={"exact": True})
    nodes = [TextNode(text=t, metadata=m, id_=f"n{i}") for i, (t, m) in enumerate(DOCS)]
    assert await store.async_add(nodes) == [n.node_id for n in nodes]
    vq = VectorStoreQuery(query_str="money bank", similarity_top_k=2)
    a, b = await store.aquery(vq), store.query(vq)
    assert a.ids == b.ids and a.similarities == b.similarities
    assert [n.node_id for n in await store.aget_nodes(node_ids=["n1"])] == ["n1"]
    await store.adelete_nodes(node_ids=["n1"])
    await store.aclear()
    assert len(store.collection) == 0
