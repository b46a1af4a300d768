"""Fan-out overhead of tessera.distributed against one embedded collection.

Loads the same synthetic documents into one embedded collection and into
sharded collections of S = 1, 2, 4 shards (one replica each) on a local Ray
instance, then times the same searches on each, in one run:

    python benches/distributed_overhead.py [--docs 20000] [--queries 200]

Prints one JSON line per setting: p50/p99 ms and the ratio of p50 to the
embedded collection's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

import tessera
from tessera.distributed import ShardedCollection


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--shards", default="1,2,4")
    a = ap.parse_args()
    rng = np.random.default_rng(7)
    ids = [f"d{i}" for i in range(a.docs)]
    docs = [rng.standard_normal((int(rng.integers(16, 96)), a.dim)).astype(np.float32) for _ in ids]
    queries = [rng.standard_normal((32, a.dim)).astype(np.float32) for _ in range(a.queries)]
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)

    def timed(search, mode):
        lat = []
        for q in queries:
            t = time.perf_counter()
            search(q, mode)
            lat.append((time.perf_counter() - t) * 1e3)
        lat.sort()
        return lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with tessera.Database(tmp / "one") as db:
            one = db.create_collection("c", a.dim)
            t = time.perf_counter()
            for lo in range(0, len(ids), 2000):
                one.upsert(ids[lo:lo + 2000], docs[lo:lo + 2000])
            one.flush()
            ingest = time.perf_counter() - t
            base = {}
            for mode in ("two_stage", "exact"):
                base[mode] = timed(lambda q, m: one.search(q, a.k, exact=(m == "exact")), mode)
                print(json.dumps({"setting": "embedded", "mode": mode, "p50_ms": round(base[mode][0], 2),
                                  "p99_ms": round(base[mode][1], 2), "ratio_p50": 1.0, "ingest_s": round(ingest, 2)}))
            for s in [int(x) for x in a.shards.split(",")]:
                col = ShardedCollection.create("c", a.dim, shards=s, replicas=1, root=tmp / f"s{s}")
                t = time.perf_counter()
                for lo in range(0, len(ids), 2000):
                    col.upsert(ids[lo:lo + 2000], docs[lo:lo + 2000])
                col.flush()
                ingest = time.perf_counter() - t
                for mode in ("two_stage", "exact"):
                    p50, p99 = timed(lambda q, m: col.search(q, a.k, exact=(m == "exact")), mode)
                    print(json.dumps({"setting": f"shards={s}", "mode": mode, "p50_ms": round(p50, 2),
                                      "p99_ms": round(p99, 2), "ratio_p50": round(p50 / base[mode][0], 2),
                                      "ingest_s": round(ingest, 2)}))
                col.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
