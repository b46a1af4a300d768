"""tessera.distributed on a local Ray instance: a sharded, replicated
collection answers what one embedded collection holding the same documents
answers; a dead replica is failed over for reads and refuses writes; the
data comes back when the actors are started again."""

from __future__ import annotations

import numpy as np
import pytest

import tessera
from conftest import corpus, load

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install './python[ray]'")
from tessera.distributed import ShardedCollection, shard_of  # noqa: E402

DIM = 16


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


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
