"""A LlamaIndex vector store over a Tessera collection (``pip install
'tessera-db[llamaindex]'``; docs/INTEGRATIONS.md).

>>> from llama_index.core import StorageContext, VectorStoreIndex
>>> from tessera.integrations.llamaindex import ModelEncodes, TesseraVectorStore
>>> store = TesseraVectorStore("./db", "docs", model="./my-colbert")  # doctest: +SKIP
>>> index = VectorStoreIndex.from_documents(docs, embed_model=ModelEncodes(),  # doctest: +SKIP
...     storage_context=StorageContext.from_defaults(vector_store=store))
>>> index.as_retriever(similarity_top_k=5).retrieve("what ranks?")  # doctest: +SKIP

A collection bound to a model encodes node texts and query strings itself
(``is_embedding_query`` is then False). LlamaIndex still asks an embed model
for every node it indexes; :class:`ModelEncodes` stands in for it at no cost,
since Tessera does not use those vectors. A collection without a model takes
the nodes' embeddings — one vector each, used as one unit-length token — or
token matrices given to ``add(nodes, tokens=[...])``. Nodes are stored with
their metadata as the payload (LlamaIndex's ``node_to_metadata_dict``), so
metadata filters address the metadata keys.
"""

import asyncio
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from ._common import RANGE_BOUNDS, Target, among, as_tokens, search_options

__all__ = ["TesseraVectorStore", "ModelEncodes", "convert_filters"]


class ModelEncodes(MockEmbedding):
    """The embed model to give LlamaIndex when the collection's bound model
    encodes the text: a one-number constant, computed for nothing and never
    used by Tessera."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(embed_dim=1, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "TesseraModelEncodes"


# ------------------------------------------------------------------ filters

def _one(f: MetadataFilter) -> Dict[str, Any]:
    field, op, v = f.key, FilterOperator(f.operator), f.value
    # As LlamaIndex evaluates them: a missing key is None, and None equals
    # nothing (EQ None matches no node, NE None every node).
    if op == FilterOperator.EQ:
        return {"or": []} if v is None else {"field": field, "eq": v}
    if op == FilterOperator.NE:
        return {"and": []} if v is None else {"not": {"field": field, "eq": v}}
    if op.value in RANGE_BOUNDS:
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            return {"field": field, "range": {RANGE_BOUNDS[op.value]: v}}
        raise ValueError(f"metadata filter {op.value} on {field!r} takes a number or a string, got {v!r}")
    if op in (FilterOperator.IN, FilterOperator.NIN):
        if not isinstance(v, list):
            raise ValueError(f"metadata filter {op.value} on {field!r} takes a list, got {v!r}")
        return among(field, v, negate=op == FilterOperator.NIN)
    if op == FilterOperator.IS_EMPTY:
        return {"or": [{"field": field, "exists": False}, {"field": field, "in": ["", []]}]}
    raise ValueError(
        f"metadata filter operator {op.value!r} is not supported by Tessera's filters "
        "(supported: ==, !=, >, >=, <, <=, in, nin, is_empty, with and/or/not)"
    )


def convert_filters(filters: MetadataFilters) -> Dict[str, Any]:
    """LlamaIndex ``MetadataFilters`` (nested ones too) in Tessera's filter language."""
    parts = [convert_filters(f) if isinstance(f, MetadataFilters) else _one(f) for f in filters.filters]
    cond = FilterCondition(filters.condition) if filters.condition is not None else FilterCondition.AND
    if cond == FilterCondition.AND:
        return {"and": parts}
    if cond == FilterCondition.OR:
        return {"or": parts}
    return {"not": {"or": parts}}  # NOT: none of them


# ------------------------------------------------------------------ store


class TesseraVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over the Tessera collection ``collection_name``.

    ``client``: a :class:`tessera.Database`, a :class:`tessera.Client`, a
    database folder or a server address (``api_key`` for an address);
    ``model``: the model a missing collection is created bound to (a folder
    embedded, a server model name); ``create``: further ``create_collection``
    options; ``search_options``: Tessera search options for every query.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    collection_name: str
    search_options: Dict[str, Any] = {}

    _target: Target = PrivateAttr()

    def __init__(
        self,
        client: Any,
        collection_name: str,
        *,
        model: Optional[str] = None,
        create: Optional[Dict[str, Any]] = None,
        api_key: Optional[str] = None,
        search_options: Optional[Dict[str, Any]] = None,
        flat_metadata: bool = False,
    ) -> None:
        target = Target(client, collection_name, model=model, create=create, api_key=api_key)
        super().__init__(
            collection_name=collection_name,
            search_options=dict(search_options or {}),
            flat_metadata=flat_metadata,
            # A bound model encodes the query string; else LlamaIndex embeds it.
            is_embedding_query=not target.has_model(),
        )
        self._target = target

    @classmethod
    def class_name(cls) -> str:
        return "TesseraVectorStore"

    @property
    def client(self) -> Any:
        """The tessera.Database or tessera.Client."""
        return self._target.backend

    @property
    def collection(self) -> Any:
        """The Tessera collection (None until it exists)."""
        return self._target.get()

    # -------------------------------------------------------- writes

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Stores ``nodes`` (replacing by id). ``tokens=``: one token matrix
        per node, for a collection without a model."""
        tokens = add_kwargs.pop("tokens", None)
        if add_kwargs:
            raise TypeError(f"add() got unexpected keyword arguments {sorted(add_kwargs)}")
        nodes = list(nodes)
        if not nodes:
            return []
        texts = [n.get_content() for n in nodes]
        if tokens is not None:
            if len(tokens) != len(nodes):
                raise ValueError(f"{len(tokens)} token matrices for {len(nodes)} nodes")
            toks: Optional[List[np.ndarray]] = [as_tokens(t, f"tokens[{i}]") for i, t in enumerate(tokens)]
        elif self._target.has_model():
            toks = None
        else:
            missing = [n.node_id for n in nodes if n.embedding is None]
            if missing:
                raise ValueError(
                    f"{self._target.no_model()}; or nodes with embeddings (node {missing[0]} has none)"
                )
            toks = [as_tokens(n.embedding, f"node {n.node_id}'s embedding") for n in nodes]
        payloads = [node_to_metadata_dict(n, remove_text=True, flat_metadata=self.flat_metadata) for n in nodes]
        ids = [n.node_id for n in nodes]
        self._target.upsert(ids, texts, payloads, toks)
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Deletes every node of the source document ``ref_doc_id``."""
        if delete_kwargs:
            raise TypeError(f"delete() got unexpected keyword arguments {sorted(delete_kwargs)}")
        self._delete_where({"field": "ref_doc_id", "eq": ref_doc_id})

    def _delete_where(self, f: Optional[Dict[str, Any]], ids: Optional[List[str]] = None) -> None:
        """Deletes the nodes matching ``f`` (all without), among ``ids`` when given."""
        if ids is None:
            ids = [d.id for d in self._target.scan_all(f)]
        elif f is not None:
            ids = self._matching(ids, f)
        self._target.delete(ids)

    def _matching(self, ids: List[str], f: Dict[str, Any]) -> List[str]:
        keep = {d.id for d in self._target.scan_all(f)}
        return [i for i in ids if i in keep]

    def delete_nodes(
        self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None, **delete_kwargs: Any
    ) -> None:
        """Deletes the nodes of ``node_ids`` (those matching ``filters``, when
        given) or, without ids, every node matching ``filters``; an empty
        ``node_ids`` deletes nothing."""
        if delete_kwargs:
            raise TypeError(f"delete_nodes() got unexpected keyword arguments {sorted(delete_kwargs)}")
        if node_ids is None and filters is None:
            raise ValueError("delete_nodes() needs node_ids or filters (clear() deletes every node)")
        if node_ids is not None and len(node_ids) == 0:
            return
        self._delete_where(convert_filters(filters) if filters else None, None if node_ids is None else list(node_ids))

    def clear(self) -> None:
        """Deletes every node (the collection, its settings and model stay)."""
        self._delete_where(None)

    def get_nodes(
        self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None, **kwargs: Any
    ) -> List[BaseNode]:
        """The stored nodes of ``node_ids`` (in that order, missing ones left
        out) or matching ``filters`` (in id order)."""
        col = self._target.get()
        if col is None:
            return []
        f = convert_filters(filters) if filters else None
        if node_ids is not None:
            docs = [d for d in col.get(list(node_ids)) if d is not None]
            if f is not None:
                keep = set(self._matching([d.id for d in docs], f))
                docs = [d for d in docs if d.id in keep]
        else:
            docs = self._target.scan_all(f)
        return [metadata_dict_to_node(d.payload, text=d.text) for d in docs]

    # -------------------------------------------------------- query

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` best nodes by MaxSim for ``query_str``
        (the collection's model) or ``query_embedding``, restricted by
        ``filters``, ``doc_ids`` and ``node_ids``. Modes: default (and
        hybrid: BM25 of ``query_str`` beside MaxSim; the collection needs a
        full-text index)."""
        mode = VectorStoreQueryMode(query.mode)
        if mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.HYBRID):
            raise ValueError(f"query mode {mode.value!r} is not supported: use default or hybrid")
        for name in ("alpha", "sparse_top_k", "hybrid_top_k", "mmr_threshold"):
            if getattr(query, name, None) is not None:
                raise ValueError(
                    f"{name} is not supported: a hybrid query is ordered by the collection's ranking "
                    "(Collection.set_ranking, `tessera tune`) or the rank options in search_options"
                )
        col = self._target.get()
        if col is None or query.similarity_top_k == 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        if self._target.has_model() and query.query_str:
            q = col.encode([query.query_str], is_query=True)[0]
        elif query.query_embedding is not None:
            q = as_tokens(query.query_embedding, "query_embedding")
        else:
            raise ValueError("the query has neither a query_str (for the collection's model) nor a query_embedding")
        parts = []
        if query.filters is not None and query.filters.filters:
            parts.append(convert_filters(query.filters))
        if query.doc_ids:
            parts.append({"field": "ref_doc_id", "in": list(query.doc_ids)})
        f = (parts[0] if len(parts) == 1 else {"and": parts}) if parts else None
        opts = search_options(self.search_options, kwargs, f)
        if query.node_ids:
            if opts.get("ids") is not None:
                raise ValueError("the query's node_ids and an ids search option: give one")
            opts.update(ids=list(query.node_ids), rerank_only=True)
        if mode == VectorStoreQueryMode.HYBRID:
            if not query.query_str:
                raise ValueError("a hybrid query needs query_str (its BM25 text)")
            if opts.get("text") is not None:
                raise ValueError("a hybrid query's BM25 text is its query_str: give no text search option")
            opts["text"] = query.query_str
        hits = col.search(q, k=query.similarity_top_k, **opts)
        nodes = [metadata_dict_to_node(h.payload, text=h.text) for h in hits]
        return VectorStoreQueryResult(nodes=nodes, similarities=[h.score for h in hits], ids=[h.id for h in hits])

    # -------------------------------------------------------- async twins

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None, **delete_kwargs: Any
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aget_nodes(
        self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None
    ) -> List[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)
