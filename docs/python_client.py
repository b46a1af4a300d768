#!/usr/bin/env python3
"""A small Python client for the Tessera query server, and a demo.

It needs only `requests` and `numpy` (pip install requests numpy); there is no
client package to install. Copy the `Tessera` class into your project.

Documents and queries are token matrices: one row of `dim` floats per token.
A ColBERT-style model produces them, e.g. PyLate
(`model.encode(texts, is_query=False)`) or the colbert-ai package (its
checkpoint's `docFromText` / `queryFromText`); convert each to a float32
numpy array of shape [tokens, dim]. This demo uses random unit vectors
instead, so it runs without a model.

The client sends tensors packed (base64 of little-endian f16 or f32, see
docs/SERVER.md) and decodes stored tokens, which come back as f16.

Run a server, then the demo:

    cargo run --release -p tessera-cli -- serve --db /tmp/demo-db
    python3 docs/python_client.py --url http://127.0.0.1:7700 [--api-key KEY]

The demo creates a collection `pyclient_demo` (dim 128), upserts 200 random
documents, searches (tensor, exact, filtered, hybrid with text), reranks,
fetches a document and checks the f16 round trip, deletes documents, and
drops the collection (unless --keep). It exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any, Iterable

import numpy as np
import requests


class TesseraError(Exception):
    """A non-2xx answer: the HTTP status and the server's error code and message."""

    def __init__(self, status: int, code: str, message: str, limit: str | None = None):
        self.status, self.code, self.message, self.limit = status, code, message, limit
        extra = f" [limit {limit}]" if limit else ""
        super().__init__(f"HTTP {status} {code}: {message}{extra}")


def pack(tokens: Any, dtype: str = "f16") -> dict:
    """A [tokens, dim] matrix as `{"dtype", "shape", "data"}` (base64, little-endian)."""
    a = np.asarray(tokens, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"tokens must be a non-empty [tokens, dim] matrix, got shape {a.shape}")
    np_dtype = {"f16": "<f2", "f32": "<f4"}[dtype]
    data = np.ascontiguousarray(a.astype(np_dtype)).tobytes()
    return {"dtype": dtype, "shape": list(a.shape), "data": base64.b64encode(data).decode("ascii")}


def unpack(t: Any) -> np.ndarray:
    """Stored tokens (packed f16/f32, or nested lists) as a numpy array."""
    if isinstance(t, dict):
        np_dtype = {"f16": "<f2", "float16": "<f2", "f32": "<f4", "float32": "<f4"}[t["dtype"]]
        return np.frombuffer(base64.b64decode(t["data"]), dtype=np_dtype).reshape(t["shape"])
    return np.asarray(t, dtype=np.float32)


class Tessera:
    """A client of one Tessera server (HTTP JSON API, docs/SERVER.md)."""

    def __init__(self, url: str = "http://127.0.0.1:7700", api_key: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.session.request(method, self.url + path, json=body, timeout=self.timeout)
        if r.ok:
            return r.json()
        try:
            e = r.json()["error"]
            code, message, limit = e["code"], e["message"], e.get("limit")
        except (ValueError, KeyError, TypeError):
            code, message, limit = "http_error", r.text.strip(), None
        raise TesseraError(r.status_code, code, message, limit)

    # Server

    def health(self) -> dict:
        return self._call("GET", "/health")

    # Collections

    def list_collections(self) -> list[dict]:
        return self._call("GET", "/v1/collections")["collections"]

    def create_collection(
        self,
        name: str,
        dim: int,
        *,
        index: str | None = None,
        text: str | None = None,
        durability: str | None = None,
        if_not_exists: bool = False,
    ) -> dict:
        """index: pooled|muvera|none; text: english|plain|cjk|none; durability: sync|buffered."""
        body = {"name": name, "dim": dim, "if_not_exists": if_not_exists}
        for k, v in (("index", index), ("text", text), ("durability", durability)):
            if v is not None:
                body[k] = v
        return self._call("POST", "/v1/collections", body)

    def info(self, name: str) -> dict:
        return self._call("GET", f"/v1/collections/{name}")

    def drop_collection(self, name: str) -> None:
        self._call("DELETE", f"/v1/collections/{name}")

    def flush(self, name: str) -> dict:
        return self._call("POST", f"/v1/collections/{name}/flush")

    def compact(self, name: str) -> dict:
        return self._call("POST", f"/v1/collections/{name}/compact")

    # Documents

    def upsert(self, name: str, docs: Iterable[dict], *, dtype: str = "f16", batch_size: int = 256) -> int:
        """docs: dicts with `id`, `tokens` (a [tokens, dim] array) and optional
        `text` and `payload`. Sent in batches; each is durable when this returns."""
        total, batch = 0, []
        for d in docs:
            out = {"id": d["id"], "tokens": pack(d["tokens"], dtype)}
            for k in ("text", "payload"):
                if d.get(k) is not None:
                    out[k] = d[k]
            batch.append(out)
            if len(batch) == batch_size:
                total += self._call("POST", f"/v1/collections/{name}/upsert", {"documents": batch})["upserted"]
                batch = []
        if batch:
            total += self._call("POST", f"/v1/collections/{name}/upsert", {"documents": batch})["upserted"]
        return total

    def delete(self, name: str, ids: list[str]) -> int:
        """Returns how many of the ids existed."""
        return self._call("POST", f"/v1/collections/{name}/delete", {"ids": list(ids)})["deleted"]

    def get(self, name: str, ids: list[str], *, tokens: bool = True) -> tuple[list[dict], list[str]]:
        """(documents with `tokens` as float16 numpy arrays, missing ids)."""
        body = {"ids": list(ids), "tokens": "f16" if tokens else "none"}
        r = self._call("POST", f"/v1/collections/{name}/get", body)
        for d in r["documents"]:
            if "tokens" in d:
                d["tokens"] = unpack(d["tokens"])
        return r["documents"], r["missing"]

    # Search

    def search(
        self,
        name: str,
        query: Any = None,
        k: int = 10,
        *,
        text: str | None = None,
        filter: dict | None = None,
        candidates: int | None = None,
        exact: bool = False,
        ids: list[str] | None = None,
        dtype: str = "f32",
        **extra: Any,
    ) -> dict:
        """A tensor search of `query` (two-stage, or exhaustive with exact=True),
        or a hybrid query when `text`, `ids` or hybrid options (vector,
        rerank_only, fusion, rrf_k0, weights: passed through **extra) are given.
        Returns {"mode", "hits"}."""
        body: dict[str, Any] = {"k": k}
        if query is not None:
            body["tokens"] = pack(query, dtype)
        if text is not None:
            body["text"] = text
        if filter is not None:
            body["filter"] = filter
        if candidates is not None:
            body["candidates"] = candidates
        if exact:
            body["exact"] = True
        if ids:
            body["ids"] = list(ids)
        body.update(extra)
        return self._call("POST", f"/v1/collections/{name}/search", body)

    def rerank(self, name: str, query: Any, ids: list[str], *, dtype: str = "f32", **extra: Any) -> dict:
        """Exact MaxSim of `query` against the given documents: {"hits", "missing"}."""
        body = {"tokens": pack(query, dtype), "ids": list(ids), **extra}
        return self._call("POST", f"/v1/collections/{name}/rerank", body)


# The demo

WORDS = (
    "late interaction retrieval maxsim token embeddings colbert index segment "
    "query document search rerank hybrid fusion vector database memory disk"
).split()


def unit_rows(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def show(title: str, hits: list[dict]) -> None:
    print(title)
    for i, h in enumerate(hits, 1):
        extra = ""
        if "fused" in h:
            srcs = ", ".join(f"{s['source']}#{s['rank']}" for s in h.get("sources", []))
            extra = f"  fused={h['fused']:.4f} [{srcs}]"
        print(f"  {i:2d}. {h['id']:<8} score={h['score']:.4f}{extra}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:7700")
    p.add_argument("--api-key", default=None, help="a read-write key, if the server has keys")
    p.add_argument("--collection", default="pyclient_demo")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="do not drop the collection at the end")
    a = p.parse_args()

    db = Tessera(a.url, a.api_key)
    print("health:", db.health())
    name, dim, rng = a.collection, 128, np.random.default_rng(a.seed)

    # A fresh collection: drop a leftover from an earlier run, then create.
    try:
        db.drop_collection(name)
    except TesseraError as e:
        if e.code != "not_found":
            raise
    info = db.create_collection(name, dim, if_not_exists=True)
    again = db.create_collection(name, dim, if_not_exists=True)  # same config: returns it
    assert again["name"] == info["name"]
    print(f"collection {name}: dim={info['dim']} index={info['index']} text={info['text']}")

    # 200 documents of 10-40 unit-normalised random tokens; some with text and payload.
    docs = []
    for i in range(200):
        d = {"id": f"doc{i:03d}", "tokens": unit_rows(rng.standard_normal((int(rng.integers(10, 41)), dim)))}
        if i % 3 == 0:
            d["text"] = " ".join(rng.choice(WORDS, size=8)) + f" marker{i}"
        if i % 2 == 0:
            d["payload"] = {"group": i % 5, "year": 2000 + i % 25}
        docs.append(d)
    n = db.upsert(name, docs[:100], dtype="f16") + db.upsert(name, docs[100:], dtype="f32")
    assert n == 200, n
    print(f"upserted {n} documents; info: documents={db.info(name)['documents']}")

    # A query made of noisy copies of some of one document's tokens.
    target = docs[42]
    rows = rng.choice(len(target["tokens"]), size=8, replace=False)
    query = unit_rows(target["tokens"][rows] + 0.05 * rng.standard_normal((8, dim)))
    r = db.search(name, query, k=5)
    show(f"search ({r['mode']}), target {target['id']}:", r["hits"])
    assert r["mode"] == "two_stage" and r["hits"][0]["id"] == target["id"], r["hits"][:1]
    r = db.search(name, query, k=5, exact=True, include_payload=False)
    assert r["mode"] == "exact" and r["hits"][0]["id"] == target["id"]

    # A payload filter (docs/FILTERS.md).
    r = db.search(name, query, k=5, filter={"field": "group", "eq": 3})
    assert r["hits"] and all(h["payload"]["group"] == 3 for h in r["hits"]), r["hits"]
    print(f"filtered search: {len(r['hits'])} hits, all with group 3")

    # Hybrid: BM25 over the text, fused with the tensor ranking, MaxSim rerank.
    t2 = docs[99]  # has text (99 % 3 == 0)
    q2 = unit_rows(t2["tokens"][:6] + 0.2 * rng.standard_normal((6, dim)))
    r = db.search(name, q2, k=5, text=f"marker99 {t2['text'].split()[0]}", candidates=50)
    show(f"hybrid search ({r['mode']}), target {t2['id']}:", r["hits"])
    assert r["mode"] == "hybrid" and r["hits"][0]["id"] == t2["id"]
    assert {s["source"] for s in r["hits"][0]["sources"]} == {"tensor", "text"}
    r = db.search(name, text="marker99", k=3)  # text alone: the score is the fused score
    assert r["hits"][0]["id"] == t2["id"]

    # Rerank a few chosen ids (one unknown).
    ids = ["doc007", "doc150", target["id"], "doc003", "no-such-doc"]
    r = db.rerank(name, query, ids, include_text=False)
    show("rerank:", r["hits"])
    assert r["hits"][0]["id"] == target["id"] and r["missing"] == ["no-such-doc"], r

    # Fetch: tokens come back as stored, f16.
    got, missing = db.get(name, [target["id"], "no-such-doc"])
    assert missing == ["no-such-doc"] and len(got) == 1
    g = got[0]
    assert g["tokens"].dtype == np.float16 and g["tokens"].shape == target["tokens"].shape
    assert np.array_equal(g["tokens"], target["tokens"].astype(np.float16))
    assert np.allclose(g["tokens"].astype(np.float32), target["tokens"], rtol=2**-11, atol=2**-24)
    assert g["payload"] == target["payload"] and g["text"] == target["text"]
    print(f"get {g['id']}: tokens {g['tokens'].shape} f16 round trip ok, payload {g['payload']}")

    # Errors carry the server's code and message.
    try:
        db.search(name, query, k=0)
        raise AssertionError("k=0 was accepted")
    except TesseraError as e:
        assert e.status == 400 and e.code == "bad_request"
        print(f"expected error: {e}")

    # Delete, then drop.
    deleted = db.delete(name, [target["id"], "doc001", "no-such-doc"])
    assert deleted == 2, deleted
    r = db.search(name, query, k=5)
    assert all(h["id"] != target["id"] for h in r["hits"])
    print(f"deleted {deleted}; documents now {db.info(name)['documents']}")
    if not a.keep:
        db.drop_collection(name)
        print(f"dropped {name}")
    print("all checks passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TesseraError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
