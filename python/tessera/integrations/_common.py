"""What the framework integrations share: one collection of the embedded
engine or of a server, opened or created on first use; the token matrices a
framework's embeddings give; and Mongo-style metadata filters in Tessera's
filter language (docs/FILTERS.md)."""

import json
import os
import threading
import uuid
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .. import errors
from .._tessera import Database
from ..client import Client

Backend = Union[Database, Client]


def connect(client: Any, api_key: Optional[str] = None) -> Backend:
    """A :class:`tessera.Database` or :class:`tessera.Client` as given, or
    one for a folder path or an ``http(s)://`` address."""
    if isinstance(client, (Database, Client)):
        if api_key is not None:
            raise errors.InvalidInputError("api_key goes with an address, not with an open Database or Client")
        return client
    if isinstance(client, (str, os.PathLike)):
        where = os.fspath(client)
        if where.startswith(("http://", "https://")):
            return Client(where, api_key=api_key)
        if api_key is not None:
            raise errors.InvalidInputError("api_key goes with a server address, not with a database folder")
        return _database(where)
    raise TypeError(
        f"client must be a tessera.Database, a tessera.Client, a folder or an http(s):// address, "
        f"got {type(client).__name__}"
    )


# The databases the integrations opened, by real path: a process may open a
# folder once, and frameworks build several objects over one store (a
# pipeline loaded from its serialised form, a retriever beside its store).
_databases: "weakref.WeakValueDictionary[str, Database]" = weakref.WeakValueDictionary()
_databases_lock = threading.Lock()


def _database(where: str) -> Database:
    key = os.path.realpath(where)
    with _databases_lock:
        db = _databases.get(key)
        if db is not None:
            try:
                db.list_collections()
                return db
            except errors.UnavailableError:
                pass  # closed: open it again
        db = Database(where)
        _databases[key] = db
        return db


def new_id() -> str:
    return uuid.uuid4().hex


def as_tokens(v: Any, what: str) -> np.ndarray:
    """A framework's embedding as a token matrix: a 2-D one as it is (one row
    per token); a single vector as one token scaled to unit length, so that
    MaxSim over it is the cosine similarity."""
    try:
        a = np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise errors.InvalidInputError(f"{what} is not a vector or a token matrix: {e}") from None
    if a.ndim == 1:
        norm = float(np.linalg.norm(a))
        if not np.isfinite(norm) or norm == 0.0:
            raise errors.InvalidInputError(f"{what} is a zero or non-finite vector")
        return (a / norm)[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise errors.InvalidInputError(f"{what} must be a vector or a non-empty [tokens, dim] matrix, got shape {a.shape}")
    return a


class Target:
    """One collection of a database or a server, opened on first use and
    created on the first write when missing: with the dimension of the first
    tokens written, or bound to ``model`` (a model folder for the embedded
    engine, a model name the server was started with for a server).
    ``create`` holds further ``create_collection`` options (``index``,
    ``text``, ``storage``, …)."""

    def __init__(
        self,
        client: Any,
        name: str,
        *,
        model: Optional[str] = None,
        create: Optional[Mapping[str, Any]] = None,
        api_key: Optional[str] = None,
    ):
        self.backend = connect(client, api_key)
        self.name = name
        self.model = os.fspath(model) if model is not None else None
        self.create = dict(create or {})
        self._col: Any = None
        self._bound: Optional[bool] = None

    def get(self) -> Any:
        """The collection, or None while it does not exist."""
        if self._col is None:
            try:
                self._col = self.backend.collection(self.name)
            except errors.NotFoundError:
                return None
        return self._col

    def ensure(self, dim: Optional[int]) -> Any:
        """The collection, created (with ``dim``, or the model's) when missing."""
        col = self.get()
        if col is not None:
            return col
        if dim is None and self.model is None:
            raise errors.InvalidInputError(
                f"collection {self.name!r} does not exist: give model= to create it bound to a model, "
                "or an embedding that gives its dimension"
            )
        try:
            self._col = self.backend.create_collection(self.name, dim, model=self.model, **self.create)
        except errors.AlreadyExistsError:
            self._col = self.backend.collection(self.name)
        return self._col

    def forget(self) -> None:
        """Drops the cached handle (after the collection was dropped)."""
        self._col, self._bound = None, None

    def has_model(self) -> bool:
        col = self.get()
        if col is None:
            return self.model is not None
        if self._bound is None:
            self._bound = col.model is not None
        return self._bound

    def no_model(self) -> errors.InvalidInputError:
        return errors.InvalidInputError(
            f"collection {self.name!r} has no bound model to encode text: create it with model=..., "
            "bind one (Collection.bind_model), or give an embedding that returns token matrices"
        )

    def document_tokens(
        self, texts: Sequence[str], embed: Optional[Callable[[List[str]], Sequence[Any]]]
    ) -> Optional[List[np.ndarray]]:
        """Tokens for ``texts`` from the framework's ``embed`` (None: the
        collection's model encodes them on upsert)."""
        if embed is None:
            if not self.has_model():
                raise self.no_model()
            return None
        vecs = list(embed(list(texts)))
        if len(vecs) != len(texts):
            raise errors.InvalidInputError(f"the embedding gave {len(vecs)} vectors for {len(texts)} texts")
        return [as_tokens(v, f"embedding of text {i}") for i, v in enumerate(vecs)]

    def query_tokens(self, col: Any, query: str, embed: Optional[Callable[[str], Any]]) -> np.ndarray:
        """The query's tokens: by the framework's ``embed``, else the collection's model."""
        if embed is not None:
            return as_tokens(embed(query), "the query's embedding")
        if not self.has_model():
            raise self.no_model()
        return col.encode([query], is_query=True)[0]

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[Optional[str]],
        payloads: Sequence[Any],
        tokens: Optional[List[np.ndarray]],
    ) -> None:
        col = self.ensure(int(tokens[0].shape[1]) if tokens else None)
        if tokens is None:
            col.upsert(list(ids), texts=list(texts), payloads=list(payloads))
        else:
            col.upsert(list(ids), tokens, texts=list(texts), payloads=list(payloads))

    def delete(self, ids: Sequence[str]) -> int:
        """Deletes ``ids`` (repeats once, unknown ones no error), in requests
        of 1000; returns how many existed."""
        col = self.get()
        ids = list(dict.fromkeys(ids))
        if col is None or not ids:
            return 0
        return sum(col.delete(ids[i : i + 1000]) for i in range(0, len(ids), 1000))

    def rewrite_payloads(self, ids: Sequence[str], update: Callable[[Any], Any]) -> int:
        """Writes each document of ``ids`` again with ``update(payload)`` as
        its payload and its stored tokens and text (nothing re-encoded), in
        batches of 64 read with their tokens; a document deleted meanwhile is
        left out. Returns how many were written."""
        col = self.get()
        n = 0
        for i in range(0, len(ids), 64):
            docs = [d for d in col.get(list(ids[i : i + 64]), tokens=True) if d is not None]
            if docs:
                col.upsert(
                    [d.id for d in docs],
                    [d.tokens for d in docs],
                    texts=[d.text for d in docs],
                    payloads=[update(d.payload) for d in docs],
                )
                n += len(docs)
        return n

    def scan_all(self, filter: Any = None, *, tokens: bool = False) -> List[Any]:
        """Every document matching ``filter``, in id order."""
        col = self.get()
        if col is None:
            return []
        out: List[Any] = []
        after: Optional[str] = None
        while True:
            docs, after = col.scan(filter, after=after, limit=1000, tokens=tokens)
            out.extend(docs)
            if after is None:
                return out


def search_options(base: Mapping[str, Any], extra: Mapping[str, Any], filter: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A search's options: the store's ``base``, a call's ``extra`` (which
    win), and the framework's ``filter`` joined to any filter among them
    (both must hold)."""
    opts = {**base, **extra}
    if filter is not None:
        old = opts.get("filter")
        if isinstance(old, str):
            old = json.loads(old)
        opts["filter"] = filter if old is None else {"and": [old, filter]}
    return opts


# ------------------------------------------------------------------ filters

_TESSERA_OPS = {"eq", "in", "range", "exists"}


def is_tessera_filter(f: Any) -> bool:
    """Whether ``f`` is written in Tessera's own filter language."""
    if not isinstance(f, Mapping):
        return False
    keys = set(f)
    if len(keys) == 1 and keys <= {"and", "or", "not"}:
        return True
    return "field" in keys and len(keys) == 2 and bool(keys & _TESSERA_OPS)


# Conditions in Tessera's language with the frameworks' shared meaning of
# None: a field equal to None is missing or null (Tessera's `exists: false`).


def eq(field: str, v: Any) -> Dict[str, Any]:
    return {"field": field, "exists": False} if v is None else {"field": field, "eq": v}


def ne(field: str, v: Any) -> Dict[str, Any]:
    return {"field": field, "exists": True} if v is None else {"not": {"field": field, "eq": v}}


def among(field: str, values: List[Any], negate: bool = False) -> Dict[str, Any]:
    """``field`` is one of ``values`` (None among them: or missing/null)."""
    rest = [v for v in values if v is not None]
    c: Dict[str, Any] = {"field": field, "in": rest}
    if len(rest) < len(values):
        c = {"or": [c, {"field": field, "exists": False}]}
    return {"not": c} if negate else c


# The comparison operators' bounds in Tessera's `range`.
RANGE_BOUNDS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_RANGE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _bound(field: str, op: str, v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise errors.InvalidInputError(f"filter: {op} on {field!r} takes a number or a string, got {v!r}")
    return v


def _condition(field: str, cond: Any) -> Dict[str, Any]:
    if not isinstance(cond, Mapping) or not any(str(k).startswith("$") for k in cond):
        return eq(field, cond)
    parts: List[Dict[str, Any]] = []
    bounds: Dict[str, Any] = {}
    for op, v in cond.items():
        if op == "$eq":
            parts.append(eq(field, v))
        elif op == "$ne":
            parts.append(ne(field, v))
        elif op in _RANGE:
            bounds[RANGE_BOUNDS[_RANGE[op]]] = _bound(field, op, v)
        elif op in ("$in", "$nin"):
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
                raise errors.InvalidInputError(f"filter: {op} on {field!r} takes a list, got {v!r}")
            parts.append(among(field, list(v), negate=op == "$nin"))
        elif op == "$exists":
            if not isinstance(v, bool):
                raise errors.InvalidInputError(f"filter: $exists on {field!r} takes true or false")
            parts.append({"field": field, "exists": v})
        else:
            raise errors.InvalidInputError(
                f"filter: unknown operator {op!r} on {field!r} (known: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists)"
            )
    if bounds:
        kinds = {isinstance(b, str) for b in bounds.values()}
        if len(kinds) > 1:
            raise errors.InvalidInputError(f"filter: the bounds on {field!r} mix numbers and strings")
        parts.append({"field": field, "range": bounds})
    return parts[0] if len(parts) == 1 else {"and": parts}


def mongo_filter(f: Any) -> Dict[str, Any]:
    """A Mongo-style metadata filter — ``{"lang": "en"}``, ``{"year": {"$gte":
    2020}}``, ``{"$or": [...]}``, ``$and``, ``$not``, operators ``$eq $ne $gt
    $gte $lt $lte $in $nin $exists`` — in Tessera's filter language; a filter
    already in Tessera's language passes as it is."""
    if is_tessera_filter(f):
        return dict(f)
    if not isinstance(f, Mapping):
        raise errors.InvalidInputError(f"filter must be a dict, got {type(f).__name__}")
    parts: List[Dict[str, Any]] = []
    for key, v in f.items():
        if key in ("$and", "$or"):
            if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Sequence):
                raise errors.InvalidInputError(f"filter: {key} takes a list of filters")
            parts.append({key[1:]: [mongo_filter(x) for x in v]})
        elif key == "$not":
            parts.append({"not": mongo_filter(v)})
        elif isinstance(key, str) and key.startswith("$"):
            raise errors.InvalidInputError(f"filter: unknown operator {key!r} (known: $and, $or, $not)")
        else:
            parts.append(_condition(str(key), v))
    return parts[0] if len(parts) == 1 else {"and": parts}
