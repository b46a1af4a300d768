#!/usr/bin/env python3
"""Check `tessera eval` against an independent implementation, pytrec_eval
(trec_eval's C code; `pip install pytrec-eval-terrier` ships wheels).

    python3 benches/check_eval_pytrec.py [--tessera target/debug/tessera] \
        [--run ../shared/evaldata/debdocs/exact_top100.run] \
        [--qrels ../shared/evaldata/debdocs/qrels.tsv] [--k 1,5,10,100]

Not part of CI. Conventions matched explicitly so that the comparison tests
the metrics, not tie-breaking or averaging rules:
- the run is given to pytrec_eval in tessera's order (scores replaced by
  descending ranks), as trec_eval breaks score ties by document id;
- each list is truncated to K, so trec_eval's uncut `recip_rank` is MRR@K and
  `recip_rank > 0` is Hit-Rate@K; nDCG is `ndcg_cut.K`, recall `recall.K`;
- averages are over queries with a relevant judgment, a judged query missing
  from the run counting 0 (trec_eval skips it; we add the zeros).
Exit status 1 if any value differs by more than 1e-9.
"""
import argparse
import json
import subprocess
import sys

import pytrec_eval


def read_qrels(path):
    q = {}
    with open(path) as f:
        for n, line in enumerate(f):
            p = line.split()
            if not p:
                continue
            if len(p) == 3:
                if n == 0:
                    try:
                        float(p[2])
                    except ValueError:
                        continue  # BEIR header
                qid, doc, rel = p
            else:
                qid, _, doc, rel = p
            q.setdefault(qid, {})[doc] = int(float(rel))
    return q


def read_run(path):
    rows = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            if p:
                rows.setdefault(p[0], []).append((-float(p[4]), int(p[3]), p[2]))
    return {q: [d for _, _, d in sorted(v)] for q, v in rows.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", default="target/debug/tessera")
    ap.add_argument("--run", default="../shared/evaldata/debdocs/exact_top100.run")
    ap.add_argument("--qrels", default="../shared/evaldata/debdocs/qrels.tsv")
    ap.add_argument("--k", default="1,5,10,100")
    a = ap.parse_args()
    ks = [int(k) for k in a.k.split(",")]

    out = subprocess.run(
        [a.tessera, "eval", "--run", a.run, "--qrels", a.qrels, "--k", a.k, "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    ours = {m["k"]: m for m in json.loads(out)["metrics"]}

    qrels = read_qrels(a.qrels)
    judged = [q for q, r in qrels.items() if any(v > 0 for v in r.values())]
    run = read_run(a.run)
    worst = 0.0
    for k in ks:
        cut = {q: {d: float(len(v) - i) for i, d in enumerate(v[:k])} for q, v in run.items() if q in qrels}
        ev = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", f"ndcg_cut.{k}", f"recall.{k}"})
        res = ev.evaluate(cut)
        n = len(judged)
        get = lambda q, m: res[q][m] if q in res else 0.0  # noqa: E731
        ref = {
            "hit_rate": sum(get(q, "recip_rank") > 0 for q in judged) / n,
            "mrr": sum(get(q, "recip_rank") for q in judged) / n,
            "ndcg": sum(get(q, f"ndcg_cut_{k}") for q in judged) / n,
            "recall": sum(get(q, f"recall_{k}") for q in judged) / n,
        }
        for name, v in ref.items():
            d = abs(ours[k][name] - v)
            worst = max(worst, d)
            flag = "ok" if d <= 1e-9 else "DIFFERS"
            print(f"{name}@{k:<4} tessera {ours[k][name]:.6f}  pytrec_eval {v:.6f}  {flag}")
    print(f"largest difference {worst:.2e}")
    sys.exit(0 if worst <= 1e-9 else 1)


if __name__ == "__main__":
    main()
