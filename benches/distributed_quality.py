"""Search quality of sharded collections against one collection, on the real
data: two-stage recall, and per-shard BM25 statistics.

Two-stage: each shard gets the candidates one collection would use, so its
recall of the exact top 10 (the data set's exact_top100.run) should be at
least one collection's.

Each shard of a tessera.distributed.ShardedCollection has its own full-text
index, so a term's IDF and the average document length are those of the
shard, not of the whole collection. This loads ../shared/evaldata/debdocs into
one embedded collection and into sharded collections of S = 2, 4, 8 shards,
runs every query as BM25 alone (text=) and as a hybrid query (tokens and
text, final order by MaxSim), and reports quality against the relevance
judgments and the overlap of each top 10 with the one collection's:

    python benches/distributed_quality.py [--data ../shared/evaldata/debdocs] [--shards 2,4,8]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import ray

import tessera
from tessera.distributed import ShardedCollection


def read_bulk(folder: Path, meta: str):
    rows = [json.loads(line) for line in (folder / meta).read_text().splitlines() if line.strip()]
    tokens, offsets = np.load(folder / "tokens.npy"), np.load(folder / "offsets.npy")
    return rows, [tokens[offsets[i] : offsets[i + 1]] for i in range(len(rows))]


def quality(runs: dict, qrels: dict, k: int = 10) -> dict:
    ndcg = mrr = hr = 0.0
    for q, rel in qrels.items():
        ranked = runs[q][:k]
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked))
        ideal = sum(r / math.log2(i + 2) for i, r in enumerate(sorted(rel.values(), reverse=True)[:k]))
        ndcg += dcg / ideal if ideal else 0.0
        first = next((i for i, d in enumerate(ranked) if rel.get(d, 0) > 0), None)
        mrr += 0.0 if first is None else 1.0 / (first + 1)
        hr += first is not None
    n = len(qrels)
    return {"ndcg@10": round(ndcg / n, 4), "mrr@10": round(mrr / n, 4), "hr@10": round(hr / n, 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "evaldata" / "debdocs"))
    ap.add_argument("--shards", default="2,4,8")
    a = ap.parse_args()
    data = Path(a.data)
    docs, doc_tokens = read_bulk(data / "corpus", "docs.jsonl")
    queries, query_tokens = read_bulk(data / "queries", "queries.jsonl")
    qrels: dict = defaultdict(dict)
    for line in (data / "qrels.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        if int(s) > 0:
            qrels[q][d] = int(s)
    ids, texts = [d["id"] for d in docs], [d["text"] for d in docs]
    dim = doc_tokens[0].shape[1]
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)

    exact: dict = defaultdict(list)
    for line in (data / "exact_top100.run").read_text().splitlines():
        f = line.split()
        if len(exact[f[0]]) < 10:
            exact[f[0]].append(f[2])

    def runs(col) -> dict:
        out = {}
        for mode in ("two_stage", "bm25", "hybrid"):
            out[mode] = {}
            for q, t in zip(queries, query_tokens):
                if mode == "two_stage":
                    hits = col.search(t, 10)
                elif mode == "bm25":
                    hits = col.search(None, 10, text=q["text"])
                else:
                    hits = col.search(t, 10, text=q["text"])
                out[mode][q["id"]] = [h.id for h in hits]
        return out

    def recall(run: dict) -> float:
        return round(float(np.mean([len(set(run[q]) & set(exact[q])) / len(exact[q]) for q in exact])), 4)

    def load(col) -> None:
        for lo in range(0, len(ids), 500):
            col.upsert(ids[lo:lo + 500], doc_tokens[lo:lo + 500], texts=texts[lo:lo + 500])
        col.flush()

    with tempfile.TemporaryDirectory() as tmp:
        with tessera.Database(Path(tmp) / "one") as db:
            one = db.create_collection("c", dim)
            load(one)
            base = runs(one)
        print(json.dumps({"setting": "one collection", "mode": "two_stage", "recall@10": recall(base["two_stage"]),
                          **quality(base["two_stage"], qrels)}), flush=True)
        for mode in ("bm25", "hybrid"):
            print(json.dumps({"setting": "one collection", "mode": mode, **quality(base[mode], qrels),
                              "overlap@10": 1.0}), flush=True)
        for s in [int(x) for x in a.shards.split(",")]:
            col = ShardedCollection.create("c", dim, shards=s, root=Path(tmp) / f"s{s}")
            load(col)
            got = runs(col)
            col.close()
            print(json.dumps({"setting": f"shards={s}", "mode": "two_stage", "recall@10": recall(got["two_stage"]),
                              **quality(got["two_stage"], qrels)}), flush=True)
            for mode in ("bm25", "hybrid"):
                overlap = np.mean([len(set(got[mode][q]) & set(base[mode][q])) / max(1, len(base[mode][q]))
                                   for q in base[mode]])
                print(json.dumps({"setting": f"shards={s}", "mode": mode, **quality(got[mode], qrels),
                                  "overlap@10": round(float(overlap), 4)}), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
