"""A LangChain retrieval step over Tessera against the same step over
LangChain's Qdrant integration (langchain-qdrant, qdrant-client in local
mode, a multivector collection compared by MAX_SIM), on the real data's
texts (../shared/evaldata/debdocs), both with the same late-interaction model
— the evaldata's own MiniLM encoder, run by Tessera's encoder — and the same
document vectors. Per query, interleaved: Tessera's retriever (the
collection's bound model encodes the query; two-stage MaxSim, k = 10), the
same with exact=True (MaxSim over every document), then
Qdrant's (an Embeddings wrapper encodes the query with the same encoder;
MAX_SIM over every document, as local mode does). Prints nDCG@10, MRR@10,
HR@10 against qrels.tsv and the p50/p90 of each retrieval step.

In a scratch venv (docs/PERFORMANCE.md has the exact commands):
    pip install langchain-core langchain-qdrant qdrant-client numpy
    PYTHONPATH=<a folder holding the tessera package, release build> \\
        python benches/langchain_vs_qdrant.py --model MINILM_DIR --evaldata ../shared/evaldata/debdocs
"""

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import uuid

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_qdrant import QdrantVectorStore
from qdrant_client import QdrantClient, models

import tessera
from tessera.integrations.langchain import TesseraVectorStore


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels(path):
    rel = {}
    with open(path) as f:
        next(f)
        for line in f:
            q, d, s = line.split()
            rel.setdefault(q, {})[d] = int(s)
    return rel


def metrics(ranked, rel):
    gains = [rel.get(d, 0) for d in ranked[:10]]
    dcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted(rel.values(), reverse=True)[:10]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    first = next((i for i, g in enumerate(gains) if g > 0), None)
    return dcg / idcg if idcg else 0.0, 0.0 if first is None else 1.0 / (first + 1), float(first is not None)


class TokenEmbeddings(Embeddings):
    """The same encoder as token matrices (Qdrant's multivector input);
    documents come from the vectors encoded once for both stores."""

    def __init__(self, encoder, cached):
        self.encoder, self.cached = encoder, cached

    def embed_documents(self, texts):
        return [self.cached[t].tolist() for t in texts]

    def embed_query(self, text):
        return self.encoder.encode([text], is_query=True)[0].tolist()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--evaldata", required=True)
    p.add_argument("--queries", type=int, default=0, help="use the first N queries (0: all)")
    p.add_argument("--work", default=None)
    a = p.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="lc-vs-qdrant-")
    docs = read_jsonl(os.path.join(a.evaldata, "corpus/docs.jsonl"))
    queries = read_jsonl(os.path.join(a.evaldata, "queries/queries.jsonl"))
    if a.queries:
        queries = queries[: a.queries]
    rel = read_qrels(os.path.join(a.evaldata, "qrels.tsv"))
    texts = [d["text"] for d in docs]
    ids = [d["id"] for d in docs]

    encoder = tessera.Encoder(a.model)
    t = time.perf_counter()
    vecs = encoder.encode(texts)
    print(f"encoded {len(texts)} passages in {time.perf_counter() - t:.1f} s (once, for both stores)")

    db = tessera.Database(os.path.join(work, "tessera"))
    col = db.create_collection("debdocs", model=a.model)
    col.upsert(ids, vecs, texts=texts)
    col.flush()
    ours = TesseraVectorStore(db, "debdocs").as_retriever(search_kwargs={"k": 10})
    ours_exact = TesseraVectorStore(db, "debdocs", search_options={"exact": True}).as_retriever(search_kwargs={"k": 10})

    client = QdrantClient(path=os.path.join(work, "qdrant"))
    client.create_collection(
        "debdocs",
        vectors_config={
            "": models.VectorParams(
                size=encoder.dim,
                distance=models.Distance.DOT,  # unit-length tokens: MaxSim's dot product
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            )
        },
    )
    emb = TokenEmbeddings(encoder, dict(zip(texts, vecs)))
    qstore = QdrantVectorStore(
        client, "debdocs", embedding=emb, distance=models.Distance.DOT, validate_collection_config=False
    )
    t = time.perf_counter()
    qstore.add_texts(texts, metadatas=[{"doc_id": i} for i in ids], ids=[str(uuid.uuid5(uuid.NAMESPACE_URL, i)) for i in ids])
    print(f"qdrant local mode: {len(texts)} passages added in {time.perf_counter() - t:.1f} s")
    theirs = qstore.as_retriever(search_kwargs={"k": 10})

    runs = (
        ("tessera", ours, lambda d: d.id),
        ("tessera exact", ours_exact, lambda d: d.id),
        ("qdrant", theirs, lambda d: d.metadata["doc_id"]),
    )
    for _, r, _ in runs:  # warm each (model load, caches)
        r.invoke(queries[0]["text"])
    times = {name: [] for name, _, _ in runs}
    quality = {name: [] for name, _, _ in runs}
    for q in queries:
        for name, r, key in runs:
            t = time.perf_counter()
            got = r.invoke(q["text"])
            times[name].append(time.perf_counter() - t)
            quality[name].append(metrics([key(d) for d in got], rel.get(q["id"], {})))
    print(f"{len(queries)} queries, k = 10, interleaved")
    print("| store | nDCG@10 | MRR@10 | HR@10 | p50 ms | p90 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in times:
        m = np.mean(np.array(quality[name]), axis=0)
        ts = sorted(times[name])
        p50, p90 = statistics.median(ts) * 1e3, ts[int(0.9 * (len(ts) - 1))] * 1e3
        print(f"| {name} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {p50:.2f} | {p90:.2f} |")
    for name in ("tessera", "tessera exact"):
        ratio = [b / a for a, b in zip(times[name], times["qdrant"])]
        print(f"per-query time ratio qdrant / {name}: median {statistics.median(ratio):.1f}x")


if __name__ == "__main__":
    main()
