"""The HTTP API of ``tessera serve``, over sharded collections, as a Ray Serve
deployment.

A :class:`Router` holds the sharded collections under one folder (one
subfolder per collection, each a :class:`tessera.distributed.ShardedCollection`)
and answers the routes of docs/SERVER.md with the same bodies, answers and
error codes, so ``tessera.Client`` and the other clients of the single-node
server work unchanged. :func:`run` starts it on a Ray cluster::

    import ray, tessera
    from tessera.serve import run
    ray.init()
    url = run("/data/tessera", shards=4, replicas=2, port=7700)
    client = tessera.Client(url)

Needs Ray with Serve (``pip install './python[ray]'``). What differs from
``tessera serve`` (no API keys, metrics, backup or gRPC; the limits are the
engine's): docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from . import __version__, errors
from ._tessera import SEARCH_OPTIONS
from .client import _ids, _pack
from .distributed import ShardedCollection
from .distributed._replica import _LAYOUT

__all__ = ["Router", "deployment", "run"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SETTINGS = ("index", "text", "durability", "storage", "screening")
# The engine's search options (tessera::SearchOptions) but those the router reads itself.
_SEARCH_OPTIONS = set(SEARCH_OPTIONS) - {"k", "include_text", "include_payload"}
_HYBRID = ("text", "ids", "vector", "rerank_only", "fusion", "rrf_k0", "weights", "rank")
# HTTP status and code of each error class (docs/SERVER.md "Errors").
_STATUS = [
    (errors.NotFoundError, 404, "not_found"),
    (errors.AlreadyExistsError, 409, "conflict"),
    (errors.InvalidInputError, 400, "bad_request"),
    (errors.DeadlineExceededError, 504, "deadline_exceeded"),
    (errors.UnavailableError, 503, "unavailable"),
    (errors.TesseraError, 500, "internal"),
]
_MAX_MESSAGE = 1024


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str) -> HttpError:
    return HttpError(400, "bad_request", message)


def _error_body(code: str, message: str, limit: Optional[str] = None) -> Dict[str, Any]:
    if len(message.encode()) > _MAX_MESSAGE:
        n = len(message.encode())
        message = message.encode()[:_MAX_MESSAGE].decode("utf-8", "ignore") + f"… ({n} bytes in all)"
    e: Dict[str, Any] = {"code": code, "message": message}
    if limit:
        e["limit"] = limit
    return {"error": e}


def _answer_error(e: BaseException) -> Tuple[int, Dict[str, Any]]:
    if isinstance(e, HttpError):
        return e.status, _error_body(e.code, e.message)
    cause = getattr(e, "cause", None)  # a Ray task error: what the replica raised
    if isinstance(e, (TypeError, ValueError)) and not isinstance(e, errors.TesseraError):
        # A value of the wrong type in the request, refused by the engine's
        # argument conversion (e.g. "candidates": "x").
        return 400, _error_body("bad_request", str(cause if isinstance(cause, BaseException) else e))
    for cls, status, code in _STATUS:
        if isinstance(e, cls):
            message = getattr(e, "message", None) or str(e)
            return status, _error_body(getattr(e, "code", None) or code, message, getattr(e, "limit", None))
    return 500, _error_body("internal", f"{type(e).__name__}: {e}")


def _fields(body: Any, allowed: set, required: Tuple[str, ...] = ()) -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(f"unknown field `{unknown[0]}`, expected one of {sorted(allowed)}")
    for f in required:
        if f not in body:
            raise _bad(f"missing field `{f}`")
    return body


def _tensor(v: Any, what: str) -> np.ndarray:
    """A tensor as docs/SERVER.md "Tensors" has it: nested arrays, or packed
    ``{"dtype", "shape", "data"}``. Values are checked by the engine."""
    if isinstance(v, dict):
        _fields(v, {"dtype", "shape", "data"}, ("dtype", "shape", "data"))
        dtype = {"f16": "<f2", "float16": "<f2", "f32": "<f4", "float32": "<f4"}.get(v["dtype"])
        if dtype is None:
            raise _bad(f"{what}: dtype must be f16 or f32, not {v['dtype']!r}")
        shape = v["shape"]
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(x, int) and x >= 0 for x in shape)):
            raise _bad(f"{what}: shape must be [tokens, dim]")
        try:
            data = base64.b64decode(v["data"], validate=True)
        except (ValueError, TypeError):
            raise _bad(f"{what}: data is not base64") from None
        want = shape[0] * shape[1] * np.dtype(dtype).itemsize
        if len(data) != want:
            raise _bad(f"{what}: data has {len(data)} bytes; shape {shape} of {v['dtype']} needs {want}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if isinstance(v, list):
        if not v or not all(isinstance(row, list) for row in v):
            raise _bad(f"{what}: a tensor is a non-empty array of token arrays")
        if len({len(row) for row in v}) != 1:
            raise _bad(f"{what}: every token must have the same length")
        try:
            return np.asarray(v, dtype=np.float32)
        except (TypeError, ValueError):
            raise _bad(f"{what}: token values must be numbers") from None
    raise _bad(f"{what}: a tensor is nested arrays or {{dtype, shape, data}}")


def _hit(h: Any, text: bool, payload: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {"id": h.id, "score": h.score}
    if text and h.text is not None:
        out["text"] = h.text
    if payload and h.payload is not None:
        out["payload"] = h.payload
    if h.fused is not None:
        out["fused"], out["sources"] = h.fused, h.sources
    return out


class Router:
    """The sharded collections under ``root`` behind the HTTP API: call
    :meth:`handle` with a request's method, path and body. New collections get
    ``shards`` shards of ``replicas`` replicas; existing ones are reopened
    with the layout they were made with."""

    def __init__(self, root: str, shards: int = 1, replicas: int = 1, write_quorum: Optional[int] = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.shards, self.replicas, self.write_quorum = shards, replicas, write_quorum
        self._cols: Dict[str, ShardedCollection] = {}
        self._lock = threading.Lock()  # create and drop
        for child in sorted(self.root.iterdir()):
            layout = child / _LAYOUT
            if layout.exists():
                lay = json.loads(layout.read_text())
                if lay.get("name") != child.name:
                    continue  # not made by this router (its folders are named after the collection)
                self._cols[lay["name"]] = ShardedCollection.create(
                    lay["name"], lay["dim"], shards=lay["shards"], replicas=lay["replicas"], root=child,
                    write_quorum=None if write_quorum is None else min(write_quorum, lay["replicas"]),
                )  # fmt: skip

    def close(self) -> None:
        with self._lock:
            for col in self._cols.values():
                col.close()
            self._cols.clear()

    # ------------------------------------------------------------ dispatch

    def handle(self, method: str, path: str, body: bytes) -> Tuple[int, Any]:
        """``(status, JSON answer)`` for one request."""
        try:
            return self._dispatch(method, path, body)
        except Exception as e:
            return _answer_error(e)

    def _dispatch(self, method: str, path: str, raw: bytes) -> Tuple[int, Any]:
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        route: Optional[Dict[str, Callable[[], Tuple[int, Any]]]] = None
        body = lambda: self._json(raw)  # noqa: E731 - parsed only by routes that read a body
        if parts == ["health"]:
            route = {"GET": lambda: (200, {"status": "ok", "version": __version__, "collections": len(self._cols)})}
        elif parts == ["v1", "collections"]:
            route = {"GET": self._list, "POST": lambda: self._create(body())}
        elif len(parts) == 3 and parts[:2] == ["v1", "collections"]:
            name = parts[2]
            route = {"GET": lambda: (200, self._info(name)), "DELETE": lambda: self._drop(name)}
        elif len(parts) == 4 and parts[:2] == ["v1", "collections"]:
            name, op = parts[2], parts[3]
            ops = {
                "upsert": lambda: self._upsert(name, body()),
                "delete": lambda: self._delete(name, body()),
                "get": lambda: self._get(name, body()),
                "search": lambda: self._search(name, body()),
                "rerank": lambda: self._rerank(name, body()),
                "flush": lambda: self._maintain(name, "flush"),
                "compact": lambda: self._maintain(name, "compact"),
            }
            if op in ops:
                route = {"POST": ops[op]}
        elif parts in (["metrics"], ["openapi.json"], ["v1", "backup"]):
            raise HttpError(
                404, "not_found", f"/{'/'.join(parts)} is not served by the Ray Serve router (docs/DISTRIBUTED.md)"
            )
        if route is None:
            raise HttpError(404, "not_found", f"no route {path}")
        if method not in route:
            raise HttpError(405, "method_not_allowed", f"{method} is not served on {path}")
        return route[method]()

    @staticmethod
    def _json(raw: bytes) -> Any:
        try:
            return json.loads(raw or b"{}")
        except ValueError as e:
            raise _bad(f"the request body is not JSON: {e}") from None

    def _col(self, name: str) -> ShardedCollection:
        if not _NAME.match(name):
            raise _bad(f"invalid collection name {name!r}: 1-64 characters from A-Z a-z 0-9 _ -")
        col = self._cols.get(name)
        if col is None:
            raise HttpError(404, "not_found", f"collection {name!r} not found")
        return col

    # ------------------------------------------------------------ collections

    def _info(self, name: str) -> Dict[str, Any]:
        return self._col(name).stats()

    def _list(self) -> Tuple[int, Any]:
        return 200, {"collections": [self._info(n) for n in sorted(self._cols)]}

    def _create(self, body: Any) -> Tuple[int, Any]:
        b = _fields(body, {"name", "dim", *_SETTINGS, "if_not_exists"}, ("name", "dim"))
        name, dim = b["name"], b["dim"]
        if not (isinstance(name, str) and _NAME.match(name)):
            raise _bad(f"invalid collection name {name!r}: 1-64 characters from A-Z a-z 0-9 _ -")
        if not (isinstance(dim, int) and not isinstance(dim, bool)):
            raise _bad("dim must be an integer")
        settings = {k: b[k] for k in _SETTINGS if b.get(k) is not None}
        with self._lock:
            if name in self._cols:
                info = self._info(name)
                if b.get("if_not_exists") is True:
                    for what, want in (("dim", dim), *settings.items()):
                        if info[what] != want:
                            raise HttpError(409, "conflict", f"collection {name!r} exists with another {what}")
                    return 200, info
                raise HttpError(409, "conflict", f"collection {name!r} already exists")
            folder = self.root / name
            if (folder / _LAYOUT).exists():
                # Another collection's folder: a name differing only in case,
                # on a file system that ignores case.
                raise HttpError(409, "conflict", f"the folder {folder} holds another collection")
            try:
                col = ShardedCollection.create(
                    name, dim, shards=self.shards, replicas=self.replicas, root=folder,
                    write_quorum=self.write_quorum, **settings,
                )  # fmt: skip
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self._cols[name] = col
        return 201, self._info(name)

    def _drop(self, name: str) -> Tuple[int, Any]:
        with self._lock:
            col = self._col(name)
            col.drop()  # every replica's folder, on its node
            del self._cols[name]
        return 200, {"dropped": name}

    def _maintain(self, name: str, op: str) -> Tuple[int, Any]:
        getattr(self._col(name), op)()
        return 200, self._info(name)

    # ------------------------------------------------------------ documents

    def _upsert(self, name: str, body: Any) -> Tuple[int, Any]:
        col = self._col(name)
        docs = _fields(body, {"documents"}, ("documents",))["documents"]
        if not isinstance(docs, list) or not docs:
            raise _bad("documents must be a non-empty array")
        ids, tokens, texts, payloads = [], [], [], []
        for i, d in enumerate(docs):
            d = _fields(d, {"id", "tokens", "text", "payload"}, ("id", "tokens"))
            if not isinstance(d["id"], str):
                raise _bad(f"documents[{i}].id must be a string")
            if d.get("text") is not None and not isinstance(d["text"], str):
                raise _bad(f"documents[{i}].text must be a string")
            ids.append(d["id"])
            tokens.append(_tensor(d["tokens"], f"documents[{i}].tokens"))
            texts.append(d.get("text"))
            payloads.append(d.get("payload"))
        col.upsert(ids, tokens, texts=texts, payloads=payloads)
        return 200, {"upserted": len(ids)}

    def _delete(self, name: str, body: Any) -> Tuple[int, Any]:
        col = self._col(name)
        ids = _ids(_fields(body, {"ids"}, ("ids",))["ids"])
        return 200, {"deleted": col.delete(ids)}

    def _get(self, name: str, body: Any) -> Tuple[int, Any]:
        col = self._col(name)
        b = _fields(body, {"ids", "tokens"}, ("ids",))
        ids = _ids(b["ids"])
        form = b.get("tokens", "json")
        if form not in ("json", "f16", "none"):
            raise _bad(f"tokens must be json, f16 or none, not {form!r}")
        unique = list(dict.fromkeys(ids))
        found, missing = [], []
        for i, d in zip(unique, col.get(unique, tokens=form != "none")):
            if d is None:
                missing.append(i)
                continue
            out: Dict[str, Any] = {"id": d.id, "n_tokens": d.n_tokens}
            if d.text is not None:
                out["text"] = d.text
            if d.payload is not None:
                out["payload"] = d.payload
            if form == "f16":
                out["tokens"] = _pack(np.asarray(d.tokens, dtype=np.float16))
            elif form == "json":
                out["tokens"] = np.asarray(d.tokens, dtype=np.float16).astype(np.float64).tolist()
            found.append(out)
        return 200, {"documents": found, "missing": missing}

    def _search(self, name: str, body: Any) -> Tuple[int, Any]:
        col = self._col(name)
        b = _fields(body, {"tokens", "queries", "k", "include_text", "include_payload", *_SEARCH_OPTIONS})
        if "tokens" in b and "queries" in b:
            raise _bad("give tokens or queries, not both")
        k = b.get("k", 10)
        if not (isinstance(k, int) and not isinstance(k, bool)):
            raise _bad("k must be an integer")
        text, payload = b.get("include_text", True), b.get("include_payload", True)
        opts = {key: b[key] for key in _SEARCH_OPTIONS if key in b}
        hybrid = any(b.get(key) not in (None, False, [], {}) for key in _HYBRID)
        mode = "hybrid" if hybrid else "exact" if b.get("exact") else "two_stage"
        if "queries" in b:
            if not isinstance(b["queries"], list):
                raise _bad("queries must be an array of tensors")
            queries = [_tensor(q, f"queries[{i}]") for i, q in enumerate(b["queries"])]
            results = col.search_batch(queries, k, **opts)
            return 200, {"results": [{"mode": mode, "hits": [_hit(h, text, payload) for h in r]} for r in results]}
        query = _tensor(b["tokens"], "tokens") if "tokens" in b else None
        hits = col.search(query, k, **opts)
        return 200, {"mode": mode, "hits": [_hit(h, text, payload) for h in hits]}

    def _rerank(self, name: str, body: Any) -> Tuple[int, Any]:
        col = self._col(name)
        b = _fields(body, {"tokens", "ids", "include_text", "include_payload"}, ("tokens", "ids"))
        r = col.rerank(_tensor(b["tokens"], "tokens"), _ids(b["ids"]))
        text, payload = b.get("include_text", True), b.get("include_payload", True)
        return 200, {"hits": [_hit(h, text, payload) for h in r.hits], "missing": list(r.missing)}


def deployment(root: str, *, shards: int = 1, replicas: int = 1, write_quorum: Optional[int] = None) -> Any:
    """The Ray Serve application: one router replica (it orders the writes
    of each shard) in front of the shard actors. Run it with ``serve.run``."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(name="tessera", num_replicas=1, ray_actor_options={"num_cpus": 0})
    class TesseraRouter:
        def __init__(self) -> None:
            self._router = Router(root, shards, replicas, write_quorum)

        async def __call__(self, request: Request) -> JSONResponse:
            raw = await request.body()
            # The sharded collection's calls block on Ray: off the event loop.
            status, answer = await asyncio.to_thread(self._router.handle, request.method, request.url.path, raw)
            return JSONResponse(answer, status_code=status)

        def __del__(self) -> None:
            self._router.close()

    return TesseraRouter.bind()


def run(
    root: str,
    *,
    shards: int = 1,
    replicas: int = 1,
    write_quorum: Optional[int] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> str:
    """Starts the router on the Ray cluster (``ray.init()`` first) and returns
    its URL, for ``tessera.Client``. ``serve.shutdown()`` stops it."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(root, shards=shards, replicas=replicas, write_quorum=write_quorum), name="tessera", route_prefix="/")
    return f"http://{host}:{port}"
