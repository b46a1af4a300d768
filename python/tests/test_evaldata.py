"""The real evaluation data from Python: exact search reproduces the data
set's exact MaxSim top-100 (ids up to ties, scores within 1e-3).
Skipped when ../shared/evaldata is absent (set TESSERA_EVALDATA to run)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import tessera
from conftest import REPO

DATA = Path(os.environ.get("TESSERA_EVALDATA", REPO.parent / "shared" / "evaldata")) / "debdocs"


def read_bulk(folder: Path, meta: str):
    rows = [json.loads(line) for line in (folder / meta).read_text().splitlines() if line.strip()]
    return rows, np.load(folder / "tokens.npy"), np.load(folder / "offsets.npy")


@pytest.mark.skipif(not (DATA / "exact_top100.run").exists(), reason=f"evaldata not present at {DATA}")
def test_exact_top100_reproduced_from_python(tmp_path):
    docs, tokens, offsets = read_bulk(DATA / "corpus", "docs.jsonl")
    with tessera.Database(tmp_path / "db") as db:
        col = db.create_collection("deb", tokens.shape[1], index="none")
        ids = [d["id"] for d in docs]
        # The flat bulk arrays go in as they are (float16 rows, uint64 offsets).
        for s in range(0, len(ids), 500):
            e = min(s + 500, len(ids))
            col.upsert(ids[s:e], tokens[offsets[s] : offsets[e]], texts=[d["text"] for d in docs[s:e]],
                       offsets=offsets[s : e + 1] - offsets[s])  # fmt: skip
        col.flush()
        assert len(col) == 2600
        queries, qtok, qoff = read_bulk(DATA / "queries", "queries.jsonl")
        qs = [qtok[qoff[i] : qoff[i + 1]] for i in range(len(queries))]
        reference = defaultdict(list)
        for line in (DATA / "exact_top100.run").read_text().splitlines():
            f = line.split()
            reference[f[0]].append((f[2], float(f[4])))
        results = col.search_batch(qs, k=100, exact=True)
        for q, hits in zip(queries, results):
            ref = reference[q["id"]]
            assert len(hits) == len(ref)
            ref_score = dict(ref)
            for r, (h, (rid, rs)) in enumerate(zip(hits, ref)):
                assert abs(h.score - rs) <= 1e-3, (q["id"], r, h.score, rs)
                if h.id != rid:
                    tied = abs(ref_score.get(h.id, ref[-1][1]) - rs) <= 1e-3
                    assert tied, (q["id"], r, h.id, rid)
