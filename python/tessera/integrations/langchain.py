"""A LangChain vector store over a Tessera collection (``pip install
'tessera-db[langchain]'``; docs/INTEGRATIONS.md).

>>> from tessera.integrations.langchain import TesseraVectorStore
>>> store = TesseraVectorStore("./db", "docs", model="./my-colbert")   # doctest: +SKIP
>>> store.add_texts(["Tessera ranks by MaxSim."], metadatas=[{"lang": "en"}])  # doctest: +SKIP
>>> store.as_retriever(search_type="hybrid", search_kwargs={"k": 5}).invoke("what ranks?")  # doctest: +SKIP

Text is encoded by the collection's bound model unless an ``embedding`` is
given: LangChain ``Embeddings`` whose vectors are token matrices (one row per
token) are used as they are; ordinary single-vector embeddings become one
token of unit length (MaxSim is then the cosine similarity). Metadata is the
document's payload; ``filter`` takes Tessera's filter language or Mongo-style
dicts (``{"year": {"$gte": 2020}}``). Search keyword arguments other than
``k`` and ``filter`` are Tessera's search options (``candidates``, ``rank``, …).
"""

from typing import Any, ClassVar, Collection, Iterable, List, Optional, Sequence, Tuple

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever

from .. import errors
from ._common import Target, mongo_filter, new_id, search_options

__all__ = ["TesseraVectorStore", "TesseraRetriever"]


class TesseraVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over the Tessera collection ``collection_name``.

    ``client``: a :class:`tessera.Database`, a :class:`tessera.Client`, a
    database folder or a server address (``api_key`` for a server address).
    ``embedding``: optional LangChain ``Embeddings``; without it the
    collection's bound model encodes texts and queries. ``model``: the model
    (a folder embedded, a server model name) a missing collection is created
    bound to; ``create``: further ``create_collection`` options (e.g.
    ``{"text": "english"}`` for the hybrid search type). ``search_options``:
    Tessera search options applied to every search.
    """

    def __init__(
        self,
        client: Any,
        collection_name: str,
        embedding: Optional[Embeddings] = None,
        *,
        model: Optional[str] = None,
        create: Optional[dict] = None,
        api_key: Optional[str] = None,
        search_options: Optional[dict] = None,
    ):
        self._target = Target(client, collection_name, model=model, create=create, api_key=api_key)
        self._embedding = embedding
        self._options = dict(search_options or {})

    @property
    def embeddings(self) -> Optional[Embeddings]:
        return self._embedding

    @property
    def collection_name(self) -> str:
        return self._target.name

    @property
    def collection(self) -> Any:
        """The Tessera collection (None until it exists)."""
        return self._target.get()

    # ------------------------------------------------------------ writes

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[dict]] = None,
        *,
        ids: Optional[List[Optional[str]]] = None,
        **kwargs: Any,
    ) -> List[str]:
        """Adds (or replaces, by id) texts with their metadata as payloads;
        ids are generated where missing. Returns the ids."""
        if kwargs:
            raise TypeError(f"add_texts() got unexpected keyword arguments {sorted(kwargs)}")
        texts = list(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        ids = list(ids) if ids is not None else [None] * len(texts)
        if not (len(metadatas) == len(ids) == len(texts)):
            raise ValueError(f"{len(texts)} texts, {len(metadatas)} metadatas and {len(ids)} ids: give one each")
        if not texts:
            return []
        ids = [i if i else new_id() for i in ids]
        embed = self._embedding.embed_documents if self._embedding is not None else None
        tokens = self._target.document_tokens(texts, embed)
        self._target.upsert(ids, texts, [dict(m or {}) for m in metadatas], tokens)
        return ids

    def delete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Deletes documents by id (ids not stored are no error)."""
        if kwargs:
            raise TypeError(f"delete() got unexpected keyword arguments {sorted(kwargs)}")
        if ids is None:
            raise ValueError("delete() needs ids (dropping the whole collection is Database.drop_collection)")
        self._target.delete(ids)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        """The stored documents of ``ids`` (missing ones left out), in the order asked."""
        col = self._target.get()
        if col is None or not ids:
            return []
        return [_document(d.id, d.text, d.payload) for d in col.get(list(ids)) if d is not None]

    # ------------------------------------------------------------ search

    def _search(self, query: str, k: int, filter: Any, hybrid: bool, options: dict) -> List[Tuple[Document, float, int]]:
        col = self._target.get()
        if col is None:
            return []
        embed = self._embedding.embed_query if self._embedding is not None else None
        q = self._target.query_tokens(col, query, embed)
        opts = search_options(self._options, options, mongo_filter(filter) if filter is not None else None)
        if hybrid:
            if opts.get("text") is not None:
                raise errors.InvalidInputError("the hybrid search's BM25 text is the query: give no text option")
            opts["text"] = query
        hits = col.search(q, k=k, **opts)
        return [(_document(h.id, h.text, h.payload), float(h.score), int(q.shape[0])) for h in hits]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Any = None,
        *,
        hybrid: bool = False,
        **kwargs: Any,
    ) -> List[Tuple[Document, float]]:
        """The ``k`` best documents with their MaxSim scores (higher is better).
        ``hybrid=True`` adds BM25 of the query (the collection needs a
        full-text index) under the collection's ranking; other keyword
        arguments are Tessera search options."""
        return [(d, s) for d, s, _ in self._search(query, k, filter, hybrid, kwargs)]

    def similarity_search(
        self, query: str, k: int = 4, filter: Any = None, *, hybrid: bool = False, **kwargs: Any
    ) -> List[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, hybrid=hybrid, **kwargs)]

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        # MaxSim over unit-length tokens lies in [-n, n] for n query tokens:
        # (score / n + 1) / 2 maps it onto [0, 1].
        filter = kwargs.pop("filter", None)
        hybrid = kwargs.pop("hybrid", False)
        kwargs.pop("score_threshold", None)
        found = self._search(query, k, filter, hybrid, kwargs)
        return [(d, min(1.0, max(0.0, (s / n + 1.0) / 2.0))) for d, s, n in found]

    def search(self, query: str, search_type: str, **kwargs: Any) -> List[Document]:
        if search_type == "hybrid":
            return self.similarity_search(query, hybrid=True, **kwargs)
        return super().search(query, search_type, **kwargs)

    async def asearch(self, query: str, search_type: str, **kwargs: Any) -> List[Document]:
        if search_type == "hybrid":
            return await run_in_executor(None, self.search, query, search_type, **kwargs)
        return await super().asearch(query, search_type, **kwargs)

    def as_retriever(self, **kwargs: Any) -> "TesseraRetriever":
        """A retriever; ``search_type`` may also be ``"hybrid"``."""
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return TesseraRetriever(vectorstore=self, tags=tags, **kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: List[str],
        embedding: Optional[Embeddings] = None,
        metadatas: Optional[List[dict]] = None,
        *,
        ids: Optional[List[str]] = None,
        client: Any = None,
        collection_name: str = "langchain",
        **kwargs: Any,
    ) -> "TesseraVectorStore":
        """A store over ``client`` / ``collection_name`` holding ``texts``."""
        if client is None:
            raise ValueError("from_texts() needs client= (a tessera.Database, tessera.Client, folder or address)")
        store = cls(client, collection_name, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


class TesseraRetriever(VectorStoreRetriever):
    """LangChain's vector-store retriever with one more ``search_type``:
    ``"hybrid"`` (BM25 of the query beside MaxSim, the collection's
    ranking); ``"mmr"`` is refused."""

    # Not "mmr": max-marginal-relevance search is not implemented.
    allowed_search_types: ClassVar[Collection[str]] = ("similarity", "similarity_score_threshold", "hybrid")

    def _get_relevant_documents(self, query: str, *, run_manager: Any, **kwargs: Any) -> List[Document]:
        if self.search_type == "hybrid":
            return self.vectorstore.similarity_search(query, hybrid=True, **(self.search_kwargs | kwargs))
        return super()._get_relevant_documents(query, run_manager=run_manager, **kwargs)

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any, **kwargs: Any) -> List[Document]:
        if self.search_type == "hybrid":
            kw = self.search_kwargs | kwargs
            return await self.vectorstore.asearch(query, "hybrid", **kw)
        return await super()._aget_relevant_documents(query, run_manager=run_manager, **kwargs)


def _document(id: str, text: Optional[str], payload: Any) -> Document:
    metadata = payload if isinstance(payload, dict) else ({} if payload is None else {"payload": payload})
    return Document(id=id, page_content=text or "", metadata=metadata)
