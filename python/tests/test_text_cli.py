"""Text in, through the `tessera` command line and a tiny random model
(encoder_reference.write_tiny_model): `tessera encode`, `tessera ingest
--model` of a JSONL with texts only, and `tessera search --model` with a
text query or a folder of query texts. The rankings are checked against an
independent reference: the numpy encoder of encoder_reference.py and a naive
f64 MaxSim over every document."""

from __future__ import annotations

import json
import random
import subprocess

import numpy as np
import pytest

import encoder_reference as R
from conftest import require_tessera_bin

WORDS = R.DEFAULT_WORDS


def corpus(n=60, seed=5):
    rng = random.Random(seed)
    return [
        {"id": f"d{i}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))), "lang": "en"}
        for i in range(n)
    ]


QUERIES = ["quick brown fox", "late interaction search engine", "river bank money", "the cat sat on the mat"]


def run(*args, ok=True):
    p = subprocess.run([str(require_tessera_bin()), *map(str, args)], capture_output=True, text=True)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def reference_ranking(model, docs, query, k):
    """Exact MaxSim in f64 of the reference encoder's vectors (documents stored as f16)."""
    dv = R.reference_encode(model, [d["text"] for d in docs], is_query=False)
    qv = R.reference_encode(model, [query], is_query=True)[0]
    scores = [float((qv @ d.astype(np.float16).astype(np.float64).T).max(axis=1).sum()) for d in dv]
    order = sorted(range(len(docs)), key=lambda i: (-scores[i], docs[i]["id"]))
    return [(docs[i]["id"], scores[i]) for i in order[:k]]


def assert_same_ranking(ours, reference, tol=2e-3):
    """Ids in order up to ties, scores within tol."""
    ref = dict(reference)
    assert len(ours) == len(reference)
    for (oid, os_), (rid, rs) in zip(ours, reference):
        assert abs(os_ - rs) <= tol, (oid, os_, rid, rs)
        if oid != rid:
            assert oid in ref and abs(ref[oid] - rs) <= tol, f"{oid} instead of {rid}, not tied"


def read_run(path):
    out = {}
    for line in path.read_text().splitlines():
        q, _, d, _, s, _ = line.split()
        out.setdefault(q, []).append((d, float(s)))
    return out


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_text_ingest_and_search_match_the_reference(tmp_path, arch):
    model = R.write_tiny_model(tmp_path / "model", arch, seed=3, document_length=16, query_length=12)
    docs = corpus()
    data = write_jsonl(tmp_path / "docs.jsonl", docs)
    db = tmp_path / "db"
    out = run("ingest", "--db", db, "--collection", "c", data, "--model", model, "--index", "none").stdout
    assert "60 texts encoded" in out, out
    # A folder of query texts (no tokens.npy): every query, exact, as a run.
    qdir = tmp_path / "q"
    qdir.mkdir()
    write_jsonl(qdir / "queries.jsonl", [{"id": f"q{i}", "text": t} for i, t in enumerate(QUERIES)])
    run("search", "--db", db, "--collection", "c", "--queries", qdir, "--model", model,
        "--exact", "--k", 10, "--run", tmp_path / "run")
    got = read_run(tmp_path / "run")
    for i, q in enumerate(QUERIES):
        assert_same_ranking(got[f"q{i}"], reference_ranking(model, docs, q, 10))
    # One text query: printed hits, with the documents' texts.
    lines = run("search", "--db", db, "--collection", "c", "--model", model, "--query", QUERIES[0],
                "--k", 3).stdout.splitlines()
    expect = reference_ranking(model, docs, QUERIES[0], 3)
    texts = {d["id"]: d["text"] for d in docs}
    assert [line.split()[2] for line in lines] == [d for d, _ in expect]
    assert texts[expect[0][0]] in lines[0]


def test_encode_writes_a_bulk_folder_that_ingests_and_searches(tmp_path):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=4)
    docs = corpus(40, seed=9)
    # Records keep their fields; a long text is cut at the document length and counted.
    docs[3]["text"] = " ".join(WORDS)
    write_jsonl(tmp_path / "docs.jsonl", docs)
    out = run("encode", "--model", model, tmp_path / "docs.jsonl", "--out", tmp_path / "bulk").stdout
    # The tiny vocabulary is whole words: [CLS] [D] words [SEP] within document_length 16.
    cut = sum(len(d["text"].split()) > 16 - 3 for d in docs)
    assert cut >= 1 and f"encoded 40 texts" in out and f"{cut} texts cut" in out, out
    tokens = np.load(tmp_path / "bulk/tokens.npy")
    offsets = np.load(tmp_path / "bulk/offsets.npy")
    ref = R.reference_encode(model, [d["text"] for d in docs], is_query=False)
    assert tokens.dtype == np.float16 and offsets.dtype == np.uint64 and len(offsets) == 41
    for i, r in enumerate(ref):
        got = tokens[offsets[i]:offsets[i + 1]].astype(np.float64)
        assert got.shape == r.shape
        np.testing.assert_allclose(got, r, atol=2e-3)
    records = [json.loads(line) for line in (tmp_path / "bulk/docs.jsonl").read_text().splitlines()]
    assert records == docs
    # Queries: queries.jsonl, the query rules ([MASK] expansion to query_length).
    write_jsonl(tmp_path / "q.jsonl", [{"id": "q0", "text": QUERIES[0]}])
    run("encode", "--model", model, "--queries", tmp_path / "q.jsonl", "--out", tmp_path / "qbulk")
    q = np.load(tmp_path / "qbulk/tokens.npy")
    np.testing.assert_allclose(q.astype(np.float64), R.reference_encode(model, [QUERIES[0]], True)[0], atol=2e-3)
    # The bulk folders ingest and search as any other.
    db = tmp_path / "db"
    run("ingest", "--db", db, "--collection", "c", tmp_path / "bulk", "--index", "none")
    run("search", "--db", db, "--collection", "c", "--queries", tmp_path / "qbulk", "--exact", "--k", 5,
        "--run", tmp_path / "run")
    assert_same_ranking(read_run(tmp_path / "run")["q0"], reference_ranking(model, docs, QUERIES[0], 5))
    # encode never overwrites.
    p = run("encode", "--model", model, tmp_path / "q.jsonl", "--out", tmp_path / "qbulk", ok=False)
    assert p.returncode != 0 and "not empty" in p.stderr


def test_bad_text_input_is_refused_and_nothing_written(tmp_path):
    model = R.write_tiny_model(tmp_path / "model", "bert", seed=6, dense=[(8, False)])
    db = tmp_path / "db"
    good = [{"id": "a", "text": "quick brown fox"}, {"id": "b", "text": "lazy dog"}]
    # A record with neither tokens nor text aborts its batch: nothing written.
    bad = write_jsonl(tmp_path / "bad.jsonl", good + [{"id": "c", "text": "  "}])
    p = run("ingest", "--db", db, "--collection", "c", bad, "--model", model, ok=False)
    assert p.returncode != 0 and "bad.jsonl:3" in p.stderr and "no \"tokens\" and no \"text\"" in p.stderr
    info = json.loads(run("info", "--db", db, "--json").stdout)
    assert all(c["documents"] == 0 for c in info["collections"]), info
    # Without --model, a record without tokens is refused, naming the flag.
    p = run("ingest", "--db", tmp_path / "db2", "--collection", "c", write_jsonl(tmp_path / "g.jsonl", good), ok=False)
    assert "--model" in p.stderr
    # A model whose dim differs from the collection's.
    run("ingest", "--db", db, "--collection", "c", write_jsonl(tmp_path / "g.jsonl", good), "--model", model)
    other = R.write_tiny_model(tmp_path / "other", "bert", seed=6, dense=[(12, False)])
    p = run("ingest", "--db", db, "--collection", "c", tmp_path / "g.jsonl", "--model", other, ok=False)
    assert "12-dimensional" in p.stderr and "8-dimensional" in p.stderr, p.stderr
    p = run("search", "--db", db, "--collection", "c", "--model", other, "--query", "fox", ok=False)
    assert "12-dimensional" in p.stderr
    # A missing model file, named.
    (model / "tokenizer.json").unlink()
    p = run("search", "--db", db, "--collection", "c", "--model", model, "--query", "fox", ok=False)
    assert "tokenizer.json" in p.stderr and "missing" in p.stderr
    # Without --model, the collection's bound model (its file is missing here).
    p = run("search", "--db", db, "--collection", "c", "--query", "fox", ok=False)
    assert "tokenizer.json" in p.stderr and "--model" in p.stderr, p.stderr


def test_model_flags_that_would_do_nothing_or_mix_models_are_refused(tmp_path):
    import tessera

    model = R.write_tiny_model(tmp_path / "model", "bert", seed=21, dense=[(8, False)])
    twin = R.write_tiny_model(tmp_path / "twin", "bert", seed=22, dense=[(8, False)])
    db = tmp_path / "db"
    # A bulk folder's tokens come from its token file: --model would be unused.
    write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "text": "quick fox"}])
    run("encode", "--model", model, tmp_path / "t.jsonl", "--out", tmp_path / "bulk")
    p = run("ingest", "--db", db, "--collection", "c", tmp_path / "bulk", "--model", model, ok=False)
    assert "bulk folder" in p.stderr, p.stderr
    # A first record whose tokens have another dimension than the model: nothing created.
    write_jsonl(tmp_path / "mixed.jsonl", [{"id": "a", "tokens": [[1.0, 0.0, 0.0, 0.0]]}, {"id": "b", "text": "fox"}])
    p = run("ingest", "--db", db, "--collection", "n", tmp_path / "mixed.jsonl", "--model", model, ok=False)
    assert "8-dimensional" in p.stderr and "4-dimensional" in p.stderr, p.stderr
    assert all(c["name"] != "n" for c in json.loads(run("info", "--db", db, "--json").stdout)["collections"])
    # A collection bound to one model refuses another of the same dimension.
    with tessera.Database(db) as d:
        d.create_collection("bound", model=model).upsert(["a"], texts=["quick fox"])
    p = run("search", "--db", db, "--collection", "bound", "--model", twin, "--query", "fox", ok=False)
    assert "is bound to the model" in p.stderr, p.stderr
    p = run("ingest", "--db", db, "--collection", "bound", tmp_path / "t.jsonl", "--model", twin, ok=False)
    assert "is bound to the model" in p.stderr, p.stderr
    run("search", "--db", db, "--collection", "bound", "--model", model, "--query", "fox")
    # --bm25-only encodes no query.
    p = run("search", "--db", db, "--collection", "bound", "--model", model, "--query", "fox", "--bm25-only", ok=False)
    assert p.returncode != 0 and "--bm25-only" in p.stderr


def test_a_collection_made_from_texts_is_bound_to_their_model(tmp_path):
    import tessera

    model = R.write_tiny_model(tmp_path / "model", "bert", seed=31)
    docs = corpus(20, seed=3)
    db = tmp_path / "db"
    run("ingest", "--db", db, "--collection", "c", write_jsonl(tmp_path / "a.jsonl", docs[:10]), "--model", model)
    # More texts and a text query need no --model: the collection's own model encodes them.
    out = run("ingest", "--db", db, "--collection", "c", write_jsonl(tmp_path / "b.jsonl", docs[10:])).stdout
    assert "10 texts encoded" in out, out
    lines = run("search", "--db", db, "--collection", "c", "--query", QUERIES[0], "--k", 3).stdout.splitlines()
    assert [line.split()[2] for line in lines] == [d for d, _ in reference_ranking(model, docs, QUERIES[0], 3)]
    with tessera.Database(db) as d:
        assert d.collection("c").model["path"] == str(model.resolve())
    # A collection of tokens has no model: a text query says how to give one.
    write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "tokens": [[1.0] * 16]}])
    run("ingest", "--db", db, "--collection", "plain", tmp_path / "t.jsonl")
    p = run("search", "--db", db, "--collection", "plain", "--query", "fox", ok=False)
    assert "has no model" in p.stderr and "--model" in p.stderr, p.stderr


def test_demo_with_a_model_answers_text_queries(tmp_path):
    """`tessera demo --model DIR`: after the token demo, a collection bound to
    the model built from passages given as text, and text queries whose hits
    are the reference ranking of those passages (read back from the database)."""
    import tessera

    model = R.write_tiny_model(tmp_path / "model", "bert", seed=21, vocab_words=WORDS + ["passage", "token", "write"])
    out = run("demo", "--db", tmp_path / "db", "--docs", 300, "--queries", 5, "--model", model).stdout
    assert "collection demo_text bound to" in out, out
    queries = [line.split('"')[1] for line in out.splitlines() if line.startswith("text query ")]
    assert len(queries) == 3, out
    with tessera.Database(tmp_path / "db") as db:
        col = db.collection("demo_text")
        docs = [{"id": d.id, "text": d.text} for d in col.get([f"p{i}" for i in range(len(col))])]
    blocks = out.split("text query ")[1:]
    for q, block in zip(queries, blocks):
        # "  1. p3  score 0.1234  the passage"
        hits = [line.split() for line in block.splitlines()[1:] if line.strip().split(".")[0].isdigit()]
        shown = [(h[1], float(h[3])) for h in hits]
        assert len(shown) == 3, block
        assert_same_ranking(shown, reference_ranking(model, docs, q, len(shown)), tol=2e-3)
    bad = run("demo", "--db", tmp_path / "db2", "--model", tmp_path / "nothing", ok=False)
    assert bad.returncode != 0 and "model" in bad.stderr and not (tmp_path / "db2").exists()
