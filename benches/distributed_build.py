"""Ingest throughput of tessera.distributed.build (a Ray Dataset streamed to
one builder per shard, the shards built in parallel and attached to their
replicas) against one embedded collection and against upserts through a
ShardedCollection, on the same synthetic documents, in one run:

    python benches/distributed_build.py [--docs 20000] [--shards 1,2,4] [--replicas 1]

Documents are generated inside the pipeline from their number (16-95 tokens of
dim 128, float16), the way a real pipeline reads them from storage: the
driver holds none of them. Prints one JSON line per setting: seconds,
documents/s, tokens/s and the ratio to the embedded collection's time.
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
from tessera.distributed import ShardedCollection, build


def tokens_of(i: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.standard_normal((int(rng.integers(16, 96)), dim)).astype(np.float16)


def rows(batch: dict, dim: int) -> dict:
    ids = batch["id"]
    return {"id": np.array([f"d{i}" for i in ids], dtype=object),
            "tokens": np.array([tokens_of(int(i), dim) for i in ids] + [None], dtype=object)[:-1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1000)
    a = ap.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    n_tokens = sum(tokens_of(i, a.dim).shape[0] for i in range(a.docs))

    def report(setting: str, seconds: float, base: float) -> None:
        print(json.dumps({"setting": setting, "seconds": round(seconds, 2), "docs_per_s": round(a.docs / seconds),
                          "tokens_per_s": round(n_tokens / seconds), "ratio_time": round(seconds / base, 2)}), flush=True)

    def batches():
        for lo in range(0, a.docs, a.batch):
            hi = min(a.docs, lo + a.batch)
            yield [f"d{i}" for i in range(lo, hi)], [tokens_of(i, a.dim) for i in range(lo, hi)]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        with tessera.Database(tmp / "one") as db:
            one = db.create_collection("c", a.dim)
            for ids, toks in batches():
                one.upsert(ids, toks)
            one.flush()
        base = time.perf_counter() - t
        report("embedded upsert", base, base)
        for s in [int(x) for x in a.shards.split(",")]:
            col = ShardedCollection.create("c", a.dim, shards=s, replicas=a.replicas, root=tmp / f"up{s}")
            t = time.perf_counter()
            for ids, toks in batches():
                col.upsert(ids, toks)
            col.flush()
            report(f"shards={s} replicas={a.replicas} upsert", time.perf_counter() - t, base)
            col.close()
            dataset = ray.data.range(a.docs, override_num_blocks=max(4, 2 * s)).map_batches(
                rows, fn_kwargs={"dim": a.dim}, batch_format="numpy")
            t = time.perf_counter()
            col = build(dataset, "c", a.dim, shards=s, replicas=a.replicas, root=tmp / f"build{s}", batch_size=a.batch)
            report(f"shards={s} replicas={a.replicas} build", time.perf_counter() - t, base)
            print(json.dumps({"phases_s": col.build_seconds}), flush=True)
            assert len(col) == a.docs
            col.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
