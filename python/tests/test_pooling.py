"""Token pooling from Python, embedded and over HTTP: what a pooled
collection stores is the first token as given, then a naive numpy Ward
clustering of the others (the textbook greedy one: merge the two groups
whose union raises the sum of squared distances to the group means the
least) into ⌈(n − 1) / f⌉ groups, each the renormalised mean."""

import numpy as np
import pytest

import tessera


def unit_tokens(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16)


def pooled_len(n, f):
    return n if f == 1 or n <= 1 else 1 + -(-(n - 1) // f)


def ward_pool(tokens, f):
    """The first token, then greedy Ward of the others into ⌈(n − 1) / f⌉
    groups (ordered by first token), each the mean of its members scaled to
    their mean length."""
    x = tokens.astype(np.float64)
    if f == 1 or len(x) <= 1:
        return x
    first, x = x[:1], x[1:]
    n = len(x)
    groups = [[i] for i in range(n)]
    k = -(-n // f)

    def sse(g):
        m = x[g].mean(axis=0)
        return float(((x[g] - m) ** 2).sum())

    while len(groups) > k:
        best = None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                rise = sse(groups[a] + groups[b]) - sse(groups[a]) - sse(groups[b])
                if best is None or rise < best[0]:
                    best = (rise, a, b)
        _, a, b = best
        groups[a] = sorted(groups[a] + groups.pop(b))
    groups.sort(key=lambda g: g[0])
    out = []
    for g in groups:
        m = x[g].mean(axis=0)
        length = np.linalg.norm(x[g], axis=1).mean()
        out.append(m * (length / np.linalg.norm(m)) if len(g) > 1 else x[g[0]])
    return np.concatenate([first, np.array(out)])


def check_stored(col, docs, factors):
    for (id_, t), f in zip(docs, factors):
        got = col.get([id_], tokens=True)[0]
        want = ward_pool(t, f)
        assert got.tokens.shape == want.shape, (id_, f)
        np.testing.assert_allclose(got.tokens.astype(np.float64), want, atol=2e-3, err_msg=f"{id_} pooled by {f}")


def test_embedded_pooling_matches_a_naive_ward(db, rng):
    dim = 8
    col = db.create_collection("p", dim, index="none", settings={"pool_factor": 2})
    assert col.stats()["settings"]["pool_factor"] == 2
    docs = [(f"d{i}", unit_tokens(rng, n, dim)) for i, n in enumerate([1, 2, 3, 7, 12, 13])]
    col.upsert([d for d, _ in docs[:3]], [t for _, t in docs[:3]])
    col.upsert([d for d, _ in docs[3:]], [t for _, t in docs[3:]], pool_factor=3)
    factors = [2, 2, 2, 3, 3, 3]
    check_stored(col, docs, factors)
    st = col.stats()
    assert st["given_tokens"] == sum(len(t) for _, t in docs)
    assert st["tokens"] == sum(pooled_len(len(t), f) for (_, t), f in zip(docs, factors))
    col.flush()
    check_stored(col, docs, factors)
    col.update_settings(pool_factor=1)
    col.upsert(["d0"], [docs[4][1]])
    assert col.get(["d0"], tokens=True)[0].tokens.shape == docs[4][1].shape
    for bad in (0, 65, -1):
        with pytest.raises(tessera.InvalidInputError, match="pool_factor must be in 1..=64"):
            col.upsert(["x"], [docs[0][1]], pool_factor=bad)


def test_client_pooling_matches_embedded(server, rng):
    dim = 8
    client = tessera.Client(server.url)
    col = client.create_collection("p", dim, index="none", settings={"pool_factor": 4})
    docs = [(f"d{i}", unit_tokens(rng, n, dim)) for i, n in enumerate([5, 9, 11])]
    col.upsert([d for d, _ in docs[:2]], [t for _, t in docs[:2]])
    col.upsert([docs[2][0]], [docs[2][1]], pool_factor=2)
    check_stored(col, docs, [4, 4, 2])
    st = col.stats()
    assert (st["given_tokens"], st["tokens"]) == (25, pooled_len(5, 4) + pooled_len(9, 4) + pooled_len(11, 2))
    with pytest.raises(tessera.InvalidInputError, match="pool_factor must be in 1..=64"):
        col.upsert(["x"], [docs[0][1]], pool_factor=99)
