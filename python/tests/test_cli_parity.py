"""The same database answers the same from Python as from the Rust CLI
(`tessera search`, TREC run), for exact and two-stage search."""

from __future__ import annotations

import json
import subprocess

import numpy as np

import tessera
from conftest import corpus, require_tessera_bin

DIM = 16


def test_python_and_cli_search_agree(tmp_path, rng):
    binary = require_tessera_bin()
    docs = corpus(rng, 250, DIM)
    ids = list(docs)
    queries = [rng.standard_normal((int(rng.integers(2, 9)), DIM)).astype(np.float16) for _ in range(12)]
    qdir = tmp_path / "queries"
    qdir.mkdir()
    (qdir / "queries.jsonl").write_text("".join(json.dumps({"id": f"q{i}"}) + "\n" for i in range(len(queries))))
    np.save(qdir / "tokens.npy", np.concatenate(queries))
    np.save(qdir / "offsets.npy", np.concatenate([[0], np.cumsum([q.shape[0] for q in queries])]).astype(np.uint64))
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("c", DIM)
        col.upsert(ids[:150], [docs[i] for i in ids[:150]])
        col.flush()  # one segment with an HNSW index, the rest in the memtable (WAL)
        col.upsert(ids[150:], [docs[i] for i in ids[150:]])
        ours = {
            "exact": [col.search(q, k=10, exact=True) for q in queries],
            "two_stage": [col.search(q, k=10, candidates=40) for q in queries],
        }
    for mode, extra in (("exact", ["--exact"]), ("two_stage", ["--candidates", "40"])):
        run = tmp_path / f"{mode}.run"
        subprocess.run(
            [str(binary), "search", "--db", str(tmp_path / "db"), "--collection", "c", "--queries", str(qdir),
             "--k", "10", "--run", str(run), *extra],
            check=True, capture_output=True,
        )  # fmt: skip
        theirs: dict = {}
        for line in run.read_text().splitlines():
            qid, _, doc, _, score, _ = line.split()
            theirs.setdefault(qid, []).append((doc, float(score)))
        for i, hits in enumerate(ours[mode]):
            assert [h.id for h in hits] == [d for d, _ in theirs[f"q{i}"]], (mode, i)
            for h, (_, s) in zip(hits, theirs[f"q{i}"]):
                assert abs(h.score - s) <= 1e-5, (mode, i)
