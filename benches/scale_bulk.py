#!/usr/bin/env python3
"""Scale a bulk-format folder by repetition, for ingest throughput benchmarks.

Writes OUT/docs.jsonl, OUT/tokens.npy, OUT/offsets.npy holding the input's
documents REPEAT times (ids suffixed with `#r`), streaming the token rows so
memory stays small. Example (10.2 M tokens from the evaluation corpus):

    pip install numpy
    python3 benches/scale_bulk.py ../shared/evaldata/debdocs/corpus /tmp/debdocs-x18 18
    /usr/bin/time -v ./target/release/tessera ingest --db /tmp/scale-db --collection deb /tmp/debdocs-x18
"""
import json
import sys

import numpy as np


def main():
    src, out, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import os

    os.makedirs(out, exist_ok=True)
    tokens = np.load(f"{src}/tokens.npy", mmap_mode="r")
    offsets = np.load(f"{src}/offsets.npy").astype(np.uint64)
    docs = [json.loads(l) for l in open(f"{src}/docs.jsonl")]
    n_rows = tokens.shape[0]
    with open(f"{out}/docs.jsonl", "w") as f:
        for r in range(repeat):
            for d in docs:
                d = dict(d, id=f"{d['id']}#{r}")
                f.write(json.dumps(d) + "\n")
    big = np.lib.format.open_memmap(f"{out}/tokens.npy", mode="w+", dtype=tokens.dtype, shape=(n_rows * repeat, tokens.shape[1]))
    for r in range(repeat):
        big[r * n_rows : (r + 1) * n_rows] = tokens
    big.flush()
    all_offsets = np.concatenate([offsets[:-1] + np.uint64(r * n_rows) for r in range(repeat)] + [np.array([n_rows * repeat], dtype=np.uint64)])
    np.save(f"{out}/offsets.npy", all_offsets)
    print(f"{len(docs) * repeat} documents, {n_rows * repeat} tokens -> {out}")


if __name__ == "__main__":
    main()
