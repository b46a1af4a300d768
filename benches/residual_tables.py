#!/usr/bin/env python3
"""Residual storage, the design check (issue #28): what exact MaxSim keeps of
the real data's quality when each token is stored as its nearest centroid
plus a 2- or 4-bit bucket per dimension, with bucket tables learned per
dimension (Tessera's design, storage-format/SPEC.md "Residual tokens") or
one table for all dimensions (PLAID's).

An independent numpy model of the format, not the engine: spherical k-means
(8 Lloyd iterations on a sample of 64·k tokens, seeded), every token coded
with its nearest centroid by dot product, tables from the sample's
residuals (cutoffs at the quantiles i / 2^bits, each bucket's weight the
mean of its values), tokens decoded, then exact MaxSim of all queries over
the decoded tokens, scored with nDCG@10 and MRR@10 against the judgments
and recall@10 of the exact top-10 over the stored f16 values.

    python3 benches/residual_tables.py --evaldata ../shared/evaldata --k 4096
"""
import argparse
import json
import time

import numpy as np


def load(root):
    e = f"{root}/debdocs"
    x = np.load(f"{e}/corpus/tokens.npy").astype(np.float32)
    off = np.load(f"{e}/corpus/offsets.npy").astype(np.int64)
    q = np.load(f"{e}/queries/tokens.npy").astype(np.float32)
    qoff = np.load(f"{e}/queries/offsets.npy").astype(np.int64)
    ids = [json.loads(line)["id"] for line in open(f"{e}/corpus/docs.jsonl")]
    qids = [json.loads(line)["id"] for line in open(f"{e}/queries/queries.jsonl")]
    qrels = {}
    with open(f"{e}/qrels.tsv") as f:
        next(f)
        for line in f:
            a, b, c = line.split("\t")
            qrels.setdefault(a, {})[b] = int(c)
    return x, off, q, qoff, ids, qids, qrels


def nearest(a, c):
    out = np.empty(len(a), np.int64)
    for s in range(0, len(a), 65536):
        out[s : s + 65536] = np.argmax(a[s : s + 65536] @ c.T, axis=1)
    return out


def kmeans(x, k, rng):
    sample = x[rng.choice(len(x), min(len(x), 64 * k), replace=False)]
    c = sample[rng.choice(len(sample), k, replace=False)].copy()
    for _ in range(8):
        a = nearest(sample, c)
        s = np.zeros_like(c)
        np.add.at(s, a, sample)
        n = np.linalg.norm(s, axis=1, keepdims=True)
        c = np.where(n > 0, s / np.maximum(n, 1e-12), c)
    return c, sample


def tables(residuals, bits, per_dim):
    nb = 1 << bits
    cols = [np.sort(residuals[:, k]) for k in range(residuals.shape[1])] if per_dim else [np.sort(residuals.ravel())]
    cuts, weights = [], []
    for col in cols:
        m = len(col)
        cut = np.array([col[min(i * m // nb, m - 1)] for i in range(1, nb)])
        b = np.searchsorted(cut, col, side="right")
        w = [col[b == j].mean() if (b == j).any() else col[min((2 * j + 1) * m // (2 * nb), m - 1)] for j in range(nb)]
        cuts.append(cut)
        weights.append(np.array(w))
    if not per_dim:
        cuts, weights = cuts * residuals.shape[1], weights * residuals.shape[1]
    return cuts, weights


def scores_of(q, qoff, d, off):
    out = np.zeros((len(qoff) - 1, len(off) - 1), np.float32)
    for i in range(len(qoff) - 1):
        s = q[qoff[i] : qoff[i + 1]] @ d.T
        out[i] = np.maximum.reduceat(s, off[:-1], axis=1).sum(0)
    return out


def quality(scores, ids, qids, qrels):
    ndcg, mrr = [], []
    for i, q in enumerate(qids):
        top = np.argsort(-scores[i], kind="stable")[:10]
        rel = qrels.get(q, {})
        dcg = sum(rel.get(ids[d], 0) / np.log2(r + 2) for r, d in enumerate(top))
        ideal = sum(g / np.log2(r + 2) for r, g in enumerate(sorted(rel.values(), reverse=True)[:10]))
        ndcg.append(dcg / ideal if ideal > 0 else 0.0)
        mrr.append(next((1 / (r + 1) for r, d in enumerate(top) if rel.get(ids[d], 0) > 0), 0.0))
    return float(np.mean(ndcg)), float(np.mean(mrr))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--evaldata", default="../shared/evaldata")
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    x, off, q, qoff, ids, qids, qrels = load(a.evaldata)
    t = time.time()
    c, sample = kmeans(x, a.k, np.random.default_rng(a.seed))
    codes = nearest(x, c)
    residuals = x - c[codes]
    sample_res = sample - c[nearest(sample, c)]
    base = scores_of(q, qoff, x, off)
    exact_top = np.argsort(-base, axis=1, kind="stable")[:, :10]
    nd0, mrr0 = quality(base, ids, qids, qrels)
    print(json.dumps({"storage": "f16", "ndcg10": round(nd0, 4), "mrr10": round(mrr0, 4), "k": a.k}))
    for bits in (2, 4):
        for per_dim in (True, False):
            cuts, weights = tables(sample_res, bits, per_dim)
            d = np.empty_like(x)
            for k in range(x.shape[1]):
                d[:, k] = c[codes, k] + weights[k][np.searchsorted(cuts[k], residuals[:, k], side="right")]
            s = scores_of(q, qoff, d, off)
            nd, mrr = quality(s, ids, qids, qrels)
            top = np.argsort(-s, axis=1, kind="stable")[:, :10]
            recall = float(np.mean([len(set(u) & set(v)) / 10 for u, v in zip(top, exact_top)]))
            print(json.dumps({
                "storage": f"residual{bits}", "tables": "per-dimension" if per_dim else "global",
                "ndcg10": round(nd, 4), "delta": round(nd - nd0, 4), "mrr10": round(mrr, 4),
                "recall10_vs_f16_exact": round(recall, 3),
            }))
    print(json.dumps({"seconds": round(time.time() - t, 1)}))


if __name__ == "__main__":
    main()
