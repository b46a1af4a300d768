"""Helpers shared by the embedded engine and the client: model output as
token arrays, and long ingests in batches with a progress bar."""

from __future__ import annotations

import sys
from typing import Any, List, Optional, Sequence

import numpy as np

from .errors import InvalidInputError


def _json_default(o: Any) -> Any:
    """``json.dumps``' hook for numpy values in payloads: a numpy scalar as
    its Python value, an array as a list; anything else is not JSON."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _id_list(ids: Any) -> Any:
    """A one-dimensional numpy array of ids as a list; anything else as it is."""
    if isinstance(ids, np.ndarray) and ids.ndim == 1:
        return ids.tolist()
    return ids


def _as_array(x: Any, i: int, dtype: Optional[np.dtype]) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor (any device, any float dtype)
        x = x.detach().cpu()
        if not x.is_floating_point():
            raise InvalidInputError(f"embeddings[{i}] is a {x.dtype} tensor; token embeddings are floats")
        x = x.float().numpy()
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise InvalidInputError(f"embeddings[{i}] has dtype {a.dtype}; token embeddings are floats")
    if a.ndim != 2:
        raise InvalidInputError(f"embeddings[{i}] must be 2-d [tokens, dim], got shape {a.shape}")
    if dtype is not None or a.dtype not in (np.float16, np.float32):
        a = a.astype(dtype or np.float32, copy=False)
    return np.ascontiguousarray(a)


def to_tokens(embeddings: Any, dtype: Any = None) -> List[np.ndarray]:
    """Token embeddings as a late-interaction model returns them, as the list
    of contiguous ``[n_i, dim]`` float arrays that ``upsert`` and
    ``search_batch`` take.

    ``embeddings`` may be what PyLate's ``model.encode(texts, is_query=...)``
    returns (a list of numpy arrays, or of torch tensors with
    ``convert_to_tensor=True``), a single ``[batch, tokens, dim]`` array or
    tensor (split along its first axis; padding rows are kept, so pass
    unpadded output), or one ``[tokens, dim]`` matrix (a list of one).
    Torch tensors may be on any device and of any float dtype (bfloat16
    included). ``dtype`` (float16 or float32) converts; by default float16
    and float32 are kept and other floats become float32. Integer input is
    refused rather than converted.
    """
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in (np.float16, np.float32):
            raise InvalidInputError(f"dtype must be float16 or float32, got {dtype}")
    ndim = getattr(embeddings, "ndim", None)
    if ndim == 2:
        embeddings = [embeddings]
    elif ndim == 3:
        embeddings = [embeddings[i] for i in range(embeddings.shape[0])]
    elif ndim is not None:
        raise InvalidInputError(f"embeddings must be 2-d, 3-d or a list of 2-d arrays, got {ndim}-d")
    return [_as_array(x, i, dtype) for i, x in enumerate(embeddings)]


def _progress_bar(progress: Optional[bool], total: int, desc: str):
    if progress is None:
        progress = sys.stderr.isatty()
        if not progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
    elif not progress:
        return None
    else:
        try:
            from tqdm.auto import tqdm
        except ImportError as e:
            raise ImportError("progress=True needs tqdm: pip install tqdm (or the package's [progress] extra)") from e
    return tqdm(total=total, desc=desc, unit="doc")


def ingest(
    collection: Any,
    ids: Sequence[str],
    tokens: Sequence[Any],
    texts: Optional[Sequence[Optional[str]]] = None,
    payloads: Optional[Sequence[Any]] = None,
    *,
    batch_size: int = 1024,
    progress: Optional[bool] = None,
) -> int:
    """Upserts many documents in batches of ``batch_size``, with a progress bar.

    Works on an embedded :class:`tessera.Collection` and on a client's
    :class:`tessera.RemoteCollection` alike. Each batch is atomic and durable
    when its ``upsert`` returns; if one fails, the error is raised with the
    documents before it already written (``e.written`` says how many), so a
    re-run after fixing the input is safe (upsert replaces). ``tokens`` is a
    list of ``[n_i, dim]`` arrays (see :func:`to_tokens`).

    ``progress``: None (default) shows a tqdm bar when stderr is a terminal
    and tqdm is installed; True requires tqdm; False never shows one.
    """
    n = len(ids)
    if len(tokens) != n:
        raise InvalidInputError(f"tokens has {len(tokens)} entries for {n} ids")
    for name, col in (("texts", texts), ("payloads", payloads)):
        if col is not None and len(col) != n:
            raise InvalidInputError(f"{name} has {len(col)} entries for {n} ids")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    bar = _progress_bar(progress, n, f"ingest {getattr(collection, 'name', '')}".strip())
    written = 0
    try:
        for start in range(0, n, batch_size):
            end = min(start + batch_size, n)
            try:
                collection.upsert(
                    list(ids[start:end]),
                    list(tokens[start:end]),
                    None if texts is None else list(texts[start:end]),
                    None if payloads is None else list(payloads[start:end]),
                )
            except Exception as e:
                e.written = written  # type: ignore[attr-defined]
                if hasattr(e, "add_note"):
                    e.add_note(f"batch of documents {start}..{end - 1}; the {written} before it were written")
                raise
            written = end
            if bar is not None:
                bar.update(end - start)
    finally:
        if bar is not None:
            bar.close()
    return written


