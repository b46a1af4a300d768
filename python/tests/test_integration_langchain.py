"""The LangChain integration (tessera.integrations.langchain): LangChain's own
standard VectorStore test suite (langchain-tests, unchanged) over the
embedded engine and over a server; token-matrix embeddings ranked as a naive
f64 MaxSim ranks them; Mongo-style filters against a Python evaluation of the
same filters; a collection's bound model (the numpy reference encoder) with
no embedding object; the hybrid search type; refusals."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

pytest.importorskip("langchain_core", reason="LangChain is not installed: pip install './python[langchain]'")
pytest.importorskip("langchain_tests", reason="langchain-tests is not installed: pip install './python[test]'")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests  # noqa: E402

import encoder_reference as R  # noqa: E402
import tessera  # noqa: E402
from conftest import maxsim  # noqa: E402
from tessera.integrations.langchain import TesseraRetriever, TesseraVectorStore  # noqa: E402

_names = (f"lc{i}" for i in itertools.count())


class TestEmbeddedStandard(VectorStoreIntegrationTests):
    """LangChain's standard suite over the embedded engine."""

    @pytest.fixture()
    def vectorstore(self, tmp_path):
        db = tessera.Database(tmp_path / "db")
        try:
            yield TesseraVectorStore(db, "standard", self.get_embeddings())
        finally:
            db.close()


class TestServerStandard(VectorStoreIntegrationTests):
    """LangChain's standard suite against `tessera serve` through tessera.Client."""

    @pytest.fixture()
    def vectorstore(self, model_server):
        client = tessera.Client(model_server.url)
        name = next(_names)
        try:
            yield TesseraVectorStore(client, name, self.get_embeddings())
        finally:
            if name in client.list_collections():
                client.drop_collection(name)
            client.close()


class TokenEmbeddings(Embeddings):
    """A late-interaction stand-in: one deterministic unit vector per word, so
    each text is a token matrix."""

    def __init__(self, dim: int = 8):
        self.dim = dim

    def _word(self, w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim)
        return v / np.linalg.norm(v)

    def tokens(self, text: str) -> np.ndarray:
        return np.stack([self._word(w) for w in text.split()]).astype(np.float32)

    def embed_documents(self, texts):
        return [self.tokens(t).tolist() for t in texts]

    def embed_query(self, text):
        return self.tokens(text).tolist()


TEXTS = [
    "the quick brown fox",
    "a cat sat on the mat",
    "river bank and money bank",
    "late interaction search engine",
    "the red planet mars",
    "python and rust code",
    "quick search of the bank",
    "a lazy dog on a mat",
]


def backends(tmp_path, server):
    db = tessera.Database(tmp_path / "db")
    client = tessera.Client(server.url)
    return [("embedded", db), ("server", client)]


def test_token_matrices_rank_as_a_naive_maxsim(tmp_path, model_server):
    emb = TokenEmbeddings()
    for where, backend in backends(tmp_path, model_server):
        name = next(_names)
        store = TesseraVectorStore(backend, name, emb)
        ids = store.add_texts(TEXTS, metadatas=[{"n": i} for i in range(len(TEXTS))], ids=[f"d{i}" for i in range(8)])
        for query in ["quick bank", "mat cat", "rust search engine"]:
            got = store.similarity_search_with_score(query, k=5, exact=True)
            q = emb.tokens(query)
            # Best first, ties (texts sharing the query's words) by id, as the engine breaks them.
            ref = sorted(((maxsim(q, emb.tokens(t)), i) for i, t in zip(ids, TEXTS)), key=lambda x: (-round(x[0], 4), x[1]))[:5]
            assert [d.id for d, _ in got] == [i for _, i in ref], where
            for (d, s), (rs, _) in zip(got, ref):
                assert s == pytest.approx(rs, abs=2e-3), where
                assert d.page_content == TEXTS[ids.index(d.id)]
                assert d.metadata == {"n": ids.index(d.id)}
            # Relevance scores: MaxSim mapped onto [0, 1] by the query's token count.
            rel = store.similarity_search_with_relevance_scores(query, k=5, exact=True)
            assert [d.id for d, _ in rel] == [d.id for d, _ in got]
            for (_, r), (_, s) in zip(rel, got):
                assert r == pytest.approx((s / len(q) + 1) / 2, abs=1e-6)
        if where == "server":
            backend.drop_collection(name)
        backend.close()


# A Python evaluation of the Mongo-style filters the integration translates.
def matches(f: dict, meta: dict) -> bool:
    def cond(field, c):
        v = meta.get(field)
        if c is None:  # Mongo: null or missing
            return v is None
        if not isinstance(c, dict):
            return v is not None and v == c
        ok = True
        for op, x in c.items():
            if op == "$eq":
                ok &= v is not None and v == x
            elif op == "$ne":
                ok &= not (v is not None and v == x)
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                same = isinstance(v, str) if isinstance(x, str) else isinstance(v, (int, float)) and not isinstance(v, bool)
                cmp = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
                       "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b}[op]
                ok &= v is not None and same and cmp(v, x)
            elif op == "$in":  # Mongo: a missing field is null, and [null] holds it
                ok &= v in x
            elif op == "$nin":
                ok &= v not in x
            elif op == "$exists":
                ok &= (v is not None) == x
        return ok

    out = True
    for k, c in f.items():
        if k == "$and":
            out &= all(matches(g, meta) for g in c)
        elif k == "$or":
            out &= any(matches(g, meta) for g in c)
        elif k == "$not":
            out &= not matches(c, meta)
        else:
            out &= cond(k, c)
    return out


FILTERS = [
    {"lang": "en"},
    {"lang": {"$ne": "en"}},
    {"year": {"$gte": 2000, "$lt": 2010}},
    {"year": {"$gt": 2005}, "lang": {"$in": ["de", "fr"]}},
    {"lang": {"$nin": ["en"]}},
    {"tag": {"$exists": True}},
    {"tag": {"$exists": False}},
    {"date": {"$gt": "2001-06-01T00:00:00"}},
    {"$or": [{"lang": "de"}, {"year": {"$lte": 1995}}]},
    {"$not": {"lang": "en"}},
    {"$and": [{"tag": "x"}, {"$not": {"year": {"$lt": 2003}}}]},
    {"year": None},
    {"year": {"$in": [None, 2001, 2002]}},
    {"tag": {"$nin": [None, "x"]}},
]


def test_mongo_filters_select_what_a_python_evaluation_selects(tmp_path, model_server, rng):
    emb = TokenEmbeddings()
    n = 60
    texts = [" ".join(rng.choice(R.DEFAULT_WORDS, size=4)) for _ in range(n)]
    metas = []
    for i in range(n):
        m = {"lang": str(rng.choice(["en", "de", "fr"])), "date": f"{1990 + i % 20}-0{1 + i % 9}-01T00:00:00"}
        if i % 3:
            m["year"] = int(1990 + i % 25)
        if i % 4 == 0:
            m["tag"] = str(rng.choice(["x", "y"]))
        metas.append(m)
    for where, backend in backends(tmp_path, model_server):
        name = next(_names)
        store = TesseraVectorStore(backend, name, emb)
        ids = store.add_texts(texts, metadatas=metas, ids=[f"d{i:02d}" for i in range(n)])
        for f in FILTERS:
            got = {d.id for d in store.similarity_search("quick bank", k=n, filter=f)}
            want = {i for i, m in zip(ids, metas) if matches(f, m)}
            assert got == want, (where, f)
        # Tessera's own filter language passes through.
        got = {d.id for d in store.similarity_search("cat", k=n, filter={"field": "lang", "eq": "de"})}
        assert got == {i for i, m in zip(ids, metas) if m["lang"] == "de"}
        with pytest.raises(tessera.InvalidInputError, match="unknown operator"):
            store.similarity_search("cat", filter={"lang": {"$regex": "e"}})
        with pytest.raises(tessera.InvalidInputError, match="takes a list"):
            store.similarity_search("cat", filter={"lang": {"$in": "en"}})
        if where == "server":
            backend.drop_collection(name)
        backend.close()


def reference_ranking(model, texts, query, k):
    dv = R.reference_encode(model, texts, is_query=False)
    qv = R.reference_encode(model, [query], is_query=True)[0]
    scores = [maxsim(qv, d) for d in dv]
    order = sorted(range(len(texts)), key=lambda i: -scores[i])[:k]
    return order, scores


def test_a_bound_model_encodes_texts_and_queries(tmp_path, tiny_model, model_server):
    model = tiny_model
    for where, backend in backends(tmp_path, model_server):
        name = next(_names)
        store = TesseraVectorStore(
            backend, name, model=str(model) if where == "embedded" else "tiny", create={"text": "english"}
        )
        ids = store.add_texts(TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))])
        for query in ["quick bank", "cat on the mat"]:
            got = store.similarity_search_with_score(query, k=4, exact=True)
            order, scores = reference_ranking(model, TEXTS, query, 4)
            assert [d.id for d, _ in got] == [ids[i] for i in order], where
            for (_, s), i in zip(got, order):
                assert s == pytest.approx(scores[i], abs=5e-3)
            # The hybrid search type: BM25 of the query beside MaxSim, as the collection ranks it.
            retriever = store.as_retriever(search_type="hybrid", search_kwargs={"k": 4})
            assert isinstance(retriever, TesseraRetriever)
            col = store.collection
            q = col.encode([query], is_query=True)[0]
            want = [h.id for h in col.search(q, k=4, text=query)]
            assert [d.id for d in retriever.invoke(query)] == want
            assert [d.id for d in store.search(query, "hybrid", k=4)] == want
        if where == "server":
            backend.drop_collection(name)
        backend.close()


async def test_hybrid_retriever_async(tmp_path):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=5)
    with tessera.Database(tmp_path / "db") as db:
        store = TesseraVectorStore(db, "c", model=str(model), create={"text": "english"})
        await store.aadd_texts(TEXTS)
        retriever = store.as_retriever(search_type="hybrid", search_kwargs={"k": 3})
        got = await retriever.ainvoke("money bank")
        assert [d.page_content for d in got] == [d.page_content for d in retriever.invoke("money bank")]
        assert len(got) == 3


def test_refusals(tmp_path):
    with tessera.Database(tmp_path / "db") as db:
        # No model and no embedding: the first write says what to give.
        store = TesseraVectorStore(db, "plain")
        with pytest.raises(tessera.InvalidInputError, match="no bound model to encode text: create it with model="):
            store.add_texts(["a text"])
        assert db.list_collections() == []
        db.create_collection("tokens", 8)
        store = TesseraVectorStore(db, "tokens")
        with pytest.raises(tessera.InvalidInputError, match="has no bound model"):
            store.add_texts(["a text"])
        with pytest.raises(tessera.InvalidInputError, match="has no bound model"):
            store.similarity_search("a text")
        # An embedding of another dimension is the engine's dimension error.
        store = TesseraVectorStore(db, "tokens", TokenEmbeddings(dim=4))
        with pytest.raises(tessera.InvalidInputError, match="dim"):
            store.add_texts(["a text"])
        assert len(db.collection("tokens")) == 0
        with pytest.raises(ValueError, match="needs ids"):
            store.delete()
        with pytest.raises(ValueError, match="one each"):
            store.add_texts(["a", "b"], metadatas=[{}])
        with pytest.raises(TypeError, match="unexpected"):
            store.add_texts(["a"], batch_size=3)
        # from_texts needs somewhere to write.
        with pytest.raises(ValueError, match="client="):
            TesseraVectorStore.from_texts(["a"], TokenEmbeddings())
        s2 = TesseraVectorStore.from_texts(["a b", "c d"], TokenEmbeddings(), client=db, collection_name="ft")
        assert len(s2.collection) == 2
        assert s2.get_by_ids(["missing"]) == []


def test_store_options_join_the_call_and_nothing_is_ignored(tmp_path):
    emb = TokenEmbeddings()
    with tessera.Database(tmp_path / "db") as db:
        store = TesseraVectorStore(db, "c", emb, search_options={"filter": {"field": "lang", "eq": "en"}, "exact": True})
        store.add_texts(TEXTS, metadatas=[{"lang": "en" if i % 2 else "de", "i": i} for i in range(len(TEXTS))])
        # The store's filter and the call's both hold.
        got = store.similarity_search("quick bank", k=8, filter={"i": {"$gte": 4}})
        assert sorted(d.metadata["i"] for d in got) == [5, 7]
        # Max-marginal relevance is not implemented: refused when the retriever is made.
        with pytest.raises(ValueError, match="mmr"):
            store.as_retriever(search_type="mmr")
        with pytest.raises(tessera.InvalidInputError, match="BM25 text is the query"):
            store.similarity_search("quick", hybrid=True, text="other")
        # Repeated and unknown ids delete once, without an error.
        ids = store.add_texts(["x y"], ids=["dup"])
        store.delete(ids + ids + ["never"])
        assert store.get_by_ids(["dup"]) == []


def test_metadata_other_than_a_dict_and_documents_round_trip(tmp_path):
    with tessera.Database(tmp_path / "db") as db:
        store = TesseraVectorStore(db, "c", TokenEmbeddings())
        docs = [Document(page_content="a cat", metadata={"nested": {"x": [1, 2.5, None]}, "s": "é"}, id="x")]
        store.add_documents(docs)
        assert store.get_by_ids(["x"]) == docs
