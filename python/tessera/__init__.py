"""Tessera: a late-interaction (ColBERT-style) vector database.

Each document keeps one embedding per token; a query ranks documents by
MaxSim (for each query token the best dot product over the document's
tokens, summed). Two ways in, with one API:

- :class:`Database` runs the engine in this process (``tessera.Database(path)``);
- :class:`Client` talks to a ``tessera serve`` server
  (``tessera.Client("http://127.0.0.1:7700")``).

Both return :class:`Collection`-like objects whose ``upsert``, ``delete``,
``get``, ``search``, ``search_batch``, ``rerank``, ``flush``, ``compact``,
``stats`` and ``len()`` take and return the same types, and raise the same
:mod:`tessera.errors`.
"""

from ._tessera import (
    DEFAULT_CANDIDATES,
    MAX_K,
    SEARCH_OPTIONS,
    Collection,
    Database,
    Document,
    Encoder,
    Hit,
    Reranked,
    __version__,
    restore,
    set_build_threads,
)
from .client import Client, RemoteCollection
from .errors import (
    AlreadyExistsError,
    AuthenticationError,
    CorruptionError,
    InvalidInputError,
    NotFoundError,
    TesseraError,
    TesseraIOError,
    UnavailableError,
    DeadlineExceededError,
)
from .helpers import ingest, to_tokens

__all__ = [
    "Database",
    "Collection",
    "Client",
    "RemoteCollection",
    "Hit",
    "Document",
    "Reranked",
    "Encoder",
    "ingest",
    "to_tokens",
    "restore",
    "set_build_threads",
    "MAX_K",
    "DEFAULT_CANDIDATES",
    "SEARCH_OPTIONS",
    "TesseraError",
    "InvalidInputError",
    "NotFoundError",
    "AlreadyExistsError",
    "CorruptionError",
    "TesseraIOError",
    "UnavailableError",
    "DeadlineExceededError",
    "AuthenticationError",
    "__version__",
]
