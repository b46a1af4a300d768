"""Tessera inside RAG frameworks and agents (docs/INTEGRATIONS.md).

Each integration is an optional extra; its framework is imported only when
its module is:

- :mod:`tessera.integrations.langchain` (``pip install 'tessera-db[langchain]'``):
  ``TesseraVectorStore``, a LangChain ``VectorStore``, and its retriever;
- :mod:`tessera.integrations.llamaindex` (``[llamaindex]``): ``TesseraVectorStore``,
  a LlamaIndex ``BasePydanticVectorStore``;
- :mod:`tessera.integrations.haystack` (``[haystack]``): ``TesseraDocumentStore``
  and ``TesseraRetriever``, a Haystack document store and retriever component;
- :mod:`tessera.mcp` (``[mcp]``): an MCP server (``python -m tessera.mcp``).

All of them work over the embedded engine (a :class:`tessera.Database` or a
folder path) and over a server (a :class:`tessera.Client` or an
``http(s)://`` address), and encode text with the collection's bound model.
"""
