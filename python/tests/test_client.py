"""tessera.Client against a real `tessera serve`: the embedded API's answers."""

from __future__ import annotations

import numpy as np
import pytest

import tessera
from conftest import corpus, load, maxsim

DIM = 16


def test_client_answers_as_the_embedded_engine(server, tmp_path, rng):
    docs = corpus(rng, 150, DIM)
    client = tessera.Client(server.url)
    with tessera.Database(tmp_path / "embedded") as db:
        remote = client.create_collection("c", DIM)
        local = db.create_collection("c", DIM)
        for col in (remote, local):
            load(col, docs)
        assert len(remote) == len(local) == 150
        queries = [rng.standard_normal((int(rng.integers(1, 9)), DIM)).astype(np.float32) for _ in range(6)]
        options = [
            dict(k=10),
            dict(k=10, exact=True),
            dict(k=5, candidates=20, filter={"field": "even", "eq": True}),
            dict(k=5, text="topic 2"),
            dict(k=5, text="topic 1", fusion="weighted", weights={"text": 2.0}),
            dict(k=5, text="topic 3", rank="linear", rank_norm="minmax", rank_weights={"bm25": 0.5}),
            dict(k=5, ids=["doc-0001", "doc-0005", "doc-0009"], rerank_only=True),
        ]
        for q in queries:
            for o in options:
                assert remote.search(q, **o) == local.search(q, **o), o
            # Scores are the engine's f32 values, bit for bit, and true MaxSim.
            for h in remote.search(q, k=3, exact=True):
                assert abs(h.score - maxsim(q, docs[h.id])) <= 1e-3
        assert remote.search(text="passage doc-0011", k=3) == local.search(text="passage doc-0011", k=3)
        assert remote.ranking() == local.ranking() == {"rank": "maxsim"}
        assert remote.search_batch(queries, k=4) == local.search_batch(queries, k=4)
        r, l = remote.rerank(queries[0], ["doc-0002", "nope", "doc-0003"]), local.rerank(queries[0], ["doc-0002", "nope", "doc-0003"])
        assert r.hits == l.hits and r.missing == l.missing == ["nope"]
        for a, b in zip(remote.get(["doc-0004", "nope"], tokens=True), local.get(["doc-0004", "nope"], tokens=True)):
            if b is None:
                assert a is None
                continue
            assert (a.id, a.n_tokens, a.text, a.payload) == (b.id, b.n_tokens, b.text, b.payload)
            np.testing.assert_array_equal(a.tokens, b.tokens)
            assert a.tokens.dtype == np.float16
        g = remote.get(["doc-0004"])[0]
        assert g.tokens is None and g.n_tokens == docs["doc-0004"].shape[0]
        assert remote.delete(["doc-0001", "nope"]) == local.delete(["doc-0001", "nope"]) == 1
        remote.flush()
        local.flush()
        rs, ls = remote.stats(), local.stats()
        for key in ("name", "dim", "index", "text", "durability", "documents", "tokens", "segments"):
            assert rs[key] == ls[key], key
        remote.compact()
        assert len(remote) == 149
    assert client.list_collections() == ["c"]
    assert client.open_or_create_collection("c", DIM).name == "c"
    client.drop_collection("c")
    assert client.list_collections() == []
    client.close()


def test_client_raises_the_embedded_error_classes_and_writes_nothing_on_bad_input(server, rng):
    with tessera.Client(server.url) as client:
        col = client.create_collection("c", DIM)
        ok = rng.standard_normal((3, DIM)).astype(np.float32)
        col.upsert(["keep"], [ok])
        nan = ok.copy()
        nan[1, 1] = np.nan
        bad = [
            dict(ids=["x"], tokens=[ok.astype(np.int64)]),
            dict(ids=["x", "y"], tokens=[ok, ok[:, :4].copy()]),
            dict(ids=["x", "y"], tokens=[ok, nan]),
            dict(ids=["x"], tokens=[ok[0]]),
            dict(ids=[1], tokens=[ok]),
            dict(ids=["x", "x"], tokens=[ok, ok]),
            dict(ids=["x"], tokens=[ok[:0]]),
            dict(ids=["x", "y"], tokens=[ok]),
            dict(ids=["x"], tokens=[ok], payloads=[{"a": float("nan")}]),
            dict(ids=["x"], tokens=[ok], payloads=[{"a": object()}]),
        ]
        for kwargs in bad:
            with pytest.raises(tessera.InvalidInputError):
                col.upsert(**kwargs)
        assert len(col) == 1 and col.get(["x", "y"]) == [None, None]
        with pytest.raises(tessera.InvalidInputError, match="k must be"):
            col.search(ok, k=0)
        with pytest.raises(tessera.InvalidInputError, match="unknown fusion"):
            col.search(ok, text="a", fusion="max")
        with pytest.raises(tessera.NotFoundError):
            client.collection("nope")
        with pytest.raises(tessera.AlreadyExistsError):
            client.create_collection("c", DIM)
        with pytest.raises(tessera.AlreadyExistsError, match="dim"):
            client.open_or_create_collection("c", DIM * 2)
        with pytest.raises(tessera.InvalidInputError, match="unknown index"):
            client.create_collection("d", DIM, index="ivf")


def test_large_upserts_are_split_under_the_body_limit(server, rng):
    docs = corpus(rng, 300, DIM, 20, 60)
    client = tessera.Client(server.url, max_body_bytes=64 << 10, max_batch_docs=50)
    col = client.create_collection("c", DIM)
    ids = list(docs)
    assert col.upsert(ids, [docs[i] for i in ids]) == 300
    assert len(col) == 300
    got = col.get(ids[::37], tokens=True)
    for d in got:
        np.testing.assert_array_equal(d.tokens, docs[d.id].astype(np.float16))
    # The same through tessera.ingest with a flat array and offsets.
    flat = np.concatenate([docs[i] for i in ids])
    offsets = np.concatenate([[0], np.cumsum([docs[i].shape[0] for i in ids])])
    col2 = client.create_collection("flat", DIM)
    assert col2.upsert(ids, flat, offsets=offsets) == 300
    q = rng.standard_normal((4, DIM)).astype(np.float32)
    assert col2.search(q, k=10, exact=True) == col.search(q, k=10, exact=True)


def test_api_keys(make_server, rng):
    rw, ro = "rw-key-0123456789abcdef", "ro-key-0123456789abcdef"
    server = make_server(f"rw:{rw}\nro:{ro}\n")
    with pytest.raises(tessera.AuthenticationError):
        tessera.Client(server.url).list_collections()
    with pytest.raises(tessera.AuthenticationError):
        tessera.Client(server.url, api_key="wrong-key-0123456789").list_collections()
    writer = tessera.Client(server.url, api_key=rw)
    col = writer.create_collection("c", DIM)
    col.upsert(["a"], [rng.standard_normal((2, DIM)).astype(np.float32)])
    reader = tessera.Client(server.url, api_key=ro).collection("c")
    assert [h.id for h in reader.search(np.ones((1, DIM), np.float32), k=1)] == ["a"]
    with pytest.raises(tessera.AuthenticationError) as e:
        reader.upsert(["b"], [np.ones((1, DIM), np.float32)])
    assert e.value.code == "permission_denied"


def test_unreachable_server_and_bad_urls():
    with pytest.raises(tessera.InvalidInputError):
        tessera.Client("localhost:7700")
    with pytest.raises(tessera.UnavailableError, match="cannot reach"):
        tessera.Client("http://127.0.0.1:9", timeout=2).list_collections()


def test_backup_through_the_server_restores_with_the_embedded_engine(server, tmp_path, rng):
    docs = corpus(rng, 30, DIM)
    client = tessera.Client(server.url)
    col = client.create_collection("c", DIM)
    load(col, docs)
    col.delete(["doc-0000"])
    report = client.backup("first")
    assert report["path"] == str(server.backups / "first")
    assert report["collections"][0]["documents"] == 29
    with pytest.raises(tessera.AlreadyExistsError):
        client.backup("first")
    with pytest.raises(tessera.InvalidInputError):
        client.backup("../elsewhere")
    assert client.backup()["path"].startswith(str(server.backups / "backup-"))
    col.upsert(["late"], [docs["doc-0001"]])
    tessera.restore(server.backups / "first", tmp_path / "restored")
    with tessera.Database(tmp_path / "restored") as db:
        c = db.collection("c")
        assert len(c) == 29 and c.get(["late", "doc-0000"]) == [None, None]
        d = c.get(["doc-0005"], tokens=True)[0]
        np.testing.assert_array_equal(d.tokens, docs["doc-0005"].astype(np.float16))
        assert d.text == "passage doc-0005 on topic 1"


def test_numpy_ids_and_payload_values_are_taken_embedded_and_remote(server, tmp_path, rng):
    """numpy arrays of ids and numpy scalars or arrays in payloads are their
    Python values, embedded and over the client alike (they were refused)."""
    remote = tessera.Client(server.url).create_collection("c", DIM)
    with tessera.Database(tmp_path / "embedded") as db:
        local = db.create_collection("c", DIM)
        tokens = [rng.standard_normal((3, DIM)).astype(np.float32) for _ in range(3)]
        payloads = [{"n": np.int64(i), "x": np.float32(0.5), "v": np.arange(2, dtype=np.int32)} for i in range(3)]
        for col in (remote, local):
            assert col.upsert(np.array(["a", "b", "c"]), tokens, payloads=payloads) == 3
            got = col.get(np.array(["b", "zz"]))
            assert got[0].payload == {"n": 1, "x": 0.5, "v": [0, 1]} and got[1] is None
            hits = col.search(tokens[0], k=2, ids=np.array(["a", "c"]), rerank_only=True)
            assert sorted(h.id for h in hits) == ["a", "c"]
            assert col.delete(np.array(["a"])) == 1
            assert len(col) == 2
        with pytest.raises(tessera.InvalidInputError):
            local.upsert(["d"], tokens[:1], payloads=[{"bad": np.float64("nan")}])


def test_the_client_splits_under_the_limits_the_server_reports(make_server, tmp_path, rng):
    """A server started with small limits reports them (GET /v1/limits); the
    client splits upserts and batch searches under them, and the answers are
    what one call per query gives (checked against a naive MaxSim too)."""
    server = make_server(args=("--max-batch-queries", "3", "--max-batch-tokens", "40", "--max-batch-docs", "7"))
    client = tessera.Client(server.url)
    limits = client.limits()
    assert (limits["max_batch_queries"], limits["max_batch_tokens"], limits["max_batch_docs"]) == (3, 40, 7)
    assert client.max_batch_docs == 7 and tessera.Client(server.url, max_batch_docs=2).max_batch_docs == 2
    col = client.create_collection("c", 8)
    docs = corpus(rng, 40, 8)
    ids = list(docs)
    assert col.upsert(ids, [docs[i] for i in ids]) == len(ids)  # 40 documents under 7 a request
    assert len(col) == len(ids)
    queries = [rng.standard_normal((int(rng.integers(5, 15)), 8)).astype(np.float32) for _ in range(10)]
    batch = col.search_batch(queries, k=4, exact=True)  # 10 queries under 3 and 40 tokens a request
    assert len(batch) == len(queries)
    for q, hits in zip(queries, batch):
        alone = col.search(q, k=4, exact=True)
        assert [h.id for h in hits] == [h.id for h in alone]
        want = sorted(ids, key=lambda i: (-maxsim(q, docs[i]), i))[:4]
        assert [h.id for h in hits] == want
    # A refused query is named by its place in the whole batch.
    bad = queries[:7] + [np.full((2, 8), np.nan, np.float32)]
    with pytest.raises(tessera.InvalidInputError, match=r"queries\[7\]"):
        col.search_batch(bad, k=4)


def test_mine_negatives_through_the_server_answers_as_embedded(make_server, tmp_path, rng):
    """`Client.mine_negatives` (POST .../mine_negatives) gives what the embedded
    engine gives on the same documents: the same negatives, positives and scores."""
    docs = corpus(rng, 120, 8)
    ids = list(docs)
    texts = [f"document {i} about topic {i % 7}" for i in range(len(ids))]
    server = make_server()
    remote = tessera.Client(server.url).create_collection("c", 8)
    remote.upsert(ids, [docs[i] for i in ids], texts=texts)
    with tessera.Database(tmp_path / "embedded") as db:
        local = db.create_collection("c", 8)
        local.upsert(ids, [docs[i] for i in ids], texts=texts)
        for qi in range(3):
            q = docs[ids[qi]] + 0.1 * rng.standard_normal(docs[ids[qi]].shape).astype(np.float32)
            pos = [ids[qi], "missing"]
            for kw in ({}, {"range": (2, 30), "per_query": 4, "exact": True, "seed": 7},
                       {"text": "topic 3", "rank": "linear", "rank_weights": {"bm25": 0.2}},
                       {"range": (1, 40), "sampling": "top", "margin": 0.5, "exact": True},
                       {"range": (1, 40), "max_score": 2.0, "exclude_above_score": 0.9, "seed": 3}):
                want = local.mine_negatives(f"q{qi}", q, pos, **kw)
                got = remote.mine_negatives(f"q{qi}", q, pos, **kw)
                for g, w in zip(got, want):
                    assert [h.id for h in g] == [h.id for h in w], kw
                    assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(g, w))
                    assert [h.text for h in g] == [h.text for h in w]
        with pytest.raises(tessera.InvalidInputError, match="range"):
            remote.mine_negatives("q", q, [], range=(5, 2))
        for col in (local, remote):
            with pytest.raises(tessera.InvalidInputError, match="sampling"):
                col.mine_negatives("q", q, [], sampling="best")
            with pytest.raises(tessera.InvalidInputError, match="margin must be >= 0"):
                col.mine_negatives("q", q, [], margin=-1.0)


def test_scan_and_count_through_the_server_answer_as_embedded(make_server, tmp_path, rng):
    """`scan` pages through the documents a filter matches in id order and
    `count` counts them, embedded and through a server whose max_ids is
    smaller than the pages asked for (the client asks in pages of it);
    both against the ids computed from the payloads written."""
    server = make_server(args=("--max-ids", "7"))
    docs = corpus(rng, 60, 8)
    with tessera.Database(tmp_path / "embedded") as db, tessera.Client(server.url) as client:
        cols = [db.create_collection("c", 8), client.create_collection("c", 8)]
        for col in cols:
            load(col, docs)
            col.flush()
            col.delete(["doc-0004", "doc-0013"])
            col.upsert(["doc-0020"], [docs["doc-0020"]], payloads=[{"n": 20, "even": False}])
        live = {i: int(i[-4:]) for i in docs if i not in ("doc-0004", "doc-0013")}
        even = lambda i: live[i] % 2 == 0 and i != "doc-0020"  # noqa: E731
        for f, keep in [(None, lambda i: True), ({"field": "even", "eq": True}, even),
                        ('{"field": "n", "range": {"gte": 30}}', lambda i: live[i] >= 30)]:
            want = sorted(i for i in live if keep(i))
            pages = []
            for col in cols:
                got, after = [], None
                while True:
                    page, after = col.scan(f, after=after, limit=20)
                    got.extend(page)
                    if after is None:
                        break
                assert [d.id for d in got] == want, f
                assert col.count(f) == len(want)
                pages.append(got)
            for a, b in zip(*pages):
                assert (a.id, a.n_tokens, a.text, a.payload) == (b.id, b.n_tokens, b.text, b.payload)
        for col in cols:
            page, nxt = col.scan(limit=3, after="doc-0010", tokens=True)
            assert [d.id for d in page] == ["doc-0011", "doc-0012", "doc-0014"] and nxt == "doc-0014"
            for d in page:
                np.testing.assert_array_equal(d.tokens, docs[d.id].astype(np.float16))
            assert col.scan(limit=0) == ([], None)
            with pytest.raises(tessera.InvalidInputError, match="limit"):
                col.scan(limit=-1)
            with pytest.raises(tessera.InvalidInputError, match="filter"):
                col.scan({"field": "n"})


def test_the_server_seals_a_quiet_collection(make_server, rng):
    """`tessera serve --seal-idle-ms` seals a collection's memtable once no
    write came for that long; 0 leaves it to flush."""
    import time

    docs = corpus(rng, 25, 8)
    for ms, sealed in (("100", True), ("0", False)):
        server = make_server(args=("--seal-idle-ms", ms))
        with tessera.Client(server.url) as client:
            col = client.create_collection(f"c{ms}", 8)
            load(col, docs)
            deadline = time.monotonic() + (20 if sealed else 0.6)
            while col.stats()["memtable_documents"] > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            s = col.stats()
            assert (s["memtable_documents"], s["segments"]) == ((0, 1) if sealed else (25, 0)), ms
        server.stop()


def test_a_batch_of_token_queries_with_one_bm25_text_each(make_server, tmp_path, rng):
    """`search_batch(queries, text=[...])`: each query a hybrid search with its
    own BM25 text — embedded, and through a server whose batches hold 3
    queries (the client splits queries and texts together); each answer is
    that query's `search(q, text=t)`."""
    server = make_server(args=("--max-batch-queries", "3"))
    docs = corpus(rng, 80, 8)
    queries = [rng.standard_normal((int(rng.integers(1, 6)), 8)).astype(np.float32) for _ in range(8)]
    texts = [f"topic {i % 4}" for i in range(len(queries))]
    with tessera.Database(tmp_path / "embedded") as db, tessera.Client(server.url) as client:
        for col in (db.create_collection("c", 8), client.create_collection("c", 8)):
            load(col, docs)
            for kw in ({"k": 5}, {"k": 4, "rank": "linear", "rank_weights": {"bm25": 0.5}}):
                batch = col.search_batch(queries, text=texts, **kw)
                assert batch == [col.search(q, text=t, **kw) for q, t in zip(queries, texts)], kw
            with pytest.raises(tessera.InvalidInputError, match="one BM25 text per query"):
                col.search_batch(queries, text=texts[:3])
            with pytest.raises(tessera.InvalidInputError, match="str"):
                col.search_batch(queries, text=[1] * len(queries))
        assert db.collection("c").search_batch(queries, text=texts) == client.collection("c").search_batch(queries, text=texts)


def test_collection_settings_embedded_and_through_the_server(server, tmp_path, rng):
    """Issue #30 item 17: settings at creation, in stats, changed with
    update_settings, and refused alike embedded and through the server (an
    unknown name is a TypeError, a bad value or a setting fixed at creation
    an InvalidInputError naming it); open_or_create compares the settings
    it is given. The effect is the engine's: a lowered codebook threshold
    trains a codebook at the next seal."""
    docs = corpus(rng, 40, DIM, lo=20, hi=30)
    with tessera.Database(tmp_path / "embedded", seal_idle_ms=0) as db, tessera.Client(server.url) as client:
        for owner in (db, client):
            col = owner.create_collection(
                "c", DIM, index="centroids", settings={"min_train_tokens": 1 << 20, "memtable_bytes": 1 << 20}
            )
            s = col.stats()["settings"]
            assert (s["min_train_tokens"], s["memtable_bytes"], s["max_segments"]) == (1 << 20, 1 << 20, 16)
            assert "hnsw_m" not in s
            load(col, docs)
            col.flush()
            assert "centroids" not in col.stats()
            now = col.update_settings(min_train_tokens=256, max_segments=np.int64(4))
            assert now == {**s, "min_train_tokens": 256, "max_segments": 4}
            assert col.stats()["settings"] == now
            load(col, {f"again-{i}": t for i, t in docs.items()})
            col.flush()
            assert col.stats()["centroids"] > 0, "a codebook was trained once the threshold came down"
            with pytest.raises(TypeError, match="unknown setting 'max_segmnts'"):
                col.update_settings(max_segmnts=3)
            for bad, says in [
                (dict(centroids_k=64), "centroids_k is fixed"),
                (dict(memtable_bytes=10), "memtable_bytes must be in"),
                (dict(memtable_bytes=-1), "memtable_bytes"),
                (dict(drift=float("nan")), "drift"),
                (dict(default_nprobe="many"), "default_nprobe"),
            ]:
                with pytest.raises(tessera.InvalidInputError, match=says):
                    col.update_settings(**bad)
            assert col.stats()["settings"] == now
            with pytest.raises(tessera.InvalidInputError, match="hnsw_m does not apply"):
                owner.create_collection("p", DIM, index="centroids", settings={"hnsw_m": 8})
            assert owner.open_or_create_collection("c", DIM, settings={"max_segments": 4}).name == "c"
            with pytest.raises(tessera.AlreadyExistsError, match="max_segments differs"):
                owner.open_or_create_collection("c", DIM, settings={"max_segments": 5})
            with pytest.raises(TypeError, match="unknown setting"):
                owner.create_collection("q", DIM, settings={"memtable": 1})
            assert "q" not in owner.list_collections()


def test_the_client_speaks_tls_and_mutual_tls(make_server, tmp_path, rng):
    """Issue #30 item 8: `tessera.Client("https://…", ca_file=…)` against a
    server started with --tls-cert/--tls-key, and with --tls-client-ca its
    own certificate (cert_file, key_file); a wrong CA, an expired server
    certificate and a missing or expired client certificate are refused with
    AuthenticationError; plaintext to the TLS port is told to use HTTPS."""
    import datetime
    import ssl

    trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates (the [test] extra)")
    ca, clients_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()

    def files(name, cert):
        c, k = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(c)
        cert.private_key_pem.write_to_path(k)
        return str(c), str(k)

    def ca_file(name, authority):
        p = tmp_path / f"{name}.pem"
        authority.cert_pem.write_to_path(p)
        return str(p)

    server_crt, server_key = files("server", ca.issue_cert("127.0.0.1", "localhost"))
    ca_pem, other_pem, clients_pem = ca_file("ca", ca), ca_file("other", other_ca), ca_file("clients", clients_ca)
    past = datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc)
    tls = ("--tls-cert", server_crt, "--tls-key", server_key)
    s = make_server(args=tls, ssl_context=ssl.create_default_context(cafile=ca_pem))
    docs = corpus(rng, 20, DIM)
    with tessera.Client(s.url, ca_file=ca_pem) as client:
        col = client.create_collection("c", DIM)
        load(col, docs)
        q = rng.standard_normal((3, DIM)).astype(np.float32)
        hits = col.search(q, k=5, exact=True)
        assert [h.id for h in hits] == sorted(docs, key=lambda i: -maxsim(q, docs[i]))[:5]
    with pytest.raises(tessera.AuthenticationError, match="CERTIFICATE_VERIFY_FAILED"):
        tessera.Client(s.url, ca_file=other_pem).list_collections()
    with pytest.raises(tessera.InvalidInputError, match="https"):
        tessera.Client(s.url.replace("https", "http"), ca_file=ca_pem)
    with pytest.raises(tessera.InvalidInputError, match="this port serves HTTPS"):
        tessera.Client(s.url.replace("https", "http")).list_collections()
    s.stop()

    expired_crt, expired_key = files("expired-server", ca.issue_cert("127.0.0.1", not_before=past - datetime.timedelta(days=30), not_after=past))
    s = make_server(args=("--tls-cert", expired_crt, "--tls-key", expired_key), ssl_context=ssl._create_unverified_context())
    with pytest.raises(tessera.AuthenticationError, match="expired"):
        tessera.Client(s.url, ca_file=ca_pem).list_collections()
    s.stop()

    good = files("client", clients_ca.issue_cert("client.example"))
    old = files("old-client", clients_ca.issue_cert("client.example", not_before=past - datetime.timedelta(days=30), not_after=past))
    foreign = files("foreign", other_ca.issue_cert("client.example"))
    ctx = ssl.create_default_context(cafile=ca_pem)
    ctx.load_cert_chain(*good)
    s = make_server(args=tls + ("--tls-client-ca", clients_pem), ssl_context=ctx)
    with tessera.Client(s.url, ca_file=ca_pem, cert_file=good[0], key_file=good[1]) as client:
        assert client.list_collections() == ["c"]  # the same database, served again
    for cert in (None, old, foreign):
        kw = {} if cert is None else dict(cert_file=cert[0], key_file=cert[1])
        with pytest.raises(tessera.AuthenticationError):
            tessera.Client(s.url, ca_file=ca_pem, **kw).list_collections()


def test_the_recall_curve_embedded_and_through_the_server(server, tmp_path, rng):
    """Issue #29: `recall_curve` measures, on a seeded sample of the
    collection's documents used as queries, recall@k against exact search —
    the same curve embedded and through the server (the same documents, the
    same engine), each point checked here against numpy MaxSim."""
    docs = corpus(rng, 150, DIM, 3, 10)
    opts = dict(sample=25, k=5, candidates=[5, 10, 40], query_tokens=4, seed=3)
    with tessera.Database(tmp_path / "embedded", seal_idle_ms=0) as db, tessera.Client(server.url) as client:
        curves = []
        for owner in (db, client):
            col = owner.create_collection("c", DIM)
            load(col, docs)
            col.flush()
            curves.append(col.recall_curve(**opts))
        local, remote = curves
        assert local["queries"] == remote["queries"] and len(local["queries"]) == 25
        assert [p["recall"] for p in local["points"]] == [p["recall"] for p in remote["points"]]
        # Independently: the exact top-k by numpy, the two-stage answers by search.
        col = db.collection("c")
        for point in local["points"]:
            total = 0.0
            for qid in local["queries"]:
                q = docs[qid][:4].astype(np.float16).astype(np.float32)
                exact = sorted(docs, key=lambda i: -maxsim(q, docs[i]))[:5]
                got = {h.id for h in col.search(q, k=5, candidates=point["candidates"])}
                total += len(got & set(exact)) / 5
            assert point["recall"] == pytest.approx(total / 25, abs=1e-9), point
        with pytest.raises(tessera.InvalidInputError, match="sample"):
            col.recall_curve(sample=0)
        with pytest.raises(tessera.InvalidInputError, match="unknown field"):
            col.recall_curve(samples=3)
        # Counted before anything is built: a long list is refused at once.
        with pytest.raises(tessera.InvalidInputError, match="at most 32"):
            col.recall_curve(candidates=list(range(1, 10_000_000, 7)))
        empty = db.create_collection("empty", DIM)
        with pytest.raises(tessera.InvalidInputError, match="no documents"):
            empty.recall_curve()
