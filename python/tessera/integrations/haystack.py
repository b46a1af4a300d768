"""A Haystack document store and retrievers over a Tessera collection
(``pip install 'tessera-db[haystack]'``; docs/INTEGRATIONS.md).

>>> from tessera.integrations.haystack import TesseraDocumentStore, TesseraRetriever
>>> store = TesseraDocumentStore("./db", "docs", model="./my-colbert")  # doctest: +SKIP
>>> store.write_documents([Document(content="Tessera ranks by MaxSim.")])  # doctest: +SKIP
>>> TesseraRetriever(store, top_k=5).run(query="what ranks?")["documents"]  # doctest: +SKIP

A document's ``content`` is its text, encoded by the collection's bound
model; its ``meta`` is the payload (filters address it as ``meta.<key>``).
A Haystack ``embedding`` that is a token matrix (a list of rows) is used as
the document's tokens (and not returned as ``embedding``: ``Collection.get(ids,
tokens=True)`` reads them); a single vector is used as one unit-length token when
the collection has no model, and is otherwise only kept with the document
(it comes back unchanged, as do ``sparse_embedding`` and ``blob``, under the
payload key ``_haystack``).
"""

import asyncio
import base64
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from haystack import Document, component, default_from_dict, default_to_dict
from haystack.dataclasses import ByteStream, SparseEmbedding
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy, FilterPolicy, apply_filter_policy
from haystack.errors import FilterError
from haystack.utils import Secret, deserialize_secrets_inplace

from .. import errors
from .._tessera import Database
from ..client import Client
from ._common import RANGE_BOUNDS, Target, among, as_tokens, eq, ne, search_options

__all__ = ["TesseraDocumentStore", "TesseraRetriever", "TesseraEmbeddingRetriever"]

# The payload key that keeps what Haystack stores beside meta.
RESERVED = "_haystack"


# ------------------------------------------------------------------ filters

_NOTHING: Dict[str, Any] = {"or": []}


def _field(f: Any) -> str:
    if not isinstance(f, str) or not f.startswith("meta.") or len(f) == len("meta."):
        raise FilterError(f"Tessera filters the documents' meta fields (meta.<key>), got field {f!r}")
    return f[len("meta.") :]


def convert_filters(filters: Dict[str, Any]) -> Dict[str, Any]:
    """A Haystack filter in Tessera's filter language (docs/FILTERS.md);
    raises ``FilterError`` for a malformed one, as Haystack's stores do."""
    if not isinstance(filters, dict):
        raise FilterError(f"a filter must be a dict, got {type(filters).__name__}")
    if "operator" not in filters:
        raise FilterError(f"a filter needs an 'operator': {filters}")
    op = filters["operator"]
    if "conditions" in filters or op in ("AND", "OR", "NOT"):
        if "conditions" not in filters:
            raise FilterError(f"a logical filter needs 'conditions': {filters}")
        conds = filters["conditions"]
        if not isinstance(conds, list):
            raise FilterError("'conditions' must be a list")
        inner = [convert_filters(c) for c in conds]
        if op == "AND":
            return {"and": inner}
        if op == "OR":
            return {"or": inner}
        if op == "NOT":
            return {"not": {"and": inner}}
        raise FilterError(f"unknown logical operator {op!r}: use AND, OR or NOT")
    if "field" not in filters:
        raise FilterError(f"a comparison needs a 'field': {filters}")
    if "value" not in filters:
        raise FilterError(f"a comparison needs a 'value': {filters}")
    field, value = _field(filters["field"]), filters["value"]
    if op == "==":
        return eq(field, value)
    if op == "!=":
        return ne(field, value)
    if op in RANGE_BOUNDS:
        if value is None:
            return _NOTHING  # as Haystack: None is not ordered
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise FilterError(f"{op} compares numbers or ISO-8601 dates, got {value!r}") from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FilterError(f"{op} compares numbers or ISO-8601 dates, got {value!r}")
        return {"field": field, "range": {RANGE_BOUNDS[op]: value}}
    if op in ("in", "not in"):
        if not isinstance(value, list):
            raise FilterError(f"'{op}' takes a list, got {type(value).__name__}")
        return among(field, value, negate=op == "not in")
    raise FilterError(f"unknown comparison operator {op!r}")


def _filter(filters: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    return convert_filters(filters) if filters else None


# ------------------------------------------------------------------ store


class TesseraDocumentStore:
    """A Haystack ``DocumentStore`` over the Tessera collection ``collection_name``.

    ``client``: a database folder or a server address (or an open
    :class:`tessera.Database` / :class:`tessera.Client`, which then cannot be
    serialised by ``to_dict``); ``api_key``: a Haystack ``Secret`` for a
    server (default: the ``TESSERA_API_KEY`` environment variable when set).
    ``model``: the model a missing collection is created bound to (a folder
    embedded, a server model name); ``create``: further
    ``create_collection`` options.
    """

    def __init__(
        self,
        client: Any = "tessera-db",
        collection_name: str = "haystack",
        *,
        model: Optional[str] = None,
        create: Optional[Dict[str, Any]] = None,
        api_key: Optional[Secret] = Secret.from_env_var("TESSERA_API_KEY", strict=False),
    ):
        self.client = client
        self.collection_name = collection_name
        self.model = model
        self.create = dict(create or {})
        self.api_key = api_key
        remote = isinstance(client, str) and client.startswith(("http://", "https://"))
        key = api_key.resolve_value() if (api_key is not None and remote) else None
        self._target = Target(client, collection_name, model=model, create=create, api_key=key)

    # -------------------------------------------------------- serialisation

    def to_dict(self) -> Dict[str, Any]:
        client = self.client
        if isinstance(client, Database):
            client = client.path
        elif isinstance(client, Client):
            client = client.url
        return default_to_dict(
            self,
            client=str(client),
            collection_name=self.collection_name,
            model=self.model,
            create=self.create,
            api_key=self.api_key.to_dict() if self.api_key is not None else None,
        )

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TesseraDocumentStore":
        deserialize_secrets_inplace(data.get("init_parameters", {}), keys=["api_key"])
        return default_from_dict(cls, data)

    # -------------------------------------------------------- documents

    def _to_haystack(self, d: Any, score: Optional[float] = None) -> Document:
        payload = dict(d.payload) if isinstance(d.payload, dict) else {}
        kept = payload.pop(RESERVED, {}) or {}
        blob = kept.get("blob")
        sparse = kept.get("sparse_embedding")
        return Document(
            id=d.id,
            content=d.text,
            meta=payload,
            embedding=kept.get("embedding"),
            sparse_embedding=SparseEmbedding.from_dict(sparse) if sparse else None,
            blob=ByteStream(
                data=base64.b64decode(blob["data"]), mime_type=blob.get("mime_type"), meta=blob.get("meta") or {}
            )
            if blob
            else None,
            score=score,
        )

    def _payload(self, doc: Document, keep_embedding: bool) -> Dict[str, Any]:
        if RESERVED in doc.meta:
            raise ValueError(f"document {doc.id}: the meta key {RESERVED!r} is Tessera's")
        payload = dict(doc.meta)
        kept: Dict[str, Any] = {}
        if keep_embedding and doc.embedding is not None:
            kept["embedding"] = list(doc.embedding)
        if doc.sparse_embedding is not None:
            kept["sparse_embedding"] = doc.sparse_embedding.to_dict()
        if doc.blob is not None:
            kept["blob"] = {
                "data": base64.b64encode(doc.blob.data).decode("ascii"),
                "mime_type": doc.blob.mime_type,
                "meta": doc.blob.meta,
            }
        if kept:
            payload[RESERVED] = kept
        return payload

    def count_documents(self) -> int:
        col = self._target.get()
        return 0 if col is None else len(col)

    def count_documents_by_filter(self, filters: Dict[str, Any]) -> int:
        col = self._target.get()
        return 0 if col is None else col.count(_filter(filters))

    def filter_documents(self, filters: Optional[Dict[str, Any]] = None) -> List[Document]:
        """The documents matching ``filters`` (all without), in id order."""
        return [self._to_haystack(d) for d in self._target.scan_all(_filter(filters))]

    def write_documents(self, documents: List[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Writes ``documents``; ``NONE`` is ``FAIL``. ``FAIL`` writes nothing
        when any id exists (or repeats); ``SKIP`` leaves existing ids as they
        are (a repeated id: its first); ``OVERWRITE`` replaces them (its last).
        Existence is checked before the write: a concurrent writer of the same
        ids can slip in between."""
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            raise ValueError("write_documents() takes a list of haystack Documents")
        if policy == DuplicatePolicy.NONE:
            policy = DuplicatePolicy.FAIL
        if not documents:
            return 0
        by_id: Dict[str, Document] = {}
        for d in documents:
            if d.id in by_id:
                if policy == DuplicatePolicy.FAIL:
                    raise DuplicateDocumentError(f"document id {d.id} is given twice")
                if policy == DuplicatePolicy.SKIP:
                    continue
            by_id[d.id] = d
        col = self._target.get()
        if col is not None and policy in (DuplicatePolicy.FAIL, DuplicatePolicy.SKIP):
            ids = list(by_id)
            existing = [i for i, found in zip(ids, col.get(ids)) if found is not None]
            if existing and policy == DuplicatePolicy.FAIL:
                raise DuplicateDocumentError(f"documents with ids {existing[:5]} already exist")
            for i in existing:
                del by_id[i]
        docs = list(by_id.values())
        if docs:
            self._write(docs)
        return len(docs)

    def _write(self, docs: Sequence[Document]) -> None:
        matrices = [d.embedding is not None and np.ndim(d.embedding) == 2 for d in docs]
        if any(matrices) and not all(matrices):
            raise ValueError("give every document of a write a token-matrix embedding, or none")
        if all(matrices):
            tokens: Optional[List[np.ndarray]] = [as_tokens(d.embedding, f"document {d.id}'s embedding") for d in docs]
            keep = False
        elif self._target.has_model():
            tokens, keep = None, True
            for d in docs:
                if not d.content:
                    raise ValueError(f"document {d.id} has no content for the collection's model to encode")
        elif all(d.embedding is not None for d in docs):
            tokens = [as_tokens(d.embedding, f"document {d.id}'s embedding") for d in docs]
            keep = True
        else:
            raise errors.InvalidInputError(str(self._target.no_model()) + " (or documents with embeddings)")
        payloads = [self._payload(d, keep) for d in docs]
        self._target.upsert([d.id for d in docs], [d.content for d in docs], payloads, tokens)

    def delete_documents(self, document_ids: List[str]) -> None:
        """Deletes documents by id (ids not stored are no error)."""
        self._target.delete(document_ids)

    def delete_all_documents(self) -> None:
        """Deletes every document (the collection, its settings and model stay)."""
        self.delete_by_filter({})

    def delete_by_filter(self, filters: Dict[str, Any]) -> int:
        """Deletes the documents matching ``filters``; returns how many."""
        return self._target.delete([d.id for d in self._target.scan_all(_filter(filters))])

    def update_by_filter(self, filters: Dict[str, Any], meta: Dict[str, Any]) -> int:
        """Merges ``meta`` into the meta of the documents matching
        ``filters`` (their tokens are kept, not re-encoded); returns how many."""
        if RESERVED in meta:
            raise ValueError(f"the meta key {RESERVED!r} is Tessera's")
        ids = [d.id for d in self._target.scan_all(_filter(filters))]
        return self._target.rewrite_payloads(ids, lambda p: {**(p or {}), **meta})

    # -------------------------------------------------------- retrieval

    def _query(self, query: Any, filters: Optional[Dict[str, Any]], top_k: int, options: Dict[str, Any]) -> List[Document]:
        col = self._target.get()
        if col is None or top_k == 0:
            return []
        if isinstance(query, str):
            q = self._target.query_tokens(col, query, None)
        else:
            q = as_tokens(query, "query_embedding")
        hits = col.search(q, k=top_k, **search_options(options, {}, _filter(filters)))
        return [self._to_haystack(h, score=h.score) for h in hits]

    # async twins (the engine releases the GIL; a thread each)
    async def count_documents_async(self) -> int:
        return await asyncio.to_thread(self.count_documents)

    async def count_documents_by_filter_async(self, filters: Dict[str, Any]) -> int:
        return await asyncio.to_thread(self.count_documents_by_filter, filters)

    async def filter_documents_async(self, filters: Optional[Dict[str, Any]] = None) -> List[Document]:
        return await asyncio.to_thread(self.filter_documents, filters)

    async def write_documents_async(
        self, documents: List[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE
    ) -> int:
        return await asyncio.to_thread(self.write_documents, documents, policy)

    async def delete_documents_async(self, document_ids: List[str]) -> None:
        await asyncio.to_thread(self.delete_documents, document_ids)

    async def delete_all_documents_async(self) -> None:
        await asyncio.to_thread(self.delete_all_documents)

    async def delete_by_filter_async(self, filters: Dict[str, Any]) -> int:
        return await asyncio.to_thread(self.delete_by_filter, filters)

    async def update_by_filter_async(self, filters: Dict[str, Any], meta: Dict[str, Any]) -> int:
        return await asyncio.to_thread(self.update_by_filter, filters, meta)


# ------------------------------------------------------------------ retrievers


class _Retriever:
    def __init__(
        self,
        document_store: TesseraDocumentStore,
        filters: Optional[Dict[str, Any]] = None,
        top_k: int = 10,
        filter_policy: FilterPolicy = FilterPolicy.REPLACE,
        search_options: Optional[Dict[str, Any]] = None,
    ):
        if not isinstance(document_store, TesseraDocumentStore):
            raise TypeError("document_store must be a TesseraDocumentStore")
        if top_k <= 0:
            raise ValueError(f"top_k must be greater than 0, got {top_k}")
        self.document_store = document_store
        self.filters = filters
        self.top_k = top_k
        self.filter_policy = FilterPolicy.from_str(filter_policy) if isinstance(filter_policy, str) else filter_policy
        self.search_options = dict(search_options or {})

    def to_dict(self) -> Dict[str, Any]:
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            filters=self.filters,
            top_k=self.top_k,
            filter_policy=self.filter_policy.value,
            search_options=self.search_options,
        )

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Any:
        params = data.get("init_parameters", {})
        params["document_store"] = TesseraDocumentStore.from_dict(params["document_store"])
        return default_from_dict(cls, data)

    def _retrieve(self, query: Any, filters: Optional[Dict[str, Any]], top_k: Optional[int]) -> Dict[str, List[Document]]:
        filters = apply_filter_policy(self.filter_policy, self.filters, filters)
        top_k = self.top_k if top_k is None else top_k
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        return {"documents": self.document_store._query(query, filters, top_k, self.search_options)}


@component
class TesseraRetriever(_Retriever):
    """Retrieves documents for a text query, encoded by the collection's
    bound model, ranked by MaxSim (with BM25 when ``search_options`` has
    ``text``, or under the collection's ranking; any Tessera search option)."""

    @component.output_types(documents=List[Document])
    def run(self, query: str, filters: Optional[Dict[str, Any]] = None, top_k: Optional[int] = None) -> Dict[str, Any]:
        return self._retrieve(query, filters, top_k)

    @component.output_types(documents=List[Document])
    async def run_async(
        self, query: str, filters: Optional[Dict[str, Any]] = None, top_k: Optional[int] = None
    ) -> Dict[str, Any]:
        return await asyncio.to_thread(self._retrieve, query, filters, top_k)


@component
class TesseraEmbeddingRetriever(_Retriever):
    """Retrieves documents for a query embedding: a token matrix (a list of
    rows), or one vector (used as one unit-length token)."""

    @component.output_types(documents=List[Document])
    def run(
        self, query_embedding: List[Any], filters: Optional[Dict[str, Any]] = None, top_k: Optional[int] = None
    ) -> Dict[str, Any]:
        return self._retrieve(query_embedding, filters, top_k)

    @component.output_types(documents=List[Document])
    async def run_async(
        self, query_embedding: List[Any], filters: Optional[Dict[str, Any]] = None, top_k: Optional[int] = None
    ) -> Dict[str, Any]:
        return await asyncio.to_thread(self._retrieve, query_embedding, filters, top_k)
