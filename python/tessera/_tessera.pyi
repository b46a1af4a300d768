"""Type stubs of the extension module (python/src/lib.rs)."""

import os
from types import TracebackType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import numpy as np
import numpy.typing as npt

__version__: str
MAX_K: int
# The names of search()'s and search_batch()'s keyword options (the engine's SearchOptions).
SEARCH_OPTIONS: List[str]
DEFAULT_CANDIDATES: int

TokenArray = npt.NDArray[Union[np.float16, np.float32]]
Filter = Union[Mapping[str, Any], str]

class Hit:
    """One search result."""

    id: str
    score: float
    text: Optional[str]
    payload: Any
    fused: Optional[float]
    sources: List[Dict[str, Any]]
    components: List[Dict[str, Any]]
    def __init__(
        self,
        id: str,
        score: float,
        text: Optional[str] = None,
        payload: Any = None,
        fused: Optional[float] = None,
        sources: Optional[List[Dict[str, Any]]] = None,
        components: Optional[List[Dict[str, Any]]] = None,
    ) -> None: ...

class Document:
    """A stored document, as ``Collection.get`` returns it."""

    id: str
    tokens: Optional[npt.NDArray[np.float16]]
    n_tokens: int
    text: Optional[str]
    payload: Any
    def __init__(
        self,
        id: str,
        n_tokens: int,
        tokens: Optional[npt.NDArray[np.float16]] = None,
        text: Optional[str] = None,
        payload: Any = None,
    ) -> None: ...

class Encoder:
    """A late-interaction model loaded from a sentence-transformers / PyLate
    model directory (BERT or ModernBERT, then Dense / Normalize modules):
    texts in, one float32 ``(tokens, dim)`` array per text out, each row of
    unit norm, with PyLate's rules (docs/ENCODER.md). Nothing is downloaded."""

    def __init__(self, path: Union[str, "os.PathLike[str]"]) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def identity(self) -> Dict[str, Any]:
        """name, architecture, dim, checksum (of the files that decide the
        vectors) and settings (the late-interaction settings)."""
    def encode(self, texts: Sequence[str], is_query: bool = False) -> List["np.ndarray"]:
        """Encodes ``texts`` as queries or documents; an empty text raises
        InvalidInputError naming its position."""

class Reranked:
    """Hits of ``Collection.rerank`` best first, and the ids that are not live documents."""

    hits: List[Hit]
    missing: List[str]
    def __init__(self, hits: List[Hit], missing: List[str]) -> None: ...

class Collection:
    """A collection of documents ranked by MaxSim."""

    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def model(self) -> Optional[Dict[str, Any]]:
        """The bound model (path and identity), or None."""
    def encode(self, texts: Sequence[str], is_query: bool = False) -> List["np.ndarray"]:
        """The vectors of ``texts`` by the collection's bound model."""
    def bind_model(self, path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
        """Binds the collection to the model in ``path`` (its output dimension
        must be the collection's); stored tokens are not re-encoded."""
    def upsert(
        self,
        ids: Sequence[str],
        tokens: Optional[Union[Sequence[TokenArray], TokenArray]] = None,
        texts: Optional[Sequence[Optional[str]]] = None,
        payloads: Optional[Sequence[Any]] = None,
        *,
        offsets: Optional[Sequence[int]] = None,
        pool_factor: Optional[int] = None,
    ) -> int:
        """Inserts or replaces documents, durably before returning; the batch is
        checked whole. ``pool_factor`` (1..=64) pools each document's tokens
        into 1 + ⌈(n − 1) / f⌉ instead of the collection's ``pool_factor`` setting."""
    def delete(self, ids: Sequence[str]) -> int: ...
    def get(self, ids: Sequence[str], tokens: bool = False) -> List[Optional[Document]]: ...
    def scan(
        self,
        filter: Optional[Filter] = None,
        *,
        after: Optional[str] = None,
        limit: int = 1000,
        tokens: bool = False,
    ) -> Tuple[List[Document], Optional[str]]:
        """The live documents whose payload matches ``filter`` with ids after
        ``after``, in id order, at most ``limit`` (<= 100,000): ``(documents,
        next)``, ``next`` being the ``after`` of the next page (None on the last)."""
    def count(self, filter: Optional[Filter] = None) -> int:
        """How many live documents match ``filter`` (all without one)."""
    def search(
        self,
        query: Optional[Union[TokenArray, str]] = None,
        k: int = 10,
        *,
        candidates: Optional[int] = None,
        ef: Optional[int] = None,
        nprobe: Optional[int] = None,
        rerank: Optional[int] = None,
        exact: bool = False,
        filter: Optional[Filter] = None,
        query_text: Optional[str] = None,
        text: Optional[str] = None,
        ids: Optional[Sequence[str]] = None,
        vector: bool = False,
        rerank_only: bool = False,
        fusion: Optional[str] = None,
        rrf_k0: Optional[float] = None,
        weights: Optional[Dict[str, float]] = None,
        rank: Optional[str] = None,
        rank_norm: Optional[str] = None,
        rank_weights: Optional[Dict[str, float]] = None,
        timeout_ms: Optional[int] = None,
        include_text: bool = True,
        include_payload: bool = True,
    ) -> List[Hit]: ...
    def search_batch(
        self,
        queries: Union[Sequence[TokenArray], Sequence[str]],
        k: int = 10,
        *,
        candidates: Optional[int] = None,
        ef: Optional[int] = None,
        nprobe: Optional[int] = None,
        rerank: Optional[int] = None,
        exact: bool = False,
        filter: Optional[Filter] = None,
        text: Optional[Union[str, Sequence[str]]] = None,
        ids: Optional[Sequence[str]] = None,
        vector: bool = False,
        rerank_only: bool = False,
        fusion: Optional[str] = None,
        rrf_k0: Optional[float] = None,
        weights: Optional[Dict[str, float]] = None,
        rank: Optional[str] = None,
        rank_norm: Optional[str] = None,
        rank_weights: Optional[Dict[str, float]] = None,
        timeout_ms: Optional[int] = None,
        include_text: bool = True,
        include_payload: bool = True,
    ) -> List[List[Hit]]: ...
    def rerank(self, query: Union[TokenArray, str], ids: Sequence[str]) -> Reranked: ...
    def mine_negatives(
        self,
        query_id: str,
        query: TokenArray,
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
    ) -> Tuple[List[Hit], List[Hit]]: ...
    def flush(self) -> None: ...
    def compact(self) -> None: ...
    def recall_curve(
        self,
        *,
        sample: Optional[int] = None,
        k: Optional[int] = None,
        candidates: Optional[List[int]] = None,
        nprobe: Optional[List[int]] = None,
        rerank: Optional[List[int]] = None,
        query_tokens: Optional[int] = None,
        seed: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Recall@k of the exact top-k at each candidate count (and nprobe,
        rerank), measured on a seeded sample of the collection's own documents."""
    def update_settings(
        self,
        *,
        memtable_bytes: Optional[int] = None,
        max_segments: Optional[int] = None,
        max_batch_bytes: Optional[int] = None,
        pool_factor: Optional[int] = None,
        default_nprobe: Optional[int] = None,
        min_train_tokens: Optional[int] = None,
        drift: Optional[float] = None,
        expected_tokens: Optional[int] = None,
    ) -> Dict[str, Union[int, float]]:
        """Changes the tunable settings given (the others are fixed at
        creation and refused); returns every setting as it now is."""
    def stats(self) -> Dict[str, Any]: ...
    def __len__(self) -> int: ...
    def ranking(self) -> Dict[str, Any]: ...
    def set_ranking(
        self,
        rank: str,
        *,
        norm: Optional[str] = None,
        weights: Optional[Dict[str, float]] = None,
        candidates: Optional[int] = None,
    ) -> None: ...
    def default_candidates(self, k: int) -> int:
        """The candidates a two-stage search for `k` results hands to the exact
        MaxSim when `candidates` is not given: max(256, 8·k, 2.5·√documents),
        with 6·k instead of 8·k for token centroids."""
        ...

class Database:
    """A Tessera database folder, opened in this process."""

    def __init__(
        self, path: Union[str, os.PathLike[str]], *, read_only: bool = False, seal_idle_ms: Optional[int] = None
    ) -> None:
        """Opens (creating if needed) the database in `path`; with `read_only=True`,
        opens an existing one beside the process that may hold it to write (a
        server), changing no file; writes raise UnavailableError.
        `seal_idle_ms`: seal a collection's memtable in the background once
        no write came for that long (default 5000; 0: only when full or
        flushed)."""
        ...
    @property
    def path(self) -> str: ...
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
        model: Optional[Union[str, "os.PathLike[str]"]] = None,
        settings: Optional[Dict[str, Union[int, float]]] = None,
    ) -> Collection: ...
    def collection(self, name: str) -> Collection: ...
    def open_or_create_collection(
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
        model: Optional[Union[str, "os.PathLike[str]"]] = None,
        settings: Optional[Dict[str, Union[int, float]]] = None,
    ) -> Collection: ...
    def list_collections(self) -> List[str]: ...
    def drop_collection(self, name: str) -> None: ...
    def backup(self, out: Union[str, os.PathLike]) -> Dict[str, Any]: ...
    def reindex(
        self,
        name: str,
        model: Union[str, os.PathLike],
        *,
        progress: Optional[Callable[[int, int], Any]] = None,
    ) -> Dict[str, Any]:
        """Re-encodes every document of collection `name` with the model in the
        folder `model` into a new version, swapped in when complete (the
        collection keeps serving meanwhile); returns `model`, `documents`,
        `caught_up`, `truncated`, `seconds`. An exception raised by
        `progress(done, total)` stops it before the swap and is raised."""
    def close(self) -> None: ...
    def __enter__(self) -> "Database": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...

def restore(source: Union[str, os.PathLike], db: Union[str, os.PathLike]) -> Dict[str, Any]: ...

def set_build_threads(n: int) -> None:
    """Threads of this process's background seals and merges (default: half
    the cores). Only before the first background seal; 0 is refused."""
    ...
