"""The GIL is released around engine calls: threads search while one upserts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np

import tessera
from conftest import corpus, maxsim

DIM = 32


def test_eight_searchers_and_a_writer(db, rng):
    base = corpus(rng, 400, DIM)
    col = db.create_collection("c", DIM)
    ids = list(base)
    col.upsert(ids, [base[i] for i in ids])
    col.flush()
    queries = [rng.standard_normal((8, DIM)).astype(np.float32) for _ in range(8)]
    extra = corpus(np.random.default_rng(7), 300, DIM)
    extra = {f"new-{k}": v for k, v in extra.items()}
    stop = threading.Event()
    errors: list = []
    searched = [0] * 8

    def searcher(t: int) -> None:
        try:
            while not stop.is_set():
                for h in col.search(queries[t], k=5):
                    doc = base.get(h.id)
                    if doc is None:
                        doc = extra[h.id]
                    assert abs(h.score - maxsim(queries[t], doc)) <= 1e-3
                searched[t] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def writer() -> None:
        try:
            keys = list(extra)
            for s in range(0, len(keys), 20):
                col.upsert(keys[s : s + 20], [extra[k] for k in keys[s : s + 20]])
            col.flush()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=searcher, args=(t,)) for t in range(8)]
    w = threading.Thread(target=writer)
    for t in threads:
        t.start()
    w.start()
    w.join(timeout=120)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert all(n > 0 for n in searched), searched
    assert len(col) == 700
    # Every acknowledged write is there, bit-exact.
    got = col.get(list(extra)[:50], tokens=True)
    for d in got:
        np.testing.assert_array_equal(d.tokens, extra[d.id].astype(np.float16))


def test_a_search_does_not_hold_the_gil(db, rng):
    """While one thread runs long exact searches, another makes progress in Python."""
    docs = corpus(rng, 3000, DIM, 50, 120)
    col = db.create_collection("c", DIM, index="none")
    ids = list(docs)
    col.upsert(ids, [docs[i] for i in ids])
    col.flush()
    q = rng.standard_normal((32, DIM)).astype(np.float32)
    done = threading.Event()
    ticks = [0]

    def busy() -> None:
        for _ in range(20):
            col.search(q, k=10)
        done.set()

    t = threading.Thread(target=busy)
    t.start()
    while not done.is_set():
        ticks[0] += 1
        time.sleep(0.0005)
    t.join()
    assert ticks[0] > 20, ticks
    assert isinstance(tessera.__version__, str)


def test_build_threads_are_the_processs_to_set_before_its_first_seal(tmp_path):
    """`set_build_threads` in a fresh interpreter (the build pool is process-wide)."""
    code = r"""
import sys
import numpy as np
import tessera

for bad in (0, -1):
    try:
        tessera.set_build_threads(bad)
        sys.exit(f"{bad} threads was taken")
    except tessera.InvalidInputError:
        pass
tessera.set_build_threads(3)
db = tessera.Database(sys.argv[1])
col = db.create_collection("c", 4, index="none", settings={"memtable_bytes": 4096})
for i in range(64):
    col.upsert([f"d{i}"], [np.ones((16, 4), np.float32)])
col.flush()
try:
    tessera.set_build_threads(2)
    sys.exit("2 threads was taken after a background seal")
except tessera.InvalidInputError as e:
    assert "already runs on 3 threads" in str(e), e
tessera.set_build_threads(3)
assert len(col) == 64
"""
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "db")], check=True)
