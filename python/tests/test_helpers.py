"""to_tokens (PyLate-style model output) and ingest (batches, progress)."""

from __future__ import annotations

import numpy as np
import pytest

import tessera
from conftest import corpus, ranking

DIM = 12


def test_to_tokens_takes_lists_3d_arrays_and_single_matrices(rng):
    docs = [rng.standard_normal((n, DIM)).astype(np.float32) for n in (3, 7, 1)]
    out = tessera.to_tokens(docs)
    assert [a.shape for a in out] == [(3, DIM), (7, DIM), (1, DIM)]
    assert all(a.flags.c_contiguous and a.dtype == np.float32 for a in out)
    # float64 (numpy's default) becomes float32; float16 is kept; dtype= converts.
    assert tessera.to_tokens([docs[0].astype(np.float64)])[0].dtype == np.float32
    assert tessera.to_tokens([docs[0].astype(np.float16)])[0].dtype == np.float16
    assert tessera.to_tokens(docs, dtype=np.float16)[1].dtype == np.float16
    batch = rng.standard_normal((4, 5, DIM))
    assert [a.shape for a in tessera.to_tokens(batch)] == [(5, DIM)] * 4
    assert len(tessera.to_tokens(docs[1])) == 1
    # Fortran-order input comes back C-contiguous with the same values.
    f = np.asfortranarray(docs[1])
    np.testing.assert_array_equal(tessera.to_tokens([f])[0], docs[1])
    with pytest.raises(tessera.InvalidInputError, match="floats"):
        tessera.to_tokens([np.ones((2, DIM), dtype=np.int64)])
    with pytest.raises(tessera.InvalidInputError, match="2-d"):
        tessera.to_tokens([np.ones(DIM, dtype=np.float32)])
    with pytest.raises(tessera.InvalidInputError, match="float16 or float32"):
        tessera.to_tokens(docs, dtype=np.float64)


def test_to_tokens_takes_torch_tensors():
    torch = pytest.importorskip("torch", reason="torch is not installed (the helper's torch path is untested here)")
    t = [torch.randn(4, DIM, dtype=torch.bfloat16), torch.randn(2, DIM)]
    out = tessera.to_tokens(t)
    assert [a.dtype for a in out] == [np.float32, np.float32]
    np.testing.assert_array_equal(out[1], t[1].numpy())


def test_model_output_goes_straight_into_upsert_and_search(db, rng):
    """The PyLate flow: encode -> to_tokens -> upsert / search_batch (generated arrays, no model)."""
    embeddings = [rng.standard_normal((int(rng.integers(2, 30)), DIM)) for _ in range(50)]  # float64, as models may
    col = db.create_collection("c", DIM)
    ids = [f"d{i}" for i in range(50)]
    tokens = tessera.to_tokens(embeddings)
    col.upsert(ids, tokens)
    queries = tessera.to_tokens([rng.standard_normal((6, DIM)) for _ in range(3)])
    docs = dict(zip(ids, tokens))
    for q, hits in zip(queries, col.search_batch(queries, k=5, exact=True)):
        assert [h.id for h in hits] == [i for i, _ in ranking(q, docs, 5)]


def test_ingest_in_batches_with_and_without_progress(db, rng, capsys):
    docs = corpus(rng, 95, DIM)
    ids = list(docs)
    col = db.create_collection("c", DIM)
    assert tessera.ingest(col, ids, [docs[i] for i in ids], batch_size=10, progress=False) == 95
    assert len(col) == 95
    col2 = db.create_collection("d", DIM)
    assert tessera.ingest(col2, ids, [docs[i] for i in ids], texts=ids, batch_size=30, progress=True) == 95
    assert "95/95" in capsys.readouterr().err
    assert col2.get(["doc-0003"])[0].text == "doc-0003"
    # A bad document in the third batch: the first two are written, and the error says so.
    bad = [docs[i] for i in ids]
    bad[25] = bad[25][:, :5].copy()
    col3 = db.create_collection("e", DIM)
    with pytest.raises(tessera.InvalidInputError) as e:
        tessera.ingest(col3, ids, bad, batch_size=10, progress=False)
    assert e.value.written == 20 and len(col3) == 20
    with pytest.raises(tessera.InvalidInputError, match="batch_size"):
        tessera.ingest(col3, ids, bad, batch_size=0)


def test_mine_negatives_against_the_exact_ranking(db, rng):
    docs = corpus(rng, 120, DIM)
    col = db.create_collection("c", DIM)
    ids = list(docs)
    col.upsert(ids, [docs[i] for i in ids], texts=[f"text {i}" for i in ids])
    q = rng.standard_normal((5, DIM)).astype(np.float32)
    exact = ranking(q, docs, 40)
    order = [i for i, _ in exact]
    positives = [order[0], order[14], "not-a-doc"]
    neg, pos = col.mine_negatives("q1", q, positives, range=(10, 30), per_query=6, exact=True)
    assert len(neg) == 6
    ranks = [order.index(h.id) + 1 for h in neg]
    assert ranks == sorted(ranks) and all(10 <= r <= 30 for r in ranks)
    assert not {h.id for h in neg} & set(positives)
    assert [h.id for h in pos] == [order[0], order[14]]
    score = dict(exact)
    for h in neg + pos:
        assert abs(h.score - score[h.id]) <= 1e-3
    # Deterministic for (seed, query id); another seed, other negatives.
    again, _ = col.mine_negatives("q1", q, positives, range=(10, 30), per_query=6, exact=True)
    other, _ = col.mine_negatives("q1", q, positives, range=(10, 30), per_query=6, exact=True, seed=1)
    assert [h.id for h in again] == [h.id for h in neg] and [h.id for h in other] != [h.id for h in neg]
    with pytest.raises(tessera.InvalidInputError, match="range"):
        col.mine_negatives("q1", q, positives, range=(0, 5))
    # sentence-transformers' guards and top-n, against the naive ranking:
    # candidates ranked 10..30 that are not positives, minus those above an
    # absolute ceiling or within a margin of the best positive's score.
    best = score[order[0]]
    ceiling = (score[order[19]] + score[order[20]]) / 2
    margin = best - (score[order[24]] + score[order[25]]) / 2
    window = [i for i in order[9:30] if i not in positives]
    for kw, keep in [
        ({}, lambda s: True),
        ({"max_score": ceiling}, lambda s: s <= ceiling),
        ({"margin": margin}, lambda s: s <= best - margin),
        ({"max_score": ceiling, "margin": margin, "exclude_above_score": 0.99}, lambda s: s <= min(ceiling, best - margin, 0.99 * best)),
    ]:
        eligible = [i for i in window if keep(score[i])]
        top, _ = col.mine_negatives("q1", q, positives, range=(10, 30), per_query=6, exact=True, sampling="top", **kw)
        assert [h.id for h in top] == eligible[:6], kw
        sampled, _ = col.mine_negatives("q1", q, positives, range=(10, 30), per_query=6, exact=True, **kw)
        assert {h.id for h in sampled} <= set(eligible) and len(sampled) == min(6, len(eligible)), kw
    # A margin needs a positive to measure from: none stored, no negatives.
    none, _ = col.mine_negatives("q1", q, ["not-a-doc"], range=(10, 30), exact=True, margin=0.1)
    assert none == []
