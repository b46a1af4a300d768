"""Re-encoding a collection with another model (tiny random models from
encoder_reference, the stored tokens checked against the numpy reference
encoder): every text encoded again, texts and payloads kept, writes made
during the reindex carried over, refusals that change nothing, and the swap's
crash safety — each state a crash can leave on disk opened as one version,
and a reindex killed at random moments."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import encoder_reference as R
import tessera

WORDS = [w for w in R.DEFAULT_WORDS if w.isalpha()]


def texts(n: int, seed: int) -> list:
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))) for _ in range(n)]


def assert_encoded_by(col, model, expect: dict) -> None:
    """Every document of `col` is `expect`'s (id → text), its tokens `model`'s encoding of its text."""
    ids = sorted(expect)
    assert len(col) == len(ids)
    got = col.get(ids, tokens=True)
    refs = R.reference_encode(model, [expect[i] for i in ids], is_query=False)
    for i, d, ref in zip(ids, got, refs):
        assert d is not None, i
        assert d.text == expect[i]
        np.testing.assert_allclose(d.tokens.astype(np.float64), ref, atol=2e-3, err_msg=i)


def collection_folders(db_path: Path) -> list:
    return sorted(p.name for p in (db_path / "collections").iterdir())


@pytest.fixture
def models(tmp_path):
    return (
        R.write_tiny_model(tmp_path / "model-a", "bert", seed=1),
        R.write_tiny_model(tmp_path / "model-b", "bert", seed=2),
    )


def test_reindex_encodes_every_text_with_the_new_model(tmp_path, models):
    a, b = models
    docs = dict(zip([f"d{i}" for i in range(40)], texts(40, 0)))
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", model=a)
        ids = list(docs)
        col.upsert(ids, texts=[docs[i] for i in ids], payloads=[{"n": n} for n in range(len(ids))])
        col.flush()
        col.upsert(["late"], texts=["written after the flush"])
        docs["late"] = "written after the flush"
        col.delete(["d3"])
        del docs["d3"]
        assert_encoded_by(col, a, docs)
        seen = []
        report = db.reindex("c", b, progress=lambda done, total: seen.append((done, total)))
        assert report["documents"] == len(docs)
        assert report["model"]["path"] == str(Path(b).resolve())
        assert seen[0] == (0, len(docs)) and seen[-1] == (len(docs), len(docs))
        # The handle taken before the reindex answers with the new version.
        assert col.model == report["model"]
        assert_encoded_by(col, b, docs)
        assert col.get(["d5"])[0].payload == {"n": 5}
        # Text queries use the new model: the ranking is the reference's under b.
        query = " ".join(WORDS[:2])
        qv = R.reference_encode(b, [query], is_query=True)[0]
        ref_docs = {i: R.reference_encode(b, [t], is_query=False)[0].astype(np.float16) for i, t in docs.items()}
        scores = {i: float((qv @ d.astype(np.float64).T).max(axis=1).sum()) for i, d in ref_docs.items()}
        hits = col.search(query, k=5, exact=True)
        for h in hits:
            assert abs(h.score - scores[h.id]) < 2e-3
        assert [h.id for h in hits] == sorted(scores, key=lambda i: (-scores[i], i))[:5]
        # Writes go on through the old handle, into the new version.
        col.upsert(["new"], texts=["after the reindex"])
        docs["new"] = "after the reindex"
        assert_encoded_by(col, b, docs)
    assert collection_folders(tmp_path / "db") == ["c"]
    with tessera.Database(tmp_path / "db") as db:
        col = db.collection("c")
        assert col.model["path"] == str(Path(b).resolve())
        assert_encoded_by(col, b, docs)


def test_refusals_change_nothing(tmp_path, models):
    a, b = models
    narrow = R.write_tiny_model(tmp_path / "narrow", "bert", seed=3, dense=((8, False),))
    docs = dict(zip(["x", "y"], texts(2, 1)))
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", model=a)
        col.upsert(list(docs), texts=list(docs.values()))
        with pytest.raises(tessera.InvalidInputError, match="8-dimensional"):
            db.reindex("c", narrow)
        with pytest.raises(tessera.NotFoundError):
            db.reindex("nope", b)
        with pytest.raises(tessera.InvalidInputError, match="model"):
            db.reindex("c", tmp_path / "missing")
        # A document stored as tokens without text cannot be encoded again.
        tokens = R.reference_encode(a, ["alone"], is_query=False)[0].astype(np.float32)
        col.upsert(["tokens-only"], [tokens])
        with pytest.raises(tessera.InvalidInputError, match='"tokens-only" .* has no text'):
            db.reindex("c", b)
        assert col.model["path"] == str(Path(a).resolve())
        assert collection_folders(tmp_path / "db") == ["c"]
        col.delete(["tokens-only"])
        assert_encoded_by(col, a, docs)
        # Refused while one runs: a second reindex started from its progress callback.
        errors = []

        def again(done, total):
            if not errors:
                try:
                    db.reindex("c", b)
                except tessera.TesseraError as e:
                    errors.append(e)

        db.reindex("c", b, progress=again)
        assert errors and "reindexed already" in str(errors[0])
        assert_encoded_by(col, b, docs)

        # An exception in the progress callback stops the reindex: nothing changes.
        def interrupt(done, total):
            if done > 0:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            db.reindex("c", a, progress=interrupt)
        assert col.model["path"] == str(Path(b).resolve())
        assert_encoded_by(col, b, docs)
        assert collection_folders(tmp_path / "db") == ["c"]

        # A drop while the reindex copies: the reindex fails, the drop holds, nothing is left.
        def drop(done, total):
            if done > 0:
                db.drop_collection("c")

        with pytest.raises(tessera.TesseraError):
            db.reindex("c", a, progress=drop)
        assert db.list_collections() == []
        assert collection_folders(tmp_path / "db") == []
        col = db.create_collection("c", model=a)
        col.upsert(list(docs), texts=list(docs.values()))
    with tessera.Database(tmp_path / "db", read_only=True) as ro:
        with pytest.raises(tessera.TesseraError, match="read-only"):
            ro.reindex("c", a)


def test_writes_during_the_reindex_are_carried_over(tmp_path, models):
    """Writes made while the reindex copies (from its progress callback, so that
    they land mid-copy) end up in the new version, encoded by the new model."""
    a, b = models
    n = 1200
    docs = dict(zip([f"d{i}" for i in range(n)], texts(n, 2)))
    rnd = random.Random(3)
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", model=a, index="none")
        ids = list(docs)
        for s in range(0, n, 300):
            col.upsert(ids[s : s + 300], texts=[docs[i] for i in ids[s : s + 300]])
        col.flush()
        written = []

        def write(done, total):
            if 0 < done < total:
                # Replace some, add some, delete some (also ones not yet copied).
                up = rnd.sample(sorted(docs), 20)
                fresh = [f"new{len(written)}-{j}" for j in range(5)]
                new_texts = texts(25, len(written) + 10)
                col.upsert(up + fresh, texts=new_texts)
                docs.update(zip(up + fresh, new_texts))
                gone = rnd.sample(sorted(docs), 7)
                col.delete(gone)
                for g in gone:
                    del docs[g]
                written.append(len(up) + len(fresh) + len(gone))

        seq = col.last_seq()
        report = db.reindex("c", b, progress=write)
        assert col.last_seq() >= seq + len(written), "the batch sequence goes on from the old version's"
        assert written, "the callback wrote during the copy"
        assert report["caught_up"] >= len(set(docs) - set(ids)), report
        assert report["documents"] == len(docs)
        assert_encoded_by(col, b, docs)


def test_concurrent_writer_thread(tmp_path, models):
    """A thread writing all along the reindex: nothing it wrote is lost or left with the old model's tokens."""
    import threading

    a, b = models
    docs = dict(zip([f"d{i}" for i in range(600)], texts(600, 4)))
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", model=a, index="none")
        col.upsert(list(docs), texts=list(docs.values()))
        stop = threading.Event()
        mine = {}

        def writer():
            j = 0
            while not stop.is_set():
                t = texts(1, 100 + j)[0]
                db.collection("c").upsert([f"w{j}"], texts=[t])
                mine[f"w{j}"] = t
                j += 1

        th = threading.Thread(target=writer)
        th.start()
        try:
            db.reindex("c", b)
        finally:
            stop.set()
            th.join()
        docs.update(mine)
        assert mine, "the thread wrote"
        assert_encoded_by(col, b, docs)


def _copy_db(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    (dst / "LOCK").unlink(missing_ok=True)


def test_every_state_a_crash_leaves_opens_as_one_version(tmp_path, models):
    """The swap's on-disk states, made by hand: a half-built `.reindex-` folder
    (the old version stays), a complete `.swap-` folder beside the old one or
    with the old one already moved aside (the new version wins; a writer's open
    finishes the renames, a reader reads it and changes nothing)."""
    a, b = models
    docs = dict(zip([f"d{i}" for i in range(30)], texts(30, 5)))
    old = tmp_path / "old"
    with tessera.Database(old) as db:
        db.create_collection("c", model=a).upsert(list(docs), texts=list(docs.values()))
        db.create_collection("other", model=a).upsert(["o"], texts=["other collection"])
    new = tmp_path / "new"
    _copy_db(old, new)
    with tessera.Database(new) as db:
        db.reindex("c", b)
    reindexed = new / "collections" / "c"

    def case(name, setup, expect_model):
        d = tmp_path / name
        _copy_db(old, d)
        setup(d / "collections")
        with tessera.Database(d, read_only=True) as ro:
            assert_encoded_by(ro.collection("c"), expect_model, docs)
        before = collection_folders(d)
        with tessera.Database(d) as db:
            assert_encoded_by(db.collection("c"), expect_model, docs)
            assert len(db.collection("other")) == 1
        assert collection_folders(d) == ["c", "other"], (name, before)
        with tessera.Database(d) as db:
            assert_encoded_by(db.collection("c"), expect_model, docs)

    case("building", lambda c: shutil.copytree(reindexed, c / ".reindex-c"), a)
    case("committed", lambda c: shutil.copytree(reindexed, c / ".swap-c"), b)

    def moved_aside(c):
        shutil.copytree(reindexed, c / ".swap-c")
        (c / "c").rename(c / ".drop-c-1")

    case("moved-aside", moved_aside, b)


KILLED = """
import sys, tessera
db = tessera.Database(sys.argv[1])
def tell(done, total):
    print(done, total, flush=True)
db.reindex("c", sys.argv[2], progress=tell)
print("done", flush=True)
"""


def test_reindex_killed_at_random_moments_leaves_one_version(tmp_path, models):
    a, b = models
    docs = dict(zip([f"d{i}" for i in range(800)], texts(800, 6)))
    base = tmp_path / "base"
    with tessera.Database(base) as db:
        col = db.create_collection("c", model=a, index="none")
        col.upsert(list(docs), texts=list(docs.values()))
    rnd = random.Random(7)
    outcomes = set()
    for round_ in range(6):
        d = tmp_path / f"r{round_}"
        _copy_db(base, d)
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED, str(d), str(b)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
        )
        # Killed after some progress lines (round 5: after the end).
        lines = 0
        stop_after = rnd.randint(0, 4) if round_ < 5 else 10**9
        for line in child.stdout:
            lines += 1
            if lines > stop_after:
                time.sleep(rnd.random() * 0.05)
                break
        child.send_signal(signal.SIGKILL)
        child.wait()
        with tessera.Database(d) as db:
            col = db.collection("c")
            model = b if col.model["path"] == str(Path(b).resolve()) else a
            outcomes.add(model)
            assert_encoded_by(col, model, docs)
        assert collection_folders(d) == ["c"]
    assert b in outcomes, "the last round ran to completion"


def test_cli_reindex(tmp_path, models):
    from conftest import require_tessera_bin

    a, b = models
    docs = dict(zip(["x", "y", "z"], texts(3, 8)))
    with tessera.Database(tmp_path / "db") as db:
        db.create_collection("c", model=a).upsert(list(docs), texts=list(docs.values()))
    exe = require_tessera_bin()
    out = subprocess.run(
        [str(exe), "reindex", "--db", str(tmp_path / "db"), "--collection", "c", "--model", str(b), "--json"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["documents"] == 3 and report["model"]["path"] == str(Path(b).resolve())
    with tessera.Database(tmp_path / "db") as db:
        assert_encoded_by(db.collection("c"), b, docs)
    bad = subprocess.run(
        [str(exe), "reindex", "--db", str(tmp_path / "db"), "--collection", "c", "--model", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "model" in bad.stderr


def test_models_texts_and_reindex_through_the_server(tmp_path, make_server, models):
    """`tessera serve --model NAME=DIR`: a collection created over HTTP bound
    to a named model, `/v1/encode` by name, batches of text queries and text
    reranks, and a reindex started over the API — each checked against the
    numpy reference and the embedded engine."""
    a, b = models
    server = make_server(args=("--model", f"a={a}", "--model", f"b={b}"))
    client = tessera.Client(server.url)
    assert sorted(m["name"] for m in client.models()) == ["a", "b"]
    for v, r in zip(client.encode(["one two"], model="b", is_query=True), R.reference_encode(b, ["one two"], True)):
        np.testing.assert_allclose(v.astype(np.float64), r, atol=2e-3)
    with pytest.raises(tessera.NotFoundError, match="no model \"c\"; the server has a, b"):
        client.encode(["x"], model="c")
    with pytest.raises(tessera.NotFoundError, match="no model"):
        client.create_collection("bad", model="nope")
    with pytest.raises(tessera.InvalidInputError, match="dim is required"):
        client.create_collection("bad")
    assert client.list_collections() == []
    col = client.create_collection("c", model="a")
    assert col.dim == R.reference_dim(a)
    assert col.model["identity"]["architecture"] == "bert"
    docs = dict(zip([f"d{i}" for i in range(50)], texts(50, 9)))
    col.upsert(list(docs), texts=list(docs.values()))
    # A batch of texts answers what each text alone does (embedded, below) and the reference ranks.
    queries = texts(4, 10)
    batch = col.search_batch(queries, k=5, exact=True)
    hybrid = col.search_batch(queries, k=5)
    rr = col.rerank(queries[0], ["d1", "d2", "nope"])
    assert rr.missing == ["nope"]
    with pytest.raises(tessera.InvalidInputError, match="not a mix"):
        col.search_batch([queries[0], np.ones((2, col.dim), np.float32)])
    qv = R.reference_encode(a, [queries[0]], is_query=True)[0]
    for h in rr.hits:
        d = R.reference_encode(a, [docs[h.id]], is_query=False)[0].astype(np.float16).astype(np.float64)
        assert abs(h.score - float((qv @ d.T).max(axis=1).sum())) < 2e-3
    status = client.reindex("c", "b")
    assert status["state"] == "done" and status["documents"] == len(docs), status
    assert col.model["identity"]["checksum"] == [m for m in client.models() if m["name"] == "b"][0]["identity"]["checksum"]
    after = col.search_batch(queries, k=5, exact=True)
    server.stop()
    with tessera.Database(tmp_path / "server-db") as db:
        local = db.collection("c")
        assert_encoded_by(local, b, docs)
        for q, hits in zip(queries, after):
            assert [(h.id, round(h.score, 4)) for h in hits] == [(h.id, round(h.score, 4)) for h in local.search(q, k=5, exact=True)]
        # Before the reindex the server answered as model a: rebind to check it embedded.
        local.bind_model(a)
    with tessera.Database(tmp_path / "server-db") as db:
        db.reindex("c", a)
        local = db.collection("c")
        for q, hits, hy in zip(queries, batch, hybrid):
            assert [h.id for h in hits] == [h.id for h in local.search(q, k=5, exact=True)]
            assert [h.id for h in hy] == [h.id for h in local.search(q, k=5)]
            assert [h.id for h in hy] == [h.id for h in local.search_batch([q], k=5)[0]]
