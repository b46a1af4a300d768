"""An MCP server over a Tessera database or server, for agents
(``pip install 'tessera-db[mcp]'``; docs/INTEGRATIONS.md).

    python -m tessera.mcp --db ./db                          # stdio, read-only
    python -m tessera.mcp --url http://127.0.0.1:7700 --api-key-env TESSERA_API_KEY
    python -m tessera.mcp --db ./db --allow-writes --transport streamable-http --port 8765

Tools: ``list_collections``, ``describe_collection``, ``search`` (a text
query through the collection's bound model, with a filter and k),
``get_documents``; with ``--allow-writes`` also ``upsert`` (documents as
texts, encoded by the collection's model) and ``delete``. Without
``--allow-writes`` an embedded database is opened read-only (beside a
server that may hold it; opened again every ``--refresh`` seconds to see
its writes) and the write tools do not exist.
"""

import argparse
import ipaddress
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from . import errors
from ._tessera import Database
from .client import Client
from .integrations._common import mongo_filter

__all__ = ["build_server", "main"]

INSTRUCTIONS = (
    "Tessera is a late-interaction (ColBERT) search engine. Find collections with list_collections, "
    "then search one by text (ranked by MaxSim over token embeddings, with BM25 when the collection "
    "has a full-text index); filter on payload fields with Tessera's filter language "
    '({"field": "lang", "eq": "en"}, "in", "range", "exists", "and"/"or"/"not") or Mongo-style '
    '({"lang": "en", "year": {"$gte": 2020}}).'
)

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def _with(x: Any, **head: Any) -> Dict[str, Any]:
    """``head`` and the text and payload ``x`` has."""
    for key in ("text", "payload"):
        if getattr(x, key) is not None:
            head[key] = getattr(x, key)
    return head


def _hit(h: Any) -> Dict[str, Any]:
    return _with(h, id=h.id, score=h.score)


def _doc(d: Any) -> Dict[str, Any]:
    return _with(d, id=d.id, n_tokens=d.n_tokens)


class ReadOnlyFolder:
    """A database folder opened read-only, beside the process that may write
    it: a read-only open sees the database as it was when opened, so it is
    opened again when the last open is older than ``refresh`` seconds."""

    def __init__(self, path: str, refresh: float):
        self.path, self.refresh = path, refresh
        self._lock = threading.Lock()
        self._db, self._at = Database(path, read_only=True), time.monotonic()

    def current(self) -> Database:
        with self._lock:
            if time.monotonic() - self._at >= self.refresh:
                # Calls still holding the previous handle finish on it.
                self._db, self._at = Database(self.path, read_only=True), time.monotonic()
            return self._db


def build_server(backend: Any, *, allow_writes: bool = False, name: str = "tessera") -> MCPServer:
    """An MCP server whose tools reach ``backend`` (a :class:`tessera.Database`,
    a :class:`tessera.Client` or a :class:`ReadOnlyFolder`); ``allow_writes``
    adds ``upsert`` and ``delete``."""
    server = MCPServer(name, instructions=INSTRUCTIONS, log_level="WARNING")
    db: Callable[[], Any] = backend.current if isinstance(backend, ReadOnlyFolder) else (lambda: backend)

    def collection(name: str) -> Any:
        return call(lambda: db().collection(name))

    def call(f: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except errors.TesseraError as e:
            raise ToolError(f"{type(e).__name__}: {e}") from None

    def list_collections() -> dict[str, Any]:
        """The collections: name, dimension, documents, and the bound model
        (None when the collection cannot be searched by text)."""
        d = db()
        if isinstance(d, Client):
            # One request for all of them (the info names the model's identity).
            return {
                "collections": [
                    {"name": i["name"], "dim": i["dim"], "documents": i["documents"], "model": (i.get("model") or {}).get("name")}
                    for i in call(d.collection_infos)
                ]
            }
        out = []
        for n in call(d.list_collections):
            col = collection(n)
            model = col.model
            out.append(
                {
                    "name": n,
                    "dim": col.dim,
                    "documents": len(col),
                    "model": (model or {}).get("identity", {}).get("name") if model else None,
                }
            )
        return {"collections": out}

    def describe_collection(collection_name: str) -> dict[str, Any]:
        """One collection: its configuration and counts (stats), bound model and ranking."""
        col = collection(collection_name)
        return {
            "name": collection_name,
            "dim": col.dim,
            "documents": len(col),
            "model": col.model,
            "ranking": call(col.ranking),
            "stats": call(col.stats),
        }

    def search(
        collection_name: str,
        query: str,
        k: int = 10,
        filter: Optional[Dict[str, Any]] = None,
    ) -> dict[str, Any]:
        """The k best documents for a text query (encoded by the collection's
        model; hybrid with BM25 when the collection has a full-text index),
        best first, with id, score, text and payload. `filter` restricts the
        documents by payload (Tessera's filter language or Mongo-style)."""
        col = collection(collection_name)
        if col.model is None:
            raise ToolError(f"collection {collection_name!r} has no bound model: it cannot be searched by text")
        f = call(mongo_filter, filter) if filter is not None else None
        return {"hits": [_hit(h) for h in call(col.search, query, k=k, filter=f)]}

    def get_documents(collection_name: str, ids: List[str]) -> dict[str, Any]:
        """Documents by id (text, payload, token count), and the ids not found."""
        col = collection(collection_name)
        found = call(col.get, ids)
        return {
            "documents": [_doc(d) for d in found if d is not None],
            "missing": [i for i, d in zip(ids, found) if d is None],
        }

    server.add_tool(list_collections, annotations=_READ)
    server.add_tool(describe_collection, annotations=_READ)
    server.add_tool(search, annotations=_READ)
    server.add_tool(get_documents, annotations=_READ)
    if not allow_writes:
        return server

    def upsert(collection_name: str, documents: List[Dict[str, Any]]) -> dict[str, Any]:
        """Adds or replaces documents given as {"id", "text", "payload"?}; the
        collection's model encodes the texts. All or nothing."""
        col = collection(collection_name)
        for i, d in enumerate(documents):
            if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not isinstance(d.get("text"), str):
                raise ToolError(f"documents[{i}] must be an object with a string id and text")
            extra = set(d) - {"id", "text", "payload"}
            if extra:
                raise ToolError(f"documents[{i}] has unknown fields {sorted(extra)}")
        ids = [d["id"] for d in documents]
        n = call(col.upsert, ids, texts=[d["text"] for d in documents], payloads=[d.get("payload") for d in documents])
        return {"upserted": n}

    def delete(collection_name: str, ids: List[str]) -> dict[str, Any]:
        """Deletes documents by id; answers how many existed."""
        col = collection(collection_name)
        return {"deleted": call(col.delete, ids)}

    server.add_tool(upsert, annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
    server.add_tool(delete, annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True))
    return server


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tessera.mcp", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="a database folder (the embedded engine)")
    where.add_argument("--url", help="a tessera serve address, http(s)://host:port")
    p.add_argument("--api-key-env", metavar="VAR", help="the environment variable holding the server's API key")
    p.add_argument("--allow-writes", action="store_true", help="add the upsert and delete tools")
    p.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    p.add_argument("--host", default="127.0.0.1", help="streamable-http: the address to listen on")
    p.add_argument("--port", type=int, default=8765, help="streamable-http: the port")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="streamable-http: listen on an address other than loopback (the MCP server has no authentication)",
    )
    p.add_argument(
        "--refresh",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="--db read-only: open the database again when the last open is this old, to see new writes (default 2)",
    )
    a = p.parse_args(argv)
    if a.api_key_env and not a.url:
        p.error("--api-key-env goes with --url")
    if a.transport == "stdio" and (a.host != "127.0.0.1" or a.port != 8765 or a.allow_remote):
        p.error("--host, --port and --allow-remote go with --transport streamable-http")
    if a.refresh < 0:
        p.error("--refresh must be >= 0")
    if a.transport == "streamable-http" and not a.allow_remote and not _loopback(a.host):
        p.error(
            f"--host {a.host} is not a loopback address and the MCP server has no authentication of its own: "
            "put it behind a proxy that authenticates, or pass --allow-remote"
        )
    if a.url:
        key = None
        if a.api_key_env:
            key = os.environ.get(a.api_key_env)
            if not key:
                p.error(f"the environment variable {a.api_key_env} is not set")
        backend: Any = Client(a.url, api_key=key)
    else:
        if not os.path.isdir(a.db):
            p.error(f"no database folder at {a.db}")
        backend = Database(a.db) if a.allow_writes else ReadOnlyFolder(a.db, a.refresh)
    server = build_server(backend, allow_writes=a.allow_writes)
    print(f"tessera MCP server ({'read-write' if a.allow_writes else 'read-only'}) on {a.transport}", file=sys.stderr)
    if a.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=a.host, port=a.port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
