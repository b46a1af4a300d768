#!/usr/bin/env python3
"""Python embedded engine vs the Rust CLI on the same data, in one run.

Measures, on the real evaluation data (or any bulk-format corpus + queries):

1. ingest tokens/s: `tessera ingest` of the bulk folder vs `tessera.Database`
   upserts of the same numpy arrays (flat tokens + offsets, 512 per batch),
   each into a fresh database, each including its final flush;
2. per-query search latency at k = 10 (two-stage at --candidates, and
   exact), 1 engine thread: `tessera bench search` (its 1-thread p50) vs
   `col.search` from Python on the same database (RAYON_NUM_THREADS=1), in
   alternating rounds; the overhead is the ratio of medians;
3. throughput at 2 engine threads (RAYON_NUM_THREADS=2): `col.search` one
   query at a time vs `col.search_batch` of all queries vs two Python threads.

    cargo build --release -p tessera-cli
    pip install ./python
    python benches/python_bench.py [--data ../shared/evaldata/debdocs] [--rounds 5]

Prints a table and, with --json FILE, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, threading, numpy as np, tessera
db_path, queries_dir, mode, k, candidates = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
tok = np.load(f"{queries_dir}/tokens.npy"); off = np.load(f"{queries_dir}/offsets.npy")
qs = [np.ascontiguousarray(tok[off[i]:off[i+1]]) for i in range(len(off) - 1)]
with tessera.Database(db_path) as db:
    col = db.collection("deb")
    out = {}
    if mode == "latency":
        # In the CLI's order: exact first (it touches every document), then two-stage.
        for name, kw in (("exact", dict(exact=True)), ("two_stage", dict(candidates=candidates))):
            for q in qs[:50] if name == "exact" else qs:
                col.search(q, k=k, **kw)  # warm up
            lat = []
            for q in qs:
                t = time.perf_counter(); col.search(q, k=k, **kw); lat.append(time.perf_counter() - t)
            lat.sort()
            out[name] = {"p50_ms": lat[len(lat) // 2] * 1e3, "mean_ms": sum(lat) / len(lat) * 1e3}
    else:
        kw = dict(candidates=candidates)
        col.search_batch(qs[:100], k=k, **kw)
        t = time.perf_counter()
        for q in qs: col.search(q, k=k, **kw)
        out["one_by_one_qps"] = len(qs) / (time.perf_counter() - t)
        t = time.perf_counter(); col.search_batch(qs, k=k, **kw)
        out["search_batch_qps"] = len(qs) / (time.perf_counter() - t)
        half = len(qs) // 2
        def run(part):
            for q in part: col.search(q, k=k, **kw)
        ts = [threading.Thread(target=run, args=(p,)) for p in (qs[:half], qs[half:])]
        t = time.perf_counter()
        for th in ts: th.start()
        for th in ts: th.join()
        out["two_python_threads_qps"] = len(qs) / (time.perf_counter() - t)
print(json.dumps(out))
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                keep = ["avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_vpopcntdq", "avx512_fp16", "amx_bf16"]
                return " ".join(f for f in keep if f in flags)
    except OSError:
        pass
    return ""


def child(args, db: Path, mode: str, threads: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), str(args.data / "queries"), mode, str(args.k), str(args.candidates)],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/evaldata/debdocs")
    ap.add_argument("--tessera", type=Path, default=REPO / "target/release/tessera")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import numpy as np

    import tessera

    if not (args.data / "corpus/tokens.npy").exists():
        sys.exit(f"no bulk corpus at {args.data}/corpus (pass --data)")
    if not args.tessera.exists():
        sys.exit(f"no tessera binary at {args.tessera}: cargo build --release -p tessera-cli")
    corpus = args.data / "corpus"
    res: dict = {"cpu": cpu_model(), "flags": cpu_flags(), "k": args.k, "candidates": args.candidates}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. Ingest.
        t = time.perf_counter()
        subprocess.run([str(args.tessera), "ingest", "--db", str(tmp / "cli"), "--collection", "deb", str(corpus)],
                       check=True, capture_output=True)  # fmt: skip
        cli_s = time.perf_counter() - t
        t = time.perf_counter()
        tokens, offsets = np.load(corpus / "tokens.npy"), np.load(corpus / "offsets.npy")
        docs = [json.loads(line) for line in (corpus / "docs.jsonl").read_text().splitlines() if line.strip()]
        with tessera.Database(tmp / "py") as db:
            col = db.create_collection("deb", tokens.shape[1])
            ids, texts = [d["id"] for d in docs], [d.get("text") for d in docs]
            for s in range(0, len(ids), 512):
                e = min(s + 512, len(ids))
                col.upsert(ids[s:e], tokens[offsets[s] : offsets[e]], texts[s:e], offsets=offsets[s : e + 1] - offsets[s])
            col.flush()
        py_s = time.perf_counter() - t
        n_tok = int(tokens.shape[0])
        res["ingest"] = {"tokens": n_tok, "cli_tokens_per_s": n_tok / cli_s, "python_tokens_per_s": n_tok / py_s}
        # 2. Latency, alternating rounds on the CLI's database.
        cli_p50, cli_exact, py_p50, py_exact = [], [], [], []
        for _ in range(args.rounds):
            out = subprocess.run(
                [str(args.tessera), "bench", "search", "--db", str(tmp / "cli"), "--collection", "deb", "--queries",
                 str(args.data / "queries"), "--k", str(args.k), "--candidates", str(args.candidates), "--json"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            if len(rows) == 1 and isinstance(rows[0].get("rows"), list):
                rows = rows[0]["rows"]
            cli_exact.append(next(r for r in rows if r["setting"] == "exact")["p50_ms"])
            cli_p50.append(next(r for r in rows if r["candidates"] == args.candidates)["p50_ms"])
            py = child(args, tmp / "cli", "latency", 1)
            py_p50.append(py["two_stage"]["p50_ms"])
            py_exact.append(py["exact"]["p50_ms"])
        med = statistics.median
        res["latency_1_thread"] = {
            "two_stage": {"cli_p50_ms": med(cli_p50), "python_p50_ms": med(py_p50), "ratio": med(py_p50) / med(cli_p50)},
            "exact": {"cli_p50_ms": med(cli_exact), "python_p50_ms": med(py_exact), "ratio": med(py_exact) / med(cli_exact)},
            "rounds": args.rounds,
        }
        # 3. Throughput at 2 engine threads.
        res["throughput_2_threads"] = child(args, tmp / "cli", "throughput", 2)
    print(f"{res['cpu']} [{res['flags']}]")
    i = res["ingest"]
    print(f"ingest {i['tokens']} tokens: tessera ingest {i['cli_tokens_per_s']:,.0f} tok/s, "
          f"Python upsert {i['python_tokens_per_s']:,.0f} tok/s")  # fmt: skip
    for name, r in res["latency_1_thread"].items():
        if isinstance(r, dict):
            print(f"{name:9} k={args.k}: CLI p50 {r['cli_p50_ms']:.3f} ms, Python p50 {r['python_p50_ms']:.3f} ms, "
                  f"ratio {r['ratio']:.3f}")  # fmt: skip
    t = res["throughput_2_threads"]
    print(f"2 threads: one by one {t['one_by_one_qps']:.0f} q/s, search_batch {t['search_batch_qps']:.0f} q/s, "
          f"two Python threads {t['two_python_threads_qps']:.0f} q/s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
