#!/usr/bin/env python3
"""OpenBLAS sgemm-based MaxSim, the side-by-side baseline for `tessera bench maxsim`.

Scores one query (Q: query_tokens x dim) against `docs` documents of
`doc_tokens` tokens each, stored as float16 like Tessera's segments, the way a
numpy user would: convert a block of documents to float32, one sgemm
`Q @ D.T` over the concatenated block, then max over each document's tokens and
sum over query tokens. Prints one JSON line with docs_per_s and gflops
(2 * query_tokens * doc_tokens * dim flops per document, the same count
Tessera reports).

    pip install numpy threadpoolctl
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benches/numpy_maxsim.py \
        --query-tokens 32 --doc-tokens 200 --dim 128 --docs 20000 --threads 1
"""
import argparse
import json
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--query-tokens", type=int, default=32)
    p.add_argument("--doc-tokens", type=int, default=200)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--block", type=int, default=512, help="documents per sgemm call")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    rng = np.random.default_rng(42)
    q = rng.standard_normal((a.query_tokens, a.dim), dtype=np.float32)
    d16 = rng.standard_normal((a.docs * a.doc_tokens, a.dim), dtype=np.float32).astype(np.float16)

    def run():
        scores = np.empty(a.docs, dtype=np.float32)
        for s in range(0, a.docs, a.block):
            e = min(a.docs, s + a.block)
            block = d16[s * a.doc_tokens : e * a.doc_tokens].astype(np.float32)
            sim = q @ block.T  # (query_tokens, n * doc_tokens)
            sim = sim.reshape(a.query_tokens, e - s, a.doc_tokens)
            scores[s:e] = sim.max(axis=2).sum(axis=0)
        return scores

    with threadpool_limits(limits=a.threads):
        run()  # warm-up
        best = float("inf")
        for _ in range(a.repeats):
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
        blas = [
            {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
    flops = 2.0 * a.query_tokens * a.doc_tokens * a.dim * a.docs
    print(json.dumps({
        "impl": "numpy-openblas-sgemm",
        "query_tokens": a.query_tokens, "doc_tokens": a.doc_tokens, "dim": a.dim,
        "docs": a.docs, "threads": a.threads,
        "docs_per_s": round(a.docs / best, 1), "gflops": round(flops / best / 1e9, 2),
        "blas": blas,
    }))


if __name__ == "__main__":
    main()
