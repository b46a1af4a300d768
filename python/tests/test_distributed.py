"""tessera.distributed on a local Ray instance: a sharded, replicated
collection answers what one embedded collection holding the same documents
answers; a dead replica is failed over for reads and refuses writes below
the quorum; replicas killed mid-ingest and mid-query are restarted by Ray and
catch up, losing no acknowledged write; the data comes back when the actors
are started again, a replica that missed writes copied first."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import tessera
from conftest import corpus, load

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install './python[ray]'")
from tessera.distributed import ShardedCollection, shard_of  # noqa: E402

DIM = 16


@pytest.fixture
def cluster(ray_cluster):
    yield


def pairs(hits) -> list:
    return [(h.id, h.score, h.text, h.payload) for h in hits]


def test_sharded_collection_answers_as_one_collection(cluster, tmp_path, rng):
    docs = corpus(rng, 160, DIM)
    with tessera.Database(tmp_path / "one") as db:
        one = db.create_collection("c", DIM)
        sharded = ShardedCollection.create("c", DIM, shards=3, replicas=2, root=tmp_path / "sharded")
        try:
            for col in (one, sharded):
                load(col, docs)
                assert col.delete(["doc-0003", "doc-0050", "nope"]) == 2
                col.upsert(["doc-0007"], [docs["doc-0011"]], texts=["replaced"])
            assert len(sharded) == len(one) == 158
            # Every replica of a shard holds exactly the ids that hash to it.
            for s, row in enumerate(sharded._actors):
                counts = ray.get([a.count.remote() for a in row])
                want = sum(1 for i in docs if shard_of(i, 3) == s and i not in ("doc-0003", "doc-0050"))
                assert counts == [want, want], f"shard {s}"
            queries = [rng.standard_normal((int(rng.integers(1, 9)), DIM)).astype(np.float32) for _ in range(5)]
            for q in queries:
                for opts in (
                    dict(exact=True),
                    dict(exact=True, filter={"field": "even", "eq": True}),
                    # Two-stage with every document a candidate: exact.
                    dict(candidates=1000),
                ):
                    assert pairs(sharded.search(q, k=10, **opts)) == pairs(one.search(q, k=10, exact=True, filter=opts.get("filter"))), opts
            batch = sharded.search_batch(queries, k=5, exact=True)
            assert [pairs(h) for h in batch] == [pairs(one.search(q, k=5, exact=True)) for q in queries]
            ids = ["doc-0001", "doc-0003", "doc-0007", "missing"]
            got, want = sharded.get(ids, tokens=True), one.get(ids, tokens=True)
            assert [d is None for d in got] == [d is None for d in want] == [False, True, False, True]
            for g, w in zip(got, want):
                if w is not None:
                    assert (g.id, g.n_tokens, g.text, g.payload) == (w.id, w.n_tokens, w.text, w.payload)
                    np.testing.assert_array_equal(g.tokens, w.tokens)
            with pytest.raises(tessera.InvalidInputError):
                sharded.search(queries[0], k=5, text="topic", rank="linear")
            with pytest.raises(tessera.InvalidInputError):
                sharded.upsert(["x"], [np.zeros((2, DIM + 1), np.float32)])  # the engine's own check
        finally:
            sharded.close()


def test_a_dead_replica_is_failed_over_for_reads_and_refuses_writes(cluster, tmp_path, rng):
    docs = corpus(rng, 60, DIM)
    sharded = ShardedCollection.create("c", DIM, shards=2, replicas=2, root=tmp_path / "sharded")
    try:
        load(sharded, docs)
        q = rng.standard_normal((4, DIM)).astype(np.float32)
        before = pairs(sharded.search(q, k=10, exact=True))
        ray.kill(sharded._actors[0][0], no_restart=True)
        assert pairs(sharded.search(q, k=10, exact=True)) == before, "reads go to the other replica"
        assert len(sharded) == 60
        in_shard_0 = next(i for i in docs if shard_of(i, 2) == 0)
        in_shard_1 = next(i for i in docs if shard_of(i, 2) == 1)
        assert sharded.get([in_shard_0])[0].id == in_shard_0
        with pytest.raises(tessera.UnavailableError, match="shard 0"):
            sharded.upsert([in_shard_0], [docs[in_shard_1]])
        # A write that touches only healthy shards is acknowledged.
        assert sharded.upsert([in_shard_1], [docs[in_shard_0]]) == 1
    finally:
        sharded.close()


def test_the_data_comes_back_when_the_actors_start_again(cluster, tmp_path, rng):
    docs = corpus(rng, 40, DIM)
    root = tmp_path / "sharded"
    first = ShardedCollection.create("c", DIM, shards=2, replicas=1, root=root)
    load(first, docs)
    q = rng.standard_normal((3, DIM)).astype(np.float32)
    before = pairs(first.search(q, k=10, exact=True))
    first.close()
    again = ShardedCollection.create("c", DIM, shards=2, replicas=1, root=root)
    try:
        assert len(again) == 40 and pairs(again.search(q, k=10, exact=True)) == before
    finally:
        again.close()
    with pytest.raises(tessera.InvalidInputError, match="made as"):
        ShardedCollection.create("c", DIM, shards=3, replicas=1, root=root)
    # An engine error while opening is raised as it is (not as a dead actor).
    with pytest.raises(tessera.InvalidInputError, match="bogus"):
        ShardedCollection.create("d", DIM, shards=1, replicas=1, root=tmp_path / "other", index="bogus")


def replica_answers(sharded, q) -> list:
    """Every replica's own exact answer and write sequence number, per shard."""
    return [
        [(ray.get(a.search.remote(q, 20, {"exact": True})), ray.get(a.status.remote())["seq"]) for a in row]
        for row in sharded._actors
    ]


def assert_replicas_agree(sharded, q) -> None:
    for s, row in enumerate(replica_answers(sharded, q)):
        assert all(r == row[0] for r in row), f"the replicas of shard {s} differ"


class Writer(threading.Thread):
    """Upserts batches of 5 documents until `n` batches are acknowledged,
    retrying a batch refused as unavailable; records what was acknowledged."""

    def __init__(self, sharded, docs: dict, n: int):
        super().__init__(daemon=True)
        self.sharded, self.docs, self.n = sharded, docs, n
        self.acked: list = []
        self.unavailable = 0
        self.error: Exception | None = None

    def run(self) -> None:
        ids = list(self.docs)
        deadline = time.monotonic() + 120
        try:
            for b in range(self.n):
                batch = ids[5 * b : 5 * b + 5]
                while True:
                    try:
                        self.sharded.upsert(batch, [self.docs[i] for i in batch])
                        break
                    except tessera.UnavailableError:
                        self.unavailable += 1
                        assert time.monotonic() < deadline, "a write stayed unavailable for 2 minutes"
                        time.sleep(0.05)
                self.acked += batch
        except Exception as e:  # reported by the test
            self.error = e


@pytest.mark.parametrize("quorum", [1, 2])
def test_killing_replicas_mid_ingest_loses_no_acknowledged_write(cluster, tmp_path, rng, quorum):
    docs = corpus(rng, 300, DIM)
    sharded = ShardedCollection.create(
        "c", DIM, shards=2, replicas=2, root=tmp_path / "sharded", write_quorum=quorum, repair_interval=0.1
    )
    try:
        writer = Writer(sharded, docs, 60)
        writer.start()
        pids = set()
        for s, r in ((0, 1), (1, 0), (0, 0)):
            while len(writer.acked) < 50 * (len(pids) + 1) and writer.is_alive():
                time.sleep(0.01)
            pids.add(ray.get(sharded._actors[s][r].status.remote())["pid"])
            ray.kill(sharded._actors[s][r], no_restart=False)  # Ray restarts it
            time.sleep(0.3)
        writer.join(180)
        assert writer.error is None, writer.error
        assert len(writer.acked) == 300
        if quorum == 1:
            # A shard keeps one replica in service: no write was refused.
            assert writer.unavailable == 0
        sharded.wait_in_service(120)
        status = sharded.status()
        assert all(st["in_service"] for row in status for st in row)
        assert pids.isdisjoint(st["pid"] for row in status for st in row), "the killed actors were restarted"
        with tessera.Database(tmp_path / "one") as db:
            one = db.create_collection("c", DIM)
            one.upsert(writer.acked, [docs[i] for i in writer.acked])
            assert len(sharded) == len(one) == 300
            got = sharded.get(writer.acked, tokens=True)
            for i, d in zip(writer.acked, got):
                assert d is not None and d.id == i, f"{i}, acknowledged, is lost"
                np.testing.assert_array_equal(d.tokens, docs[i].astype(np.float16))
            for q in (rng.standard_normal((4, DIM)).astype(np.float32) for _ in range(3)):
                assert pairs(sharded.search(q, k=20, exact=True)) == pairs(one.search(q, k=20, exact=True))
                assert_replicas_agree(sharded, q)
    finally:
        sharded.close()


def test_killing_replicas_mid_query_keeps_queries_answering(cluster, tmp_path, rng):
    docs = corpus(rng, 120, DIM)
    sharded = ShardedCollection.create("c", DIM, shards=2, replicas=2, root=tmp_path / "sharded", repair_interval=0.1)
    try:
        load(sharded, docs)
        queries = [rng.standard_normal((4, DIM)).astype(np.float32) for _ in range(4)]
        want = [pairs(sharded.search(q, k=10, exact=True)) for q in queries]
        failures, answered, stop = [], [0], threading.Event()

        def reader() -> None:
            while not stop.is_set():
                for q, w in zip(queries, want):
                    try:
                        got = pairs(sharded.search(q, k=10, exact=True))
                        if got != w:
                            failures.append("a different answer")
                        answered[0] += 1
                    except Exception as e:
                        failures.append(repr(e))

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        for s, r in ((0, 0), (1, 1), (0, 1), (1, 0)):
            time.sleep(0.3)
            pid = ray.get(sharded._actors[s][r].status.remote())["pid"]
            ray.kill(sharded._actors[s][r], no_restart=False)
            # Restarted and back in service before its peer is killed.
            deadline = time.monotonic() + 120
            while not ((st := sharded.status()[s][r]).get("pid", pid) != pid and st["in_service"]):
                assert time.monotonic() < deadline, f"replica {r} of shard {s} did not come back"
                time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(60)
        assert not failures, failures[:5]
        assert answered[0] > 20
        assert_replicas_agree(sharded, queries[0])
    finally:
        sharded.close()


def test_a_replica_behind_is_copied_when_the_cluster_restarts(cluster, tmp_path, rng):
    docs = corpus(rng, 80, DIM)
    root = tmp_path / "sharded"
    first = ShardedCollection.create("c", DIM, shards=2, replicas=2, root=root, write_quorum=1)
    ids = list(docs)
    first.upsert(ids[:40], [docs[i] for i in ids[:40]])
    # Replica 1 of shard 0 dies for good: the writes after go to replica 0 only.
    ray.kill(first._actors[0][1], no_restart=True)
    first.upsert(ids[40:], [docs[i] for i in ids[40:]])
    first.delete(ids[:5])
    # The whole cluster stops without closing anything (kill -9 of every actor).
    first._stop.set()
    for row in first._actors:
        for a in row:
            ray.kill(a, no_restart=True)
    again = ShardedCollection.create("c", DIM, shards=2, replicas=2, root=root)
    try:
        status = again.status()
        assert all(st["in_service"] for row in status for st in row)
        for row in status:
            assert len({st["seq"] for st in row}) == 1 and len({st["documents"] for st in row}) == 1
        assert len(again) == 75
        with tessera.Database(tmp_path / "one") as db:
            one = db.create_collection("c", DIM)
            one.upsert(ids[5:], [docs[i] for i in ids[5:]])
            q = rng.standard_normal((4, DIM)).astype(np.float32)
            assert pairs(again.search(q, k=20, exact=True)) == pairs(one.search(q, k=20, exact=True))
            assert_replicas_agree(again, q)
    finally:
        again.close()
    for g in first._groups:
        ray.util.remove_placement_group(g)


def test_a_parallel_build_from_a_ray_dataset_answers_as_one_collection(cluster, tmp_path, rng):
    from tessera.distributed import build

    docs = corpus(rng, 150, DIM)
    rows = [
        {"id": i, "tokens": t, "text": f"passage {i} on topic {n % 4}", "payload": {"n": n, "even": n % 2 == 0}}
        for n, (i, t) in enumerate(docs.items())
    ]
    dataset = ray.data.from_items(rows, override_num_blocks=4)
    sharded = build(dataset, "c", DIM, shards=2, replicas=2, root=tmp_path / "built", batch_size=16, text="plain")
    try:
        status = sharded.status()
        assert all(st["in_service"] for row in status for st in row)
        with tessera.Database(tmp_path / "one") as db:
            one = db.create_collection("c", DIM, text="plain")
            load(one, docs)
            assert len(sharded) == len(one) == 150
            for q in (rng.standard_normal((4, DIM)).astype(np.float32) for _ in range(3)):
                for opts in (dict(exact=True), dict(exact=True, filter={"field": "even", "eq": True})):
                    assert pairs(sharded.search(q, k=10, **opts)) == pairs(one.search(q, k=10, **opts))
                assert_replicas_agree(sharded, q)
            ids = list(docs)[:7]
            for g, w in zip(sharded.get(ids, tokens=True), one.get(ids, tokens=True)):
                assert (g.id, g.text, g.payload) == (w.id, w.text, w.payload)
                np.testing.assert_array_equal(g.tokens, w.tokens)
            # Built segments, not a WAL to replay; writes go on after the build.
            assert sum(st["documents"] for st in (row[0] for row in status)) == 150
            sharded.upsert(["late"], [docs[ids[0]]])
            assert sharded.get(["late"])[0].id == "late"
    finally:
        sharded.close()
    with pytest.raises(tessera.InvalidInputError, match="already"):
        build(dataset, "c", DIM, shards=2, replicas=2, root=tmp_path / "built")
    # A row the engine refuses fails the build with the engine's error, and
    # leaves nothing behind.
    bad = ray.data.from_items(rows[:20] + [{**rows[20], "tokens": np.zeros((3, DIM + 1), np.float32)}])
    with pytest.raises(tessera.InvalidInputError, match="dim"):
        build(bad, "c", DIM, shards=2, root=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(tessera.InvalidInputError, match="unknown"):
        build(ray.data.from_items([{"id": "a", "tokens": docs["doc-0000"], "vector": 1}]), "c", DIM, root=tmp_path / "x")
    with pytest.raises(tessera.InvalidInputError, match="ids must be str"):
        build(ray.data.from_items([{"id": 7, "tokens": docs["doc-0000"]}]), "c", DIM, root=tmp_path / "y")


def test_a_replica_restarted_while_idle_is_noticed_and_caught_up(cluster, tmp_path, rng):
    docs = corpus(rng, 40, DIM)
    sharded = ShardedCollection.create("c", DIM, shards=1, replicas=2, root=tmp_path / "s", repair_interval=0.05)
    try:
        load(sharded, docs)
        pid = ray.get(sharded._actors[0][1].status.remote())["pid"]
        ray.kill(sharded._actors[0][1], no_restart=False)
        # No call reaches it: the health check notices the restart.
        deadline = time.monotonic() + 60
        while not ((st := sharded.status()[0][1]).get("pid", pid) != pid and st["in_service"]):
            assert time.monotonic() < deadline, "the restarted replica did not come back"
            time.sleep(0.05)
        assert st["documents"] == 40
        assert_replicas_agree(sharded, rng.standard_normal((3, DIM)).astype(np.float32))
    finally:
        sharded.close()


def test_bm25_queries_without_tokens_merge_by_bm25(cluster, tmp_path, rng):
    docs = corpus(rng, 90, DIM)
    with tessera.Database(tmp_path / "one") as db:
        one = db.create_collection("c", DIM, text="plain")
        load(one, docs)
        for shards in (1, 3):
            sharded = ShardedCollection.create("c", DIM, shards=shards, root=tmp_path / f"s{shards}", text="plain")
            try:
                load(sharded, docs)
                got = sharded.search(None, k=12, text="topic 3 passage")
                want = one.search(None, k=12, text="topic 3 passage")
                if shards == 1:
                    # One shard's statistics are the collection's: the same answer.
                    assert [(h.id, h.score, h.fused, h.sources) for h in got] == [
                        (h.id, h.score, h.fused, h.sources) for h in want
                    ]
                bm25 = [h.sources[0]["score"] for h in got]
                assert len(got) == 12 and bm25 == sorted(bm25, reverse=True)
                assert [h.sources[0]["rank"] for h in got] == list(range(1, 13))
                with pytest.raises(tessera.InvalidInputError, match="BM25"):
                    sharded.search(None, k=5, ids=["doc-0001"])
                with pytest.raises(tessera.InvalidInputError, match="BM25"):
                    sharded.search(None, k=5, text="topic", fusion="weighted")
            finally:
                sharded.close()


def test_a_batch_with_a_bad_document_is_refused_whole(cluster, tmp_path, rng):
    docs = corpus(rng, 20, DIM)
    sharded = ShardedCollection.create("c", DIM, shards=3, root=tmp_path / "s")
    try:
        ids = list(docs)
        bad = [docs[i] for i in ids]
        bad[-1] = np.full((2, DIM), np.nan, np.float32)  # one shard's part only
        for tokens, match in ((bad, "invalid value"), ([docs[i] for i in ids[:-1]] + [docs[ids[0]][:, :3]], "dimension")):
            with pytest.raises(tessera.InvalidInputError, match=match):
                sharded.upsert(ids, tokens)
            assert len(sharded) == 0, "nothing of the batch was written in any shard"
        with pytest.raises(tessera.InvalidInputError, match="twice"):
            sharded.upsert(["a", "b", "a"], [docs[ids[0]]] * 3)
        with pytest.raises(tessera.InvalidInputError, match="JSON"):
            sharded.upsert(ids[:2], [docs[i] for i in ids[:2]], payloads=[{"x": 1}, {"y": float("nan")}])
        assert len(sharded) == 0
        sharded.upsert(ids, [docs[i] for i in ids])
        with pytest.raises(tessera.InvalidInputError, match="twice"):
            sharded.delete([ids[0], ids[1], ids[0]])
        assert len(sharded) == 20, "no shard deleted its part"
    finally:
        sharded.drop()
    assert not (tmp_path / "s").exists()
