"""A client of ``tessera serve`` with the embedded engine's API.

``Client(url)`` has the methods of :class:`tessera.Database`, and its
collections (:class:`RemoteCollection`) those of :class:`tessera.Collection`,
returning the same types (:class:`tessera.Hit`, :class:`tessera.Document`,
:class:`tessera.Reranked`) and raising the same :mod:`tessera.errors` — so
moving from embedded to server is one line.

Over the wire (docs/SERVER.md): JSON over HTTP, tensors packed as base64 of
little-endian float16 (documents; what the engine stores) or float32
(queries, so scores equal the embedded engine's to the bit). An ``upsert``
too large for one request is split into several under the server's body and
batch limits; the whole call is checked here first (shapes, dtypes, values,
ids) so that a bad document is refused before anything is sent. Only the
standard library is used (``http.client``), with one keep-alive connection
per thread.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import ssl
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import errors
from .helpers import _id_list, _json_default
from ._tessera import SEARCH_OPTIONS, SETTINGS, Document, Hit, Reranked

def _ssl_context(scheme: str, ca_file: Optional[str], cert_file: Optional[str], key_file: Optional[str]) -> Optional[ssl.SSLContext]:
    """The TLS context of an https:// client: the server's certificate checked
    against ``ca_file`` (the system's CAs without one), and for mutual TLS the
    client's own ``cert_file`` and ``key_file``. TLS files with an http:// URL
    are refused rather than ignored."""
    if scheme != "https":
        if ca_file or cert_file or key_file:
            raise errors.InvalidInputError("ca_file, cert_file and key_file need an https:// url")
        return None
    if (cert_file is None) != (key_file is None):
        raise errors.InvalidInputError("cert_file and key_file go together (mutual TLS)")
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
        if cert_file is not None:
            ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise errors.InvalidInputError(f"TLS files: {e}") from None
    return ctx


def _given(**named: Any) -> Dict[str, Any]:
    """The keyword arguments given (not None): the settings a call names."""
    return {k: v for k, v in named.items() if v is not None}


def _settings(call: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    """The settings given (None left out), an unknown name refused as the embedded engine refuses it."""
    for k, v in settings.items():
        if k not in SETTINGS:
            raise TypeError(f"{call}() got an unknown setting '{k}' (settings: {', '.join(SETTINGS)})")
        if isinstance(v, float) and not math.isfinite(v):
            raise errors.InvalidInputError(f"{k}: {v} is not a finite number")
    return {k: v for k, v in settings.items() if v is not None}


_F16_MAX = 65520.0  # values at or beyond this round to infinity in float16

_ERRORS = {
    "bad_request": errors.InvalidInputError,
    "out_of_range": errors.InvalidInputError,
    "too_large": errors.InvalidInputError,
    "not_found": errors.NotFoundError,
    "conflict": errors.AlreadyExistsError,
    "unauthenticated": errors.AuthenticationError,
    "permission_denied": errors.AuthenticationError,
    "unavailable": errors.UnavailableError,
    "deadline_exceeded": errors.DeadlineExceededError,
    "request_timeout": errors.DeadlineExceededError,
    "too_many_connections": errors.UnavailableError,
}


def _f32(x: float) -> float:
    """A JSON score back to the f32 the server computed (as the engine returns it)."""
    return float(np.float32(x))


def _pack(a: np.ndarray) -> dict:
    dtype = {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32"}[a.dtype]
    data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return {"dtype": dtype, "shape": list(a.shape), "data": base64.b64encode(data).decode("ascii")}


def _array(x: Any, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise errors.InvalidInputError(
            f"{what} must be a numpy array of float16 or float32, got {type(x).__name__}"
        )
    if x.ndim != 2:
        raise errors.InvalidInputError(f"{what} must be 2-d [tokens, dim], got shape {x.shape}")
    if x.dtype not in (np.float16, np.float32):
        raise errors.InvalidInputError(
            f"{what} has dtype {x.dtype}; use float16 or float32 (e.g. arr.astype(np.float32))"
        )
    return x


def _check_values(a: np.ndarray, dim: int, where: str) -> None:
    """The engine's checks of one tensor, so a bad document is refused before anything is sent."""
    if a.shape[1] != dim:
        raise errors.InvalidInputError(f"{where}wrong dimension: got {a.shape[1]}, the collection has dim {dim}")
    if a.shape[0] == 0:
        raise errors.InvalidInputError(f"{where}empty tensor: at least one token is required")
    bad = ~np.isfinite(a) | (np.abs(a.astype(np.float32)) >= _F16_MAX)
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise errors.InvalidInputError(
            f"{where}invalid value at token {r}, component {c}: {a[r, c]} "
            "(values must be finite and within f16 range ±65504)"
        )


def _check_id(i: int, id_: str, seen: Dict[str, int], what: str) -> str:
    """The engine's checks of the id ``what[i]`` of a batch (``seen``: the ids
    before it, filled in): not repeated, 1 to 512 bytes; returns the
    ``what[i] (id …): `` prefix of its errors."""
    where = f"{what}[{i}] (id {id_!r}): "
    if id_ in seen:
        raise errors.InvalidInputError(f"{where}the id appears twice in the batch (first at {what}[{seen[id_]}])")
    seen[id_] = i
    if not id_:
        raise errors.InvalidInputError(f"{where}id is empty")
    if len(id_.encode()) > 512:
        raise errors.InvalidInputError(f"{where}id is {len(id_.encode())} bytes; the limit is 512")
    return where


def _check_document(i: int, id_: str, a: Optional[np.ndarray], text: Any, dim: int, seen: Dict[str, int]) -> str:
    """The engine's checks of ``documents[i]`` of a batch (``seen``: the ids
    before it, filled in), so a bad batch is refused whole before any of it
    is sent; returns the ``documents[i] (id …): `` prefix of its errors."""
    where = _check_id(i, id_, seen, "documents")
    if a is not None:
        _check_values(a, dim, where)
    if text is not None and not isinstance(text, str):
        raise errors.InvalidInputError(f"{where}texts: must be a str or None")
    if a is None and (text is None or not text.strip()):
        # Checked here, not by the server: a large call goes as several requests.
        raise errors.InvalidInputError(f"{where}document has no tokens and no text to encode")
    return where


def _unpack_f16(p: dict) -> np.ndarray:
    """A packed tensor of the HTTP API (``{dtype: f16, shape, data: base64}``)."""
    return np.frombuffer(base64.b64decode(p["data"]), dtype="<f2").reshape(p["shape"]).astype(np.float16)


def _ids(ids: Any) -> List[str]:
    ids = _id_list(ids)
    if isinstance(ids, (str, np.ndarray)) or not hasattr(ids, "__iter__"):
        raise errors.InvalidInputError(f"ids must be a list, got {type(ids).__name__}")
    out = list(ids)
    for i, x in enumerate(out):
        if not isinstance(x, str):
            raise errors.InvalidInputError(f"ids[{i}] must be a str, got {type(x).__name__}")
    return out


def _column(v: Any, name: str, n: int) -> Optional[list]:
    if v is None:
        return None
    if isinstance(v, (str, np.ndarray)) or not hasattr(v, "__iter__"):
        raise errors.InvalidInputError(f"{name} must be a list, got {type(v).__name__}")
    v = list(v)
    if len(v) != n:
        raise errors.InvalidInputError(f"{name} has {len(v)} entries for {n} ids")
    return v


# A server's defaults (`tessera serve` without --max-… flags), for one too old to report its own.
_DEFAULT_LIMITS = {
    "max_body_bytes": 64 << 20,
    "max_batch_docs": 10_000,
    "max_batch_queries": 256,
    "max_batch_tokens": 65_536,
}


def _filter(v: Any) -> Any:
    """A filter given as a dict or as its JSON text, as JSON for a request body."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError as e:
            raise errors.InvalidInputError(f"invalid argument: filter: not JSON: {e}") from None
    return v


class Client:
    """A Tessera server, with the methods of :class:`tessera.Database`.

    ``url``: the server's HTTP address; ``api_key``: sent as a bearer token;
    ``timeout``: seconds per request. Large calls are split under the
    server's limits, which it reports (:meth:`limits`, read once):
    ``upsert`` by ``max_body_bytes`` and ``max_batch_docs``, ``search_batch``
    by ``max_batch_queries`` and ``max_batch_tokens``. ``max_body_bytes`` and
    ``max_batch_docs`` given here take the place of the server's (lower, say).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:7700",
        api_key: Optional[str] = None,
        *,
        timeout: float = 120.0,
        max_body_bytes: Optional[int] = None,
        max_batch_docs: Optional[int] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
    ):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise errors.InvalidInputError(f"url must be http://HOST:PORT or https://HOST:PORT, got {url!r}")
        self._ssl = _ssl_context(u.scheme, ca_file, cert_file, key_file)
        self.url = url.rstrip("/")
        self._scheme, self._host, self._port = u.scheme, u.hostname, u.port
        self._prefix = u.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._given = {"max_body_bytes": max_body_bytes, "max_batch_docs": max_batch_docs}
        self._limits: Optional[dict] = None
        self._local = threading.local()
        self._conns: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------ transport

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            if self._scheme == "https":
                c = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._ssl)
            else:
                c = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = c
            with self._lock:
                self._conns.append(c)
        return c

    def _call(self, method: str, path: str, body: Any = None, *, data: Optional[bytes] = None) -> Any:
        """One request: `body` encoded as JSON, or `data` already encoded."""
        if self._closed:
            raise errors.UnavailableError("the client is closed")
        if body is not None:
            try:
                data = json.dumps(body, allow_nan=False, default=_json_default).encode()
            except ValueError as e:  # NaN or infinity, which JSON cannot carry
                raise errors.InvalidInputError(f"the request cannot be sent: {e}") from None
        for attempt in (0, 1):
            c = self._conn()
            try:
                c.request(method, self._prefix + path, body=data, headers=self._headers)
                r = c.getresponse()
                raw = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A kept-alive connection the server closed: reconnect once.
                c.close()
                self._local.conn = None
                if attempt:
                    raise errors.UnavailableError(f"{method} {path}: the server closed the connection: {e}") from e
            except ssl.SSLError as e:
                # The server refused our certificate, or we refused its own.
                c.close()
                self._local.conn = None
                raise errors.AuthenticationError(f"{method} {path}: TLS with {self.url} failed: {e}") from e
            except OSError as e:
                c.close()
                self._local.conn = None
                raise errors.UnavailableError(f"{method} {path}: cannot reach {self.url}: {e}") from e
        if 200 <= r.status < 300:
            return json.loads(raw) if raw else None
        try:
            e = json.loads(raw)["error"]
            code, message, limit = e["code"], e["message"], e.get("limit")
        except (ValueError, KeyError, TypeError):
            code, message, limit = "http_error", raw.decode("utf-8", "replace").strip(), None
        cls = _ERRORS.get(code, errors.TesseraError)
        suffix = f" [limit {limit}]" if limit else ""
        raise cls(f"{message}{suffix}", code=code, limit=limit)

    def close(self) -> None:
        """Closes the connections; later calls raise UnavailableError."""
        self._closed = True
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ------------------------------------------------------------ database

    def limits(self) -> dict:
        """The server's request limits (``GET /v1/limits``: ``max_k``,
        ``max_batch_queries``, …), read once. A server without that route
        (older than this client) is taken to have the defaults."""
        if self._limits is None:
            try:
                self._limits = dict(self._call("GET", "/v1/limits"))
            except errors.NotFoundError:
                self._limits = dict(_DEFAULT_LIMITS)
        return self._limits

    def _limit(self, name: str) -> int:
        given = self._given.get(name)
        return int(given) if given is not None else int(self.limits()[name])

    @property
    def max_body_bytes(self) -> int:
        """The body size ``upsert`` splits under: the one given, else the server's."""
        return self._limit("max_body_bytes")

    @property
    def max_batch_docs(self) -> int:
        """The documents per request ``upsert`` splits under: the one given, else the server's."""
        return self._limit("max_batch_docs")

    def health(self) -> dict:
        """The server's status, version and collection count."""
        return self._call("GET", "/health")

    def create_collection(
        self,
        name: str,
        dim: Optional[int] = None,
        *,
        index: Optional[str] = None,
        text: Optional[str] = None,
        durability: Optional[str] = None,
        storage: Optional[str] = None,
        screening: Optional[str] = None,
        keep: Optional[str] = None,
        model: Optional[str] = None,
        settings: Optional[Dict[str, Any]] = None,
    ) -> "RemoteCollection":
        """As :meth:`tessera.Database.create_collection`; ``model`` names one
        of the server's models (``tessera serve --model NAME=DIR``, see
        :meth:`models`), not a folder."""
        body: Dict[str, Any] = {"name": name}
        if settings is not None:
            body["settings"] = _settings("create_collection", settings)
        body.update(
            _given(
                dim=dim,
                index=index,
                text=text,
                durability=durability,
                storage=storage,
                screening=screening,
                keep=keep,
                model=model,
            )
        )
        info = self._call("POST", "/v1/collections", body)
        return RemoteCollection(self, info["name"], info["dim"])

    def collection(self, name: str) -> "RemoteCollection":
        """As :meth:`tessera.Database.collection`."""
        info = self._call("GET", f"/v1/collections/{urllib.parse.quote(name, safe='')}")
        return RemoteCollection(self, info["name"], info["dim"])

    def open_or_create_collection(
        self,
        name: str,
        dim: int,
        *,
        index: Optional[str] = None,
        text: Optional[str] = None,
        durability: Optional[str] = None,
        storage: Optional[str] = None,
        screening: Optional[str] = None,
        keep: Optional[str] = None,
        settings: Optional[Dict[str, Any]] = None,
    ) -> "RemoteCollection":
        """As :meth:`tessera.Database.open_or_create_collection`: settings
        given must match an existing collection's; settings left out are not compared."""
        tunables = _settings("open_or_create_collection", settings or {})
        try:
            c = self.collection(name)
        except errors.NotFoundError:
            try:
                return self.create_collection(
                    name,
                    dim,
                    index=index,
                    text=text,
                    durability=durability,
                    storage=storage,
                    screening=screening,
                    keep=keep,
                    settings=tunables,
                )
            except errors.AlreadyExistsError:
                c = self.collection(name)  # created meanwhile: compare as below
        info = c.stats()
        named = _given(
            dim=dim, index=index, text=text, durability=durability, storage=storage, screening=screening, keep=keep
        )
        differs = [what for what, want in named.items() if info[what] != want]
        differs += [what for what, want in tunables.items() if info["settings"].get(what) != want]
        if differs:
            raise errors.AlreadyExistsError(
                f"collection {name!r} exists with a different configuration: its {differs[0]} differs from the request",
                code="conflict",
            )
        return c

    def list_collections(self) -> List[str]:
        """The names of the collections, sorted."""
        return [c["name"] for c in self.collection_infos()]

    def collection_infos(self) -> List[dict]:
        """Every collection's info (as :meth:`RemoteCollection.stats` gives
        one), sorted by name, in one request."""
        return sorted(self._call("GET", "/v1/collections")["collections"], key=lambda c: c["name"])

    def drop_collection(self, name: str) -> None:
        """As :meth:`tessera.Database.drop_collection`."""
        self._call("DELETE", f"/v1/collections/{urllib.parse.quote(name, safe='')}")

    def models(self) -> List[dict]:
        """The models the server was started with (``--model NAME=DIR``):
        ``name`` and ``identity`` (architecture, dim, checksum, settings) each."""
        return list(self._call("GET", "/v1/models")["models"])

    def encode(self, texts: Sequence[str], model: str, is_query: bool = False) -> List[np.ndarray]:
        """The vectors of ``texts`` by the server's model ``model``, as
        :class:`tessera.Encoder` gives them: one float32 array each."""
        if isinstance(texts, str) or not hasattr(texts, "__iter__"):
            raise errors.InvalidInputError(f"texts must be a list, got {type(texts).__name__}")
        r = self._call("POST", "/v1/encode", {"model": model, "texts": list(texts), "is_query": bool(is_query)})
        return [_unpack_f16(v).astype(np.float32) for v in r["vectors"]]

    def reindex(self, name: str, model: str, *, wait: bool = True, poll: float = 0.2) -> dict:
        """As :meth:`tessera.Database.reindex`, with one of the server's
        models (by name): the server re-encodes the collection in the
        background. With ``wait`` (the default) this returns once it is done
        (raising if it failed); otherwise at once. Returns the status
        (``state``, ``done``, ``total``, and when done ``documents``,
        ``caught_up``, ``truncated``, ``seconds``)."""
        path = f"/v1/collections/{urllib.parse.quote(name, safe='')}/reindex"
        status = self._call("POST", path, {"model": model})
        while wait and status["state"] == "running":
            time.sleep(poll)
            status = self._call("GET", path)
        if status["state"] == "failed":
            raise errors.TesseraError(f"the reindex of {name!r} failed: {status.get('error')}", code="failed")
        return status

    def backup(self, name: Optional[str] = None) -> dict:
        """Backs up the server's database into the folder ``name`` of its
        ``--backup-dir`` (default: a timestamped name), as
        :meth:`tessera.Database.backup` does; returns the same report."""
        return self._call("POST", "/v1/backup", {} if name is None else {"name": name})


def _hit(h: dict) -> Hit:
    sources = [{"source": s["source"], "rank": s["rank"], "score": _f32(s["score"])} for s in h.get("sources", [])]
    def opt(x: Optional[float]) -> Optional[float]:
        return None if x is None else _f32(x)

    components = [{**c, "raw": opt(c.get("raw")), "value": opt(c.get("value"))} for c in h.get("components", [])]
    return Hit(h["id"], _f32(h["score"]), h.get("text"), h.get("payload"), h.get("fused"), sources, components)


class RemoteCollection:
    """A collection on a server, with the methods of :class:`tessera.Collection`."""

    def __init__(self, client: Client, name: str, dim: int):
        self._client = client
        self.name = name
        self.dim = dim
        self._path = f"/v1/collections/{urllib.parse.quote(name, safe='')}"

    def __repr__(self) -> str:
        return f"RemoteCollection({self.name!r}, dim={self.dim})"

    def _post(self, op: str, body: Any = None) -> Any:
        return self._client._call("POST", f"{self._path}/{op}", body)

    def _post_raw(self, op: str, data: bytes) -> Any:
        return self._client._call("POST", f"{self._path}/{op}", data=data)

    # ------------------------------------------------------------ writes

    def upsert(
        self,
        ids: Sequence[str],
        tokens: Any = None,
        texts: Optional[Sequence[Optional[str]]] = None,
        payloads: Optional[Sequence[Any]] = None,
        *,
        offsets: Any = None,
        pool_factor: Optional[int] = None,
    ) -> int:
        """As :meth:`tessera.Collection.upsert`. The call is checked whole
        before anything is sent; if it is larger than one request allows it
        is sent as several batches, each durable when answered."""
        ids = _ids(ids)
        n = len(ids)
        if tokens is None:
            # Texts alone: the collection's model (on the server) encodes them.
            if offsets is not None:
                raise errors.InvalidInputError("offsets cut a flat tokens array: give tokens with them")
            if texts is None:
                raise errors.InvalidInputError("give tokens, or texts (for a collection bound to a model)")
            arrays = [None] * n
        elif offsets is None:
            if isinstance(tokens, np.ndarray):
                raise errors.InvalidInputError(
                    "tokens is one array: pass a list of [n_i, dim] arrays, or a flat [N, dim] array with offsets"
                )
            tokens = _column(tokens, "tokens", n) or []
            arrays = [_array(t, f"tokens[{i}]") for i, t in enumerate(tokens)]
        else:
            flat = _array(tokens, "tokens")
            try:
                offs = [int(o) for o in offsets]
            except (TypeError, ValueError):
                raise errors.InvalidInputError("offsets must be a sequence of n + 1 integers") from None
            if len(offs) != n + 1:
                raise errors.InvalidInputError(f"offsets has {len(offs)} entries; {n} documents need {n + 1}")
            if offs[0] != 0 or offs[-1] != flat.shape[0]:
                raise errors.InvalidInputError(
                    f"offsets must start at 0 and end at the {flat.shape[0]} rows of tokens"
                )
            for i in range(n):
                if offs[i + 1] < offs[i]:
                    raise errors.InvalidInputError(f"offsets decrease at documents[{i}]: {offs[i]} > {offs[i + 1]}")
            arrays = [flat[offs[i] : offs[i + 1]] for i in range(n)]
        texts = _column(texts, "texts", n)
        payloads = _column(payloads, "payloads", n)
        docs: List[bytes] = []
        seen: Dict[str, int] = {}
        for i, (id_, a) in enumerate(zip(ids, arrays)):
            where = _check_document(i, id_, a, None if texts is None else texts[i], self.dim, seen)
            d: Dict[str, Any] = {"id": id_}
            if a is not None:
                d["tokens"] = _pack(a.astype(np.float16))
            if texts is not None and texts[i] is not None:
                d["text"] = texts[i]
            if payloads is not None and payloads[i] is not None:
                d["payload"] = payloads[i]
            # Each document is encoded once: the encoding is both the check
            # (only the payload can fail) and what is sent.
            try:
                docs.append(json.dumps(d, allow_nan=False, default=_json_default).encode())
            except (TypeError, ValueError) as e:
                raise errors.InvalidInputError(f"{where}payload is not JSON: {e}") from None
        # Batches under the body limit (with room for the JSON around the documents).
        budget = max(1024, int(self._client.max_body_bytes * 0.9))
        tail = b"]}" if pool_factor is None else b'],"pool_factor":' + json.dumps(pool_factor).encode() + b"}"
        batch: List[bytes] = []
        size = 0
        for d in docs:
            if batch and (size + len(d) + 1 > budget or len(batch) >= self._client.max_batch_docs):
                self._post_raw("upsert", b'{"documents":[' + b",".join(batch) + tail)
                batch, size = [], 0
            batch.append(d)
            size += len(d) + 1
        if batch:
            self._post_raw("upsert", b'{"documents":[' + b",".join(batch) + tail)
        return n

    def delete(self, ids: Sequence[str]) -> int:
        """As :meth:`tessera.Collection.delete`."""
        return self._post("delete", {"ids": _ids(ids)})["deleted"]

    def flush(self) -> None:
        """As :meth:`tessera.Collection.flush`."""
        self._post("flush")

    def compact(self) -> None:
        """As :meth:`tessera.Collection.compact`."""
        self._post("compact")

    def recall_curve(self, **options: Any) -> Dict[str, Any]:
        """As :meth:`tessera.Collection.recall_curve` (``POST …/recall``)."""
        return dict(self._post("recall", {k: v for k, v in options.items() if v is not None}))

    def update_settings(self, **settings: Any) -> Dict[str, Any]:
        """As :meth:`tessera.Collection.update_settings`."""
        return dict(self._post("settings", _settings("update_settings", settings))["settings"])

    # ------------------------------------------------------------ reads

    def get(self, ids: Sequence[str], tokens: bool = False) -> List[Optional[Document]]:
        """As :meth:`tessera.Collection.get`."""
        ids = _ids(ids)
        r = self._post("get", {"ids": ids, "tokens": "f16" if tokens else "none"})
        found = {}
        for d in r["documents"]:
            t = None
            if tokens:
                t = _unpack_f16(d["tokens"])
            found[d["id"]] = Document(d["id"], int(d["n_tokens"]), t, d.get("text"), d.get("payload"))
        return [found.get(id_) for id_ in ids]

    def scan(
        self,
        filter: Any = None,
        *,
        after: Optional[str] = None,
        limit: int = 1000,
        tokens: bool = False,
    ) -> Tuple[List[Document], Optional[str]]:
        """As :meth:`tessera.Collection.scan`: ``(documents, next)``. A
        ``limit`` over the server's ``max_ids``, or a page whose tokens would
        be over its ``max_response_bytes``, is asked for in smaller pages
        (each from one snapshot of its own)."""
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
            raise errors.InvalidInputError(f"limit must be an integer >= 0, got {limit!r}")
        page = int(self._client.limits().get("max_ids", 10_000))
        docs: List[Document] = []
        want, nxt = int(limit), after
        while True:
            body: Dict[str, Any] = {"limit": min(page, want - len(docs)), "tokens": "f16" if tokens else "none"}
            if filter is not None:
                body["filter"] = _filter(filter)
            if nxt is not None:
                body["after"] = nxt
            try:
                r = self._post("scan", body)
            except errors.InvalidInputError as e:
                if not (tokens and "max_response_bytes" in str(e) and body["limit"] > 1):
                    raise
                page = max(1, body["limit"] // 2)
                continue
            for d in r["documents"]:
                t = _unpack_f16(d["tokens"]) if tokens else None
                docs.append(Document(d["id"], int(d["n_tokens"]), t, d.get("text"), d.get("payload")))
            nxt = r["next"]
            if nxt is None or len(docs) >= want:
                return docs, nxt

    def count(self, filter: Any = None) -> int:
        """As :meth:`tessera.Collection.count`."""
        body: Dict[str, Any] = {}
        if filter is not None:
            body["filter"] = _filter(filter)
        return int(self._post("count", body)["count"])

    def encode(self, texts: Sequence[str], is_query: bool = False) -> List[np.ndarray]:
        """As :meth:`tessera.Collection.encode`: the vectors of ``texts`` by
        the collection's bound model (on the server), one float32 array each."""
        if isinstance(texts, str) or not hasattr(texts, "__iter__"):
            raise errors.InvalidInputError(f"texts must be a list, got {type(texts).__name__}")
        r = self._post("encode", {"texts": list(texts), "is_query": bool(is_query)})
        return [_unpack_f16(v).astype(np.float32) for v in r["vectors"]]

    def _query(self, query: Any, what: str) -> Optional[dict]:
        if query is None:
            return None
        q = _array(query, what)
        if q.shape[1] != self.dim:
            raise errors.InvalidInputError(
                f"{what}: wrong dimension: got {q.shape[1]}, the collection has dim {self.dim}"
            )
        return _pack(q)

    def _search_body(self, query: Any, what: str, k: int, **opts: Any) -> dict:
        for key in opts:
            if key not in SEARCH_OPTIONS:
                call = "search_batch" if what == "queries" else "search"
                raise TypeError(f"{call}() got an unexpected keyword argument '{key}'")
        body: Dict[str, Any] = {"k": k}
        if isinstance(query, str):
            # The query's text, for the collection's model.
            if opts.get("query_text") is not None:
                raise errors.InvalidInputError("the query is a text and query_text is given: give one")
            body["query_text"] = query
            q = None
        else:
            q = self._query(query, what)
        if q is not None:
            body["tokens"] = q
        for key, v in opts.items():
            if key == "ids" and v is not None:
                v = _ids(v)
            if key == "filter":
                v = _filter(v)
            if v is not None:
                body[key] = v
        return body

    def search(self, query: Any = None, k: int = 10, **options: Any) -> List[Hit]:
        """As :meth:`tessera.Collection.search`: the options are the same
        (``tessera.SEARCH_OPTIONS``), sent as the HTTP body's fields
        (``timeout_ms``: the server's default when None)."""
        body = self._search_body(query, "query", k, **options)
        return [_hit(h) for h in self._post("search", body)["hits"]]

    def search_batch(self, queries: Sequence[Any], k: int = 10, **opts: Any) -> List[List[Hit]]:
        """As :meth:`tessera.Collection.search_batch`: every query is checked
        before any is sent, the batch goes as requests under the server's
        limits (``max_batch_queries``, ``max_batch_tokens``), answered in
        order; a query the server refuses raises naming its index."""
        if isinstance(queries, (str, np.ndarray)) or not hasattr(queries, "__iter__"):
            raise errors.InvalidInputError(f"queries must be a list, got {type(queries).__name__}")
        queries = list(queries)
        # `text` as a list: one BM25 text per token query, sent as `texts`.
        bm25 = opts.get("text")
        if bm25 is not None and not isinstance(bm25, str):
            bm25 = list(bm25)
            if not all(isinstance(t, str) for t in bm25):
                raise errors.InvalidInputError("text must be a str or a list of str (one per query)")
            opts = {key: v for key, v in opts.items() if key != "text"}
        else:
            bm25 = None
        body = self._search_body(None, "queries", k, **opts)
        texts = sum(isinstance(q, str) for q in queries)
        if texts:
            # Texts, for the collection's model (on the server).
            if texts < len(queries):
                raise errors.InvalidInputError("queries: give all texts or all token arrays, not a mix")
            if bm25 is not None:
                raise errors.InvalidInputError("text: queries given as texts are their own BM25 texts")
            field, items, sizes = "query_texts", queries, [0] * len(queries)
        else:
            items = [self._query(q, f"queries[{i}]") for i, q in enumerate(queries)]
            if any(q is None for q in items):
                raise errors.InvalidInputError("every query of a batch needs tokens")
            field, sizes = "queries", [int(q["shape"][0]) for q in items]
        # Split under the server's limits: each request at most max_batch_queries
        # queries and max_batch_tokens query tokens.
        limits = self._client.limits()
        most, budget = limits["max_batch_queries"], limits["max_batch_tokens"]
        out: List[List[Hit]] = []
        start = 0
        while start < len(items) or (start == 0 and not items):
            end, tokens = start, 0
            while end < len(items) and end - start < most and (end == start or tokens + sizes[end] <= budget):
                tokens += sizes[end]
                end += 1
            part = {**body, field: items[start:end]}
            if bm25 is not None:
                if len(bm25) != len(items):
                    raise errors.InvalidInputError(
                        f"{len(items)} queries and {len(bm25)} texts: give one BM25 text per query"
                    )
                part["texts"] = bm25[start:end]
            for j, r in enumerate(self._post("search", part)["results"]):
                if "error" in r:
                    e = r["error"]
                    limit = e.get("limit")
                    suffix = f" [limit {limit}]" if limit else ""
                    cls = _ERRORS.get(e["code"], errors.TesseraError)
                    raise cls(f"queries[{start + j}]: {e['message']}{suffix}", code=e["code"], limit=limit)
                out.append([_hit(h) for h in r["hits"]])
            if not items:
                break
            start = end
        return out

    def mine_negatives(
        self,
        query_id: str,
        query: Any,
        positives: Sequence[str],
        *,
        range: Tuple[int, int] = (10, 100),
        per_query: int = 7,
        exclude_above_score: Optional[float] = None,
        max_score: Optional[float] = None,
        margin: Optional[float] = None,
        sampling: str = "random",
        seed: int = 42,
        candidates: Optional[int] = None,
        exact: bool = False,
        require_text: bool = True,
        text: Optional[str] = None,
        rank: Optional[str] = None,
        rank_norm: Optional[str] = None,
        rank_weights: Optional[Dict[str, float]] = None,
    ) -> Tuple[List[Hit], List[Hit]]:
        """As :meth:`tessera.Collection.mine_negatives`, on the server
        (``POST .../mine_negatives``): ``(negatives, positives)``."""
        body: Dict[str, Any] = {
            "query_id": query_id,
            "tokens": self._query(query, "query"),
            "positives": _ids(positives),
            "range": [int(range[0]), int(range[1])],
            "per_query": int(per_query),
            "seed": int(seed),
            "exact": bool(exact),
            "require_text": bool(require_text),
        }
        if sampling != "random":  # sent only when asked for: a server before it knows no such field
            body["sampling"] = sampling
        for key, v in (("exclude_above_score", exclude_above_score), ("max_score", max_score), ("margin", margin),
                       ("candidates", candidates), ("text", text),
                       ("rank", rank), ("rank_norm", rank_norm), ("rank_weights", rank_weights)):
            if v is not None:
                body[key] = v
        r = self._post("mine_negatives", body)
        return [_hit(h) for h in r["negatives"]], [_hit(h) for h in r["positives"]]

    def rerank(self, query: Any, ids: Sequence[str]) -> Reranked:
        """As :meth:`tessera.Collection.rerank`."""
        if isinstance(query, str):
            body = {"query_text": query, "ids": _ids(ids)}
        else:
            body = {"tokens": self._query(query, "query"), "ids": _ids(ids)}
        r = self._post("rerank", body)
        return Reranked([_hit(h) for h in r["hits"]], r["missing"])

    @property
    def model(self) -> Optional[dict]:
        """As :attr:`tessera.Collection.model`, without the folder's path
        (the server's): ``{"identity": ...}``, or None."""
        identity = self.stats().get("model")
        return None if identity is None else {"identity": identity}

    def stats(self) -> dict:
        """As :meth:`tessera.Collection.stats`."""
        return self._client._call("GET", self._path)

    def __len__(self) -> int:
        return int(self.stats()["documents"])

    def ranking(self) -> dict:
        """As :meth:`tessera.Collection.ranking` (set it with ``tessera tune`` or in-process)."""
        return dict(self.stats()["ranking"])


__all__ = ["Client", "RemoteCollection"]
