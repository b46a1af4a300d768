"""The embedded engine from Python, against a naive numpy MaxSim."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tessera
from conftest import corpus, load, maxsim, ranking

DIM = 16


def fill(col, docs: dict, texts: bool = True) -> None:
    ids = list(docs)
    col.upsert(
        ids,
        [docs[i] for i in ids],
        texts=[f"passage {i} about topic {int(i[-4:]) % 5}" for i in ids] if texts else None,
        payloads=[{"n": int(i[-4:]), "even": int(i[-4:]) % 2 == 0} for i in ids],
    )


def assert_matches(hits, expected, tol=1e-3):
    assert len(hits) == len(expected)
    exp_score = dict(expected)
    for h, (eid, es) in zip(hits, expected):
        assert abs(h.score - es) <= tol, (h.id, h.score, eid, es)
        if h.id != eid:  # a tie
            assert abs(exp_score.get(h.id, es) - es) <= tol, (h.id, eid)


@pytest.mark.parametrize("flush", [False, True])
def test_exact_and_two_stage_search_equal_naive_maxsim(db, rng, flush):
    docs = corpus(rng, 300, DIM)
    col = db.create_collection("c", DIM)
    fill(col, docs)
    if flush:
        col.flush()
    assert len(col) == 300
    for _ in range(10):
        q = rng.standard_normal((int(rng.integers(1, 12)), DIM)).astype(np.float32)
        expected = ranking(q, docs, 10)
        assert_matches(col.search(q, k=10, exact=True), expected)
        # With every document a candidate, two-stage is exact.
        assert_matches(col.search(q, k=10, candidates=300), expected)
        hits = col.search(q, k=10)  # the default: approximate, but true MaxSim scores
        for h in hits:
            assert abs(h.score - maxsim(q, docs[h.id])) <= 1e-3


def test_hits_carry_text_and_payload_and_get_returns_f16_tokens(db, rng):
    docs = corpus(rng, 20, DIM)
    col = db.create_collection("c", DIM)
    fill(col, docs)
    h = col.search(docs["doc-0007"], k=1, exact=True)[0]
    assert h.id == "doc-0007"
    assert h.text == "passage doc-0007 about topic 2"
    assert h.payload == {"n": 7, "even": False}
    got = col.get(["doc-0003", "missing", "doc-0003"], tokens=True)
    assert got[1] is None
    d = got[0]
    assert d.id == "doc-0003" and d.n_tokens == docs["doc-0003"].shape[0]
    assert d.tokens.dtype == np.float16 and d.tokens.shape == docs["doc-0003"].shape
    np.testing.assert_array_equal(d.tokens, docs["doc-0003"].astype(np.float16))
    assert got[2].id == "doc-0003"
    assert col.get(["doc-0003"])[0].tokens is None


def test_flat_tokens_with_offsets_equal_a_list_and_noncontiguous_arrays_are_read_in_order(tmp_path, rng):
    docs = corpus(rng, 40, DIM)
    ids = list(docs)
    flat = np.concatenate([docs[i] for i in ids]).astype(np.float16)
    offsets = np.concatenate([[0], np.cumsum([docs[i].shape[0] for i in ids])]).astype(np.uint64)
    with tessera.Database(tmp_path / "a") as a, tessera.Database(tmp_path / "b") as b:
        ca, cb = a.create_collection("c", DIM), b.create_collection("c", DIM)
        ca.upsert(ids, flat, offsets=offsets)
        # Transposed copies: the same values, not C-contiguous.
        cb.upsert(ids, [np.asfortranarray(docs[i].astype(np.float16)) for i in ids])
        assert not np.asfortranarray(docs[ids[0]]).flags.c_contiguous
        for i in ids[:5]:
            np.testing.assert_array_equal(ca.get([i], tokens=True)[0].tokens, cb.get([i], tokens=True)[0].tokens)
        q = rng.standard_normal((5, DIM)).astype(np.float32)
        assert ca.search(q, k=10, exact=True) == cb.search(q, k=10, exact=True)
        # A non-contiguous query gives the same answer as its contiguous copy.
        qt = np.ascontiguousarray(q.T).T
        assert not qt.flags.c_contiguous
        assert ca.search(qt, k=5, exact=True) == ca.search(q, k=5, exact=True)


def bad_batches(rng):
    ok = rng.standard_normal((4, DIM)).astype(np.float32)
    nan = ok.copy()
    nan[2, 3] = np.nan
    inf = ok.copy()
    inf[0, 0] = np.inf
    big = ok.copy()
    big[1, 1] = 70000.0
    return [
        ("int64 dtype", dict(ids=["x"], tokens=[ok.astype(np.int64)]), "dtype int64"),
        ("float64 dtype", dict(ids=["x"], tokens=[ok.astype(np.float64)]), "dtype float64"),
        ("wrong dim", dict(ids=["x", "y"], tokens=[ok, ok[:, :8].copy()]), "documents[1]"),
        ("1-d array", dict(ids=["x"], tokens=[ok[0]]), "2-d"),
        ("3-d array", dict(ids=["x"], tokens=[ok[None]]), "2-d"),
        ("nested lists", dict(ids=["x"], tokens=[ok.tolist()]), "numpy array"),
        ("ragged: fewer tensors than ids", dict(ids=["x", "y"], tokens=[ok]), "tokens has 1 entries for 2 ids"),
        ("NaN", dict(ids=["x", "y"], tokens=[ok, nan]), "documents[1]"),
        ("Inf", dict(ids=["x"], tokens=[inf]), "documents[0]"),
        ("beyond f16", dict(ids=["x"], tokens=[big]), "f16 range"),
        ("empty tensor", dict(ids=["x"], tokens=[ok[:0]]), "empty tensor"),
        ("non-string id", dict(ids=[7], tokens=[ok]), "ids[0] must be a str"),
        ("str as ids", dict(ids="x", tokens=[ok]), "ids must be a list"),
        ("empty id", dict(ids=[""], tokens=[ok]), "id is empty"),
        ("id too long", dict(ids=["x" * 513], tokens=[ok]), "513 bytes"),
        ("duplicate ids", dict(ids=["x", "y", "x"], tokens=[ok, ok, ok]), "documents[2]"),
        ("one array without offsets", dict(ids=["x"], tokens=ok), "offsets"),
        ("offsets too short", dict(ids=["x", "y"], tokens=ok, offsets=[0, 4]), "offsets has 2 entries"),
        ("offsets past the end", dict(ids=["x"], tokens=ok, offsets=[0, 5]), "end at the 4 rows"),
        ("offsets decrease", dict(ids=["x", "y"], tokens=ok, offsets=[0, 5, 4]), "decrease at documents[1]"),
        ("empty document by offsets", dict(ids=["x", "y"], tokens=ok, offsets=[0, 0, 4]), "documents[0]"),
        ("texts length", dict(ids=["x"], tokens=[ok], texts=["a", "b"]), "texts has 2 entries"),
        ("text not a str", dict(ids=["x"], tokens=[ok], texts=[3]), "texts: must be a str"),
        ("payload not JSON", dict(ids=["x"], tokens=[ok], payloads=[{"a": object()}]), "not JSON"),
        ("payload NaN", dict(ids=["x"], tokens=[ok], payloads=[{"a": float("nan")}]), "not JSON"),
    ]


def test_every_bad_batch_raises_invalid_input_and_writes_nothing(db, rng):
    col = db.create_collection("c", DIM)
    good = rng.standard_normal((3, DIM)).astype(np.float32)
    col.upsert(["keep"], [good], texts=["kept"])
    before = (len(col), col.stats()["tokens"])
    for name, kwargs, needle in bad_batches(rng):
        with pytest.raises(tessera.InvalidInputError) as e:
            col.upsert(**kwargs)
        assert isinstance(e.value, ValueError) and isinstance(e.value, tessera.TesseraError), name
        assert needle in str(e.value), f"{name}: {e.value}"
        assert (len(col), col.stats()["tokens"]) == before, name
        assert col.get(["x", "y"]) == [None, None], name


def test_bad_queries_and_options_raise_invalid_input(db, rng):
    col = db.create_collection("c", DIM)
    fill(col, corpus(rng, 10, DIM))
    q = rng.standard_normal((3, DIM)).astype(np.float32)
    cases = [
        (dict(query=q[:, :4].copy()), "wrong dimension"),
        (dict(query=q.astype(np.int64)), "dtype int64"),
        (dict(query=q[0]), "2-d"),
        (dict(query=q[:0]), "empty tensor"),
        (dict(query=np.full((2, DIM), np.nan, dtype=np.float32)), "invalid value"),
        (dict(query=q, k=0), "k must be in"),
        (dict(query=q, k=tessera.MAX_K + 1), "k must be in"),
        (dict(query=q, fusion="max", text="x"), "unknown fusion"),
        (dict(query=q, weights={"bm25": 1.0}), "unknown source"),
        (dict(query=q, text="x", exact=True), "exact, ef, nprobe and rerank apply"),
        (dict(text="x", rerank_only=True), "rerank_only needs"),
        (dict(query=q, filter={"field": "n", "near": 3}), "filter"),
        (dict(query=q, filter="{not json"), "filter"),
        (dict(), "a search needs"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(tessera.InvalidInputError, match=needle):
            col.search(**kwargs)
    with pytest.raises(tessera.InvalidInputError, match=r"queries\[1\]"):
        col.search_batch([q, q.astype(np.int64)])
    with pytest.raises(tessera.InvalidInputError, match="wrong dimension"):
        col.rerank(q[:, :4].copy(), ["doc-0001"])


def test_filters_hybrid_text_and_rerank(db, rng):
    docs = corpus(rng, 60, DIM)
    col = db.create_collection("c", DIM)
    fill(col, docs)
    q = rng.standard_normal((4, DIM)).astype(np.float32)
    even = {i: t for i, t in docs.items() if int(i[-4:]) % 2 == 0}
    assert_matches(col.search(q, k=5, exact=True, filter={"field": "even", "eq": True}), ranking(q, even, 5))
    assert_matches(col.search(q, k=5, exact=True, filter='{"field": "even", "eq": true}'), ranking(q, even, 5))
    # Hybrid: BM25 candidates reranked by MaxSim; every hit mentions the topic word.
    hits = col.search(q, k=5, text="topic 3", candidates=60)
    assert hits and all(h.fused is not None for h in hits)
    for h in hits:
        assert abs(h.score - maxsim(q, docs[h.id])) <= 1e-3
        assert {s["source"] for s in h.sources} <= {"tensor", "text"}
    bm25 = col.search(text="passage doc-0042", k=3)
    assert bm25[0].id == "doc-0042"
    r = col.rerank(q, ["doc-0001", "nope", "doc-0002", "doc-0001"])
    assert r.missing == ["nope"]
    assert_matches(r.hits, ranking(q, {i: docs[i] for i in ("doc-0001", "doc-0002")}, 2))


def test_search_batch_equals_one_by_one(db, rng):
    docs = corpus(rng, 200, DIM)
    col = db.create_collection("c", DIM)
    fill(col, docs)
    col.flush()
    queries = [rng.standard_normal((int(rng.integers(2, 10)), DIM)).astype(np.float32) for _ in range(17)]
    for kwargs in (dict(k=7), dict(k=7, exact=True), dict(k=3, text="topic 1")):
        assert col.search_batch(queries, **kwargs) == [col.search(q, **kwargs) for q in queries]


def test_delete_flush_compact_stats(db, rng):
    docs = corpus(rng, 50, DIM)
    col = db.create_collection("c", DIM, index="none", text="plain", durability="buffered")
    fill(col, docs)
    col.flush()
    assert col.delete(["doc-0001", "doc-0002", "nope"]) == 2
    s = col.stats()
    assert (s["index"], s["text"], s["durability"]) == ("none", "plain", "buffered")
    assert s["documents"] == 48 and s["segments"] == 1 and s["deleted_in_segments"] == 2
    col.compact()
    s = col.stats()
    assert s["documents"] == 48 and s["deleted_in_segments"] == 0
    assert s["tokens"] == sum(t.shape[0] for i, t in docs.items() if i not in ("doc-0001", "doc-0002"))
    remaining = {i: t for i, t in docs.items() if i not in ("doc-0001", "doc-0002")}
    q = rng.standard_normal((3, DIM)).astype(np.float32)
    assert_matches(col.search(q, k=10), ranking(q, remaining, 10))  # index none: exact


def test_backup_and_restore_reproduce_the_state_at_the_backup(tmp_path, rng):
    docs = corpus(rng, 60, DIM)
    ids = list(docs)
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", DIM)
        col.upsert(ids[:40], [docs[i] for i in ids[:40]])
        col.flush()
        col.upsert(ids[40:50], [docs[i] for i in ids[40:50]])
        col.delete(ids[:5])
        report = db.backup(tmp_path / "bk")
        # Written after the backup: not in it.
        col.upsert(ids[50:], [docs[i] for i in ids[50:]])
        col.delete(ids[5:10])
        with pytest.raises(tessera.AlreadyExistsError):
            db.backup(tmp_path / "bk")
    (c,) = report["collections"]
    assert (c["name"], c["seq"], c["documents"]) == ("c", 3, 45)
    restored = tessera.restore(tmp_path / "bk", tmp_path / "restored")
    assert restored["collections"][0]["seq"] == 3
    with pytest.raises(tessera.AlreadyExistsError):
        tessera.restore(tmp_path / "bk", tmp_path / "restored")
    with tessera.Database(tmp_path / "restored") as rdb:
        col = rdb.collection("c")
        assert len(col) == 45
        for i, d in zip(ids[5:50], col.get(ids[5:50], tokens=True)):
            np.testing.assert_array_equal(d.tokens, docs[i].astype(np.float16))
        assert all(d is None for d in col.get(ids[:5] + ids[50:]))


def test_collections_and_error_classes(tmp_path, rng):
    with tessera.Database(tmp_path / "db") as db:
        assert db.list_collections() == []
        db.create_collection("b", 4)
        db.create_collection("a", 8)
        assert db.list_collections() == ["a", "b"]
        with pytest.raises(tessera.AlreadyExistsError):
            db.create_collection("a", 8)
        with pytest.raises(tessera.NotFoundError) as e:
            db.collection("zzz")
        assert isinstance(e.value, LookupError) and "zzz" in str(e.value)
        with pytest.raises(tessera.InvalidInputError, match="invalid collection name"):
            db.create_collection("no spaces", 8)
        with pytest.raises(tessera.InvalidInputError, match="unknown index"):
            db.create_collection("x", 8, index="ivf")
        with pytest.raises(tessera.InvalidInputError, match="dim"):
            db.create_collection("x", 0)
        assert db.open_or_create_collection("a", 8).dim == 8
        assert db.open_or_create_collection("a", 8, index="pooled", text="english").dim == 8
        with pytest.raises(tessera.AlreadyExistsError, match="dim"):
            db.open_or_create_collection("a", 16)
        with pytest.raises(tessera.AlreadyExistsError, match="index"):
            db.open_or_create_collection("a", 8, index="muvera")
        assert db.open_or_create_collection("new", 8, index="muvera").stats()["index"] == "muvera"
        held = db.collection("b")
        db.drop_collection("b")
        with pytest.raises(tessera.NotFoundError):
            db.drop_collection("b")
        with pytest.raises(tessera.UnavailableError):
            held.upsert(["x"], [np.ones((1, 4), np.float32)])
        # A second open of the same folder is refused while this one holds it.
        with pytest.raises(tessera.UnavailableError, match="already open"):
            tessera.Database(tmp_path / "db")
        # A read-only open beside it works, sees the same and takes no writes.
        with tessera.Database(tmp_path / "db", read_only=True) as reader:
            assert reader.list_collections() == db.list_collections()
            with pytest.raises(tessera.UnavailableError, match="read-only"):
                reader.create_collection("z", 8)
            with pytest.raises(tessera.UnavailableError, match="read-only"):
                reader.collection("a").upsert(["x"], [np.ones((1, 8), np.float32)])
        with pytest.raises(tessera.NotFoundError, match="no database"):
            tessera.Database(tmp_path / "missing", read_only=True)
        assert not (tmp_path / "missing").exists()
        col = db.collection("a")
    with pytest.raises(tessera.UnavailableError, match="closed"):
        col.search(np.ones((1, 8), np.float32))
    with pytest.raises(tessera.UnavailableError, match="closed"):
        db.list_collections()
    db.close()  # twice is fine
    # Closed: the folder can be opened again.
    with tessera.Database(tmp_path / "db") as again:
        assert again.list_collections() == ["a", "new"]


def test_corruption_is_reported_as_corruption_error(tmp_path, rng):
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, index="none", text="none")
        fill(col, corpus(rng, 20, DIM), texts=False)
        col.flush()
    seg = next((tmp_path / "db" / "collections" / "c").glob("seg-*"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x55
    seg.write_bytes(bytes(data))
    with pytest.raises(tessera.CorruptionError, match="corrupted"):
        tessera.Database(tmp_path / "db")


def test_data_survives_reopen_in_a_new_process(tmp_path, rng):
    docs = corpus(rng, 30, DIM)
    path = tmp_path / "db"
    with tessera.Database(path) as db:
        fill(db.create_collection("c", DIM), docs)  # memtable only: recovered from the WAL
    q = rng.standard_normal((3, DIM)).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    script = textwrap.dedent(
        f"""
        import json, numpy as np, tessera
        with tessera.Database({str(path)!r}) as db:
            c = db.collection("c")
            hits = c.search(np.load({str(tmp_path / "q.npy")!r}), k=5, exact=True)
            print(json.dumps([len(c)] + [[h.id, h.score, h.payload] for h in hits]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    import json

    n, *hits = json.loads(out)
    assert n == 30
    assert_matches([tessera.Hit(i, s) for i, s, _ in hits], ranking(q, docs, 5))
    assert hits[0][2]["n"] == int(hits[0][0][-4:])


def test_float16_input_equals_float32_input(tmp_path, rng):
    docs = corpus(rng, 30, DIM)
    with tessera.Database(tmp_path / "a") as a:
        c16 = a.create_collection("h", DIM)
        c32 = a.create_collection("f", DIM)
        ids = list(docs)
        c16.upsert(ids, [docs[i].astype(np.float16) for i in ids])
        c32.upsert(ids, [docs[i] for i in ids])
        q = rng.standard_normal((4, DIM)).astype(np.float32)
        assert c16.search(q, k=10, exact=True) == c32.search(q, k=10, exact=True)
        hits16 = c16.search(q.astype(np.float16), k=10, exact=True)
        assert_matches(hits16, ranking(q.astype(np.float16), docs, 10))


def int8_values(doc: np.ndarray) -> np.ndarray:
    """What an int8 collection stores, by numpy: per-token scale max|x|/127 of
    the f16 values, codes rounded half away from zero, dequantised."""
    x = doc.astype(np.float16).astype(np.float32)
    scale = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)
    safe = np.where(scale == 0, np.float32(1), scale)
    codes = np.clip(np.trunc(x / safe + np.copysign(np.float32(0.5), x)), -127, 127)
    return np.where(scale == 0, 0, codes * scale).astype(np.float32)


def maxsim_f32(query: np.ndarray, doc: np.ndarray) -> float:
    """Naive MaxSim in f64 of f32 values (no f16 rounding)."""
    return float((query.astype(np.float64) @ doc.astype(np.float64).T).max(axis=1).sum())


@pytest.mark.parametrize("screening", ["none", "binary"])
def test_int8_collections_store_and_rank_the_quantised_values(db, rng, screening):
    docs = corpus(rng, 200, DIM)
    col = db.create_collection("q", DIM, storage="int8", screening=screening)
    fill(col, dict(list(docs.items())[:120]))
    col.flush()
    fill(col, dict(list(docs.items())[120:]))
    st = col.stats()
    assert (st["storage"], st["screening"]) == ("int8", screening)
    assert st["bytes_per_token"] == DIM + 4 + (8 if screening == "binary" else 0)
    stored = {i: int8_values(t) for i, t in docs.items()}
    for d, i in zip(col.get(["doc-0003", "doc-0150"], tokens=True), ["doc-0003", "doc-0150"]):
        np.testing.assert_array_equal(d.tokens, stored[i].astype(np.float16))
    for _ in range(4):
        q = rng.standard_normal((5, DIM)).astype(np.float32)
        want = [(i, -s) for s, i in sorted((-maxsim_f32(q, t), i) for i, t in stored.items())[:10]]
        assert_matches(col.search(q, 10, exact=True), want)
        if screening == "binary":
            assert_matches(col.search(q, 10, candidates=1000, rerank=1000), want)
            hits = col.search(q, 10, rerank=12)
            assert len(hits) == 10
            for h in hits:
                assert abs(h.score - maxsim_f32(q, stored[h.id])) < 1e-3
        else:
            with pytest.raises(tessera.InvalidInputError, match="screening"):
                col.search(q, 10, rerank=12)
    with pytest.raises(tessera.InvalidInputError, match="exact"):
        col.search(q, 10, rerank=12, exact=True)
    with pytest.raises(tessera.InvalidInputError, match="storage"):
        db.create_collection("bad", DIM, storage="int4")
    with pytest.raises(tessera.AlreadyExistsError, match="storage"):
        db.open_or_create_collection("q", DIM, storage="f16")
    assert db.open_or_create_collection("q", DIM, storage="int8").stats()["documents"] == 200


@pytest.mark.parametrize("storage,bits", [("residual2", 2), ("residual4", 4)])
def test_residual_collections_score_their_stored_values(db, rng, storage, bits):
    """A residual collection (index centroids) stores each token as a
    centroid code and per-dimension buckets: what `get` gives is what search
    scores (naive MaxSim in numpy), near what was given, at 2 + dim·bits/8
    bytes a token; without a centroids index it is refused."""
    with pytest.raises(tessera.InvalidInputError, match="centroids"):
        db.create_collection("bad", DIM, storage=storage)
    docs = corpus(rng, 300, DIM)
    col = db.create_collection(
        "r", DIM, index="centroids", storage=storage, settings={"centroids_k": 32, "min_train_tokens": 256}
    )
    fill(col, dict(list(docs.items())[:200]))
    col.flush()  # trains the codebook: this segment is residual
    fill(col, dict(list(docs.items())[200:]))  # the memtable: f16
    st = col.stats()
    assert (st["storage"], st["bytes_per_token"], st["centroids"]) == (storage, 2 + DIM * bits // 8, 32)
    ids = list(docs)
    stored = {d.id: np.asarray(d.tokens, dtype=np.float32) for d in col.get(ids, tokens=True)}
    for i in ids[200:]:
        np.testing.assert_array_equal(stored[i], docs[i].astype(np.float16).astype(np.float32))
    # Coded tokens are near the given ones (mean cosine), closer with more bits.
    cos = [
        float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        for i in ids[:200]
        for a, b in zip(stored[i], docs[i].astype(np.float16).astype(np.float32))
    ]
    assert np.mean(cos) > (0.8 if bits == 2 else 0.9), np.mean(cos)
    for _ in range(3):
        q = rng.standard_normal((4, DIM)).astype(np.float32)
        want = [(i, -s) for s, i in sorted((-maxsim_f32(q, t), i) for i, t in stored.items())[:10]]
        # `get` rounds the decoded values to f16; search scores them in f32.
        assert_matches(col.search(q, 10, exact=True), want, tol=2e-2)
        assert_matches(col.search(q, 10, candidates=1000), want, tol=2e-2)


@pytest.mark.parametrize("storage", ["residual2", "residual4"])
def test_a_kept_f16_copy_gives_the_exact_values_given(db, rng, storage):
    """keep="f16": the residual rows screen, the copy is what exact search,
    `get` and the final candidates read — the f16 values given (numpy)."""
    with pytest.raises(tessera.InvalidInputError, match="keep f16 applies to residual storage"):
        db.create_collection("bad", DIM, keep="f16")
    docs = corpus(rng, 300, DIM)
    col = db.create_collection(
        "k", DIM, index="centroids", storage=storage, keep="f16", settings={"centroids_k": 32, "min_train_tokens": 256}
    )
    fill(col, dict(list(docs.items())[:200]))
    col.flush()
    fill(col, dict(list(docs.items())[200:]))
    st = col.stats()
    assert st["keep"] == "f16" and st["kept_bytes_per_token"] >= 2 * DIM, st
    f16 = {i: t.astype(np.float16).astype(np.float32) for i, t in docs.items()}
    for d in col.get(list(docs), tokens=True):
        np.testing.assert_array_equal(np.asarray(d.tokens, dtype=np.float32), f16[d.id])
    for _ in range(3):
        q = rng.standard_normal((4, DIM)).astype(np.float32)
        want = [(i, -s) for s, i in sorted((-maxsim_f32(q, t), i) for i, t in f16.items())[:10]]
        assert_matches(col.search(q, 10, exact=True), want)
        assert_matches(col.search(q, 10, candidates=1000, rerank=1000), want)
        for h in col.search(q, 5, rerank=20):
            assert abs(h.score - maxsim_f32(q, f16[h.id])) < 1e-3


def test_centroids_index_trains_once_and_searches_with_nprobe(db, rng):
    # 1,100 documents of 60 tokens: 66,000 tokens, enough for the first
    # segment to train the codebook (65,536 by default).
    docs = {f"doc-{i:04d}": rng.standard_normal((60, DIM)).astype(np.float32) for i in range(1100)}
    col = db.create_collection("cen", DIM, index="centroids", text="none")
    assert col.stats()["index"] == "centroids" and "centroids" not in col.stats()
    ids = list(docs)
    col.upsert(ids, [docs[i] for i in ids])
    col.flush()
    st = col.stats()
    assert st["centroids"] == 1024 and st["index_bytes_per_token"] > 0
    pooled = db.create_collection("p", DIM)
    fill(pooled, corpus(rng, 20, DIM))
    for _ in range(3):
        q = rng.standard_normal((4, DIM)).astype(np.float32)
        expected = ranking(q, docs, 10)
        assert_matches(col.search(q, 10, candidates=2000, nprobe=4), expected)
        hits = col.search(q, 10, nprobe=8)  # approximate candidates, true MaxSim scores
        assert len(hits) == 10
        for h in hits:
            assert abs(h.score - maxsim(q, docs[h.id])) <= 1e-3
        batch = col.search_batch([q, q[:2]], 10, nprobe=8)
        assert [h.id for h in batch[0]] == [h.id for h in hits]
    for k in (10, 100, 1000):
        # Token centroids: 6 candidates per result (vector indexes: 8).
        assert col.default_candidates(k) == max(256, 6 * k, math.ceil(2.5 * math.sqrt(len(col))))
        assert pooled.default_candidates(k) == max(256, 8 * k, math.ceil(2.5 * math.sqrt(len(pooled))))
    with pytest.raises(tessera.InvalidInputError, match="nprobe"):
        pooled.search(q, 10, nprobe=4)
    with pytest.raises(tessera.InvalidInputError, match="ef applies"):
        col.search(q, 10, ef=50)
    with pytest.raises(tessera.InvalidInputError, match="nprobe"):
        col.search(q, 10, nprobe=0)


def test_linear_rank_against_numpy_and_the_collection_ranking(tmp_path, rng):
    """rank="linear" against a numpy reference (z-scores over every document,
    BM25 from the text source with its lowest score as the floor); the
    collection's ranking orders a query that says no rank and survives a
    reopen; mining with the query text follows the fused order."""
    docs = corpus(rng, 60, DIM)
    q = rng.standard_normal((4, DIM)).astype(np.float32)
    text, w = "topic 3 passage", 0.6
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", DIM, index="none")  # exact: every document is a candidate
        fill(col, docs)
        hits = col.search(q, k=8, text=text, candidates=60, rank="linear", rank_weights={"bm25": w})
        bm25 = {h.id: h.sources[0]["score"] for h in col.search(text=text, k=60)}  # the text source's scores
        ids = sorted(docs)
        m = np.array([maxsim(q, docs[i]) for i in ids])
        floor = min(bm25.values())
        b = np.array([bm25.get(i, floor) for i in ids], dtype=np.float64)
        score = (m - m.mean()) / m.std() + w * (b - b.mean()) / b.std()
        want = sorted(zip(ids, score), key=lambda x: (-x[1], x[0]))[:8]
        assert_matches(hits, want, tol=1e-4)
        for h in hits:
            assert [c["signal"] for c in h.components] == ["maxsim", "bm25"]
            assert abs(h.components[0]["raw"] - maxsim(q, docs[h.id])) <= 1e-3
            assert (h.components[1]["raw"] is None) == (h.id not in bm25)
        assert col.ranking() == {"rank": "maxsim"}
        col.set_ranking("linear", weights={"bm25": w}, candidates=60)
        assert col.search(q, k=8, text=text) == hits
        with pytest.raises(tessera.InvalidInputError, match="not 0"):
            col.set_ranking("linear", weights={"maxsim": 0})
        with pytest.raises(tessera.InvalidInputError, match="unknown rank signal"):
            col.search(q, text=text, rank="linear", rank_weights={"title": 1.0})
        negatives, _ = col.mine_negatives("q", q, [], range=(1, 8), per_query=8, require_text=False, text=text)
        assert [h.id for h in negatives] == [h.id for h in hits]
        assert all(abs(h.score - maxsim(q, docs[h.id])) <= 1e-3 for h in negatives)
    with tessera.Database(tmp_path / "db") as db:
        col = db.collection("c")
        assert col.ranking() == {"rank": "linear", "norm": "zscore", "weights": {"maxsim": 1.0, "bm25": w}, "candidates": 60}
        assert col.search(q, k=8, text=text) == hits


def test_timeout_ms_stops_a_search(db, rng):
    docs = corpus(rng, 200, DIM)
    col = db.create_collection("c", DIM)
    fill(col, docs)
    q = rng.standard_normal((4, DIM)).astype(np.float32)
    assert col.search(q, k=5, exact=True, timeout_ms=600_000) == col.search(q, k=5, exact=True)
    # 1 ms for a batch whose scoring takes far longer (64 queries of 32 tokens over 200 documents, every one exact).
    long = rng.standard_normal((32, DIM)).astype(np.float32)
    with pytest.raises(tessera.DeadlineExceededError) as e:
        col.search_batch([long] * 64, k=5, exact=True, timeout_ms=1)
    assert isinstance(e.value, TimeoutError)
    with pytest.raises(tessera.InvalidInputError, match="at least 1"):
        col.search(q, timeout_ms=0)


def test_opening_a_database_twice_in_one_process_says_so(tmp_path):
    with tessera.Database(tmp_path / "db"):
        with pytest.raises(tessera.UnavailableError, match="already open in this process"):
            tessera.Database(tmp_path / "db")
    with tessera.Database(tmp_path / "db"):
        pass  # closed, it opens again


def _wait_sealed(col, timeout=20.0):
    import time

    deadline = time.monotonic() + timeout
    while col.stats()["memtable_documents"] > 0:
        assert time.monotonic() < deadline, f"not sealed {timeout} s after the last write"
        time.sleep(0.02)


def test_a_quiet_collection_is_sealed_in_the_background(tmp_path, rng):
    """Once no write came for `seal_idle_ms`, the memtable is sealed into a
    segment (a two-stage search then has its candidate index); 0 turns it off;
    a read-only database never seals and says so."""
    import time

    docs = corpus(rng, 30, 8)
    with tessera.Database(tmp_path / "db", seal_idle_ms=100) as db:
        col = db.create_collection("c", 8)
        load(col, docs)
        _wait_sealed(col)
        s = col.stats()
        assert (s["documents"], s["segments"]) == (30, 1)
    with tessera.Database(tmp_path / "off", seal_idle_ms=0) as db:
        col = db.create_collection("c", 8)
        load(col, docs)
        time.sleep(0.6)
        assert col.stats()["memtable_documents"] == 30
    with pytest.raises(tessera.InvalidInputError, match="never seals"):
        tessera.Database(tmp_path / "db", read_only=True, seal_idle_ms=100)
    with pytest.raises(tessera.InvalidInputError, match=">= 0"):
        tessera.Database(tmp_path / "db", seal_idle_ms=-1)


def test_a_torn_wal_tail_is_cut_with_a_warning_and_kept(tmp_path, rng):
    """Issue #30 item 15: a flipped bit in the last WAL frame (an acknowledged
    batch) is cut when the database opens, but never silently: a
    RuntimeWarning names the quarantine file, which holds the WAL's header and
    exactly the bytes cut, and the collection's stats count the cut."""
    import struct

    docs = corpus(rng, 6, 8)
    ids = list(docs)
    path = tmp_path / "db"
    with tessera.Database(path, seal_idle_ms=0) as db:
        col = db.create_collection("c", 8)
        col.upsert(ids[:4], [docs[i] for i in ids[:4]])
        col.upsert(ids[4:], [docs[i] for i in ids[4:]])
    folder = path / "collections" / "c"
    (wal,) = folder.glob("wal-*.log")
    data = bytearray(wal.read_bytes())
    # Frames per SPEC.md: a 32-byte header, then [u32 length][u32 CRC][payload].
    at, last = 32, None
    while at < len(data):
        last = at
        at += 8 + struct.unpack_from("<I", data, at)[0]
    data[-1] ^= 0x01
    wal.write_bytes(bytes(data))

    with pytest.warns(RuntimeWarning, match="torn WAL tail was cut") as caught:
        db = tessera.Database(path, seal_idle_ms=0)
    with db:
        col = db.collection("c")
        assert len(col) == 4 and col.get([ids[4]]) == [None]
        stats = col.stats()
        assert stats["wal_tails_cut"] == 1
        (name,) = stats["quarantine"]
        assert name in str(caught[0].message)
        kept = (folder / name).read_bytes()
        assert kept[:32] == bytes(data[:32]) and kept[32:] == bytes(data[last:])
        assert wal.read_bytes() == bytes(data[:last])
    with tessera.Database(path, seal_idle_ms=0) as db:
        stats = db.collection("c").stats()
        assert stats["wal_tails_cut"] == 0 and stats["quarantine"] == [name]
