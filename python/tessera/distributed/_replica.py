"""A shard replica (one Ray actor owning an embedded database) and what
the sharded collection and the bulk build share: the layout file, the
shard of an id, installing a copy."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, Dict, Optional, Tuple


try:
    import ray
except ImportError as e:  # pragma: no cover - exercised only without ray
    raise ImportError(
        "tessera.distributed needs Ray: pip install './python[ray]' (or pip install ray)"
    ) from e


_LAYOUT = "layout.json"
_log = logging.getLogger("tessera.distributed")


def shard_of(doc_id: str, shards: int) -> int:
    """The shard an id lives in: CRC-32 of its UTF-8 bytes modulo ``shards``
    (stable across processes and machines, unlike Python's ``hash``)."""
    return zlib.crc32(doc_id.encode("utf-8")) % shards


class _NotInService(Exception):
    """Raised by a replica asked to serve before it was admitted (it was just
    restarted, or is catching up)."""


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover_install(path: Path) -> None:
    """Cleans up after an `install` that stopped part-way. Its `.resync`
    marker stays, so the replica is copied again before it serves."""
    if not _sibling(path, ".resync").exists():
        return
    if not path.exists() and _sibling(path, ".old").exists():
        os.replace(_sibling(path, ".old"), path)
    for suffix in (".incoming", ".new", ".old"):
        shutil.rmtree(_sibling(path, suffix), ignore_errors=True)


def _archive(db: Any, scratch: Path) -> bytes:
    """A consistent copy of ``db`` (``Database.backup``: taken between write
    batches, checksums verified) as a tar archive for `_Replica.install`;
    the backup is made in a temporary folder under ``scratch`` (same file
    system: its files are hard links)."""
    with tempfile.TemporaryDirectory(prefix=".snapshot-", dir=scratch) as tmp:
        out = Path(tmp) / "backup"
        db.backup(str(out))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(out, arcname="backup")
        return buf.getvalue()


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class _Replica:
    """One replica of one shard: an embedded database in ``path``. It serves
    reads and writes only once the coordinator has admitted it."""

    def __init__(self, path: str, name: str, dim: int, options: Dict[str, Any]):
        self._path, self._name, self._dim, self._options = Path(path), name, dim, options
        self._db = self._col = None
        self._admitted = False
        # An error opening (a bad option, a corrupt database) is kept for
        # `ready` to raise as it is, rather than killing the actor.
        self._error: Optional[BaseException] = None
        try:
            _recover_install(self._path)
            self._open()
        except Exception as e:
            self._error = e

    def _open(self) -> None:
        import tessera

        self._db = tessera.Database(str(self._path))
        self._col = self._db.open_or_create_collection(self._name, self._dim, **self._options)

    def _serving(self):
        if not self._admitted:
            raise _NotInService(f"replica {self._path} is not in service (restarted or catching up)")
        return self._col

    def ready(self) -> None:
        if self._error is not None:
            raise self._error

    def status(self) -> Dict[str, Any]:
        """Its write sequence number (-1 when its database is not open),
        whether a copy into it is unfinished, whether it serves, and its size."""
        return {
            "seq": -1 if self._col is None else self._col.last_seq(),
            "resync": _sibling(self._path, ".resync").exists(),
            "in_service": self._admitted,
            "documents": None if self._col is None else len(self._col),
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }

    def admit(self) -> None:
        self.ready()
        self._admitted = True

    def snapshot(self) -> bytes:
        """A consistent copy of its database (``Database.backup``: taken
        between write batches, checksums verified), as a tar archive."""
        self._serving()
        return _archive(self._db, self._path.parent)

    def install(self, archive: bytes, admit: bool) -> int:
        """Replaces its database with a `snapshot` of another replica (or a
        build): verified and restored beside it, then swapped in by renames.
        A `.resync` marker held through the swap makes a crash part-way leave
        a replica that is copied again. With ``admit`` it serves once done
        (in the same call: no check in between sees it out of service).
        Returns the new sequence number."""
        import tessera

        self._admitted = False
        marker = _sibling(self._path, ".resync")
        marker.touch()
        _fsync_dir(self._path.parent)
        if self._db is not None:
            self._db.close()
            self._db = self._col = None
        incoming, new, old = (_sibling(self._path, s) for s in (".incoming", ".new", ".old"))
        for p in (incoming, new, old):
            shutil.rmtree(p, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(incoming, filter="data")
            else:  # pragma: no cover - Pythons before the extraction filters
                tar.extractall(incoming)
        tessera.restore(str(incoming / "backup"), str(new))
        shutil.rmtree(incoming)
        if self._path.exists():
            os.replace(self._path, old)
        os.replace(new, self._path)
        _fsync_dir(self._path.parent)
        shutil.rmtree(old, ignore_errors=True)
        self._open()
        self._error = None
        marker.unlink()
        _fsync_dir(self._path.parent)
        self._admitted = admit
        return self._col.last_seq()

    def upsert(self, ids, tokens, texts, payloads, pool_factor=None) -> Tuple[int, int]:
        col = self._serving()
        return col.upsert(ids, tokens, texts=texts, payloads=payloads, pool_factor=pool_factor), col.last_seq()

    def delete(self, ids) -> Tuple[int, int]:
        col = self._serving()
        return col.delete(ids), col.last_seq()

    def destroy(self) -> None:
        """Closes its database and removes its folder (the collection is dropped)."""
        self.close()
        self._db = self._col = None
        for suffix in ("", ".resync", ".incoming", ".new", ".old"):
            p = _sibling(self._path, suffix)
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    def reset(self) -> None:
        """Starts over with an empty database (a new collection)."""
        self.destroy()
        self._error = None
        self._open()

    def get(self, ids, tokens: bool):
        return [
            None if d is None else (d.id, d.n_tokens, d.tokens, d.text, d.payload)
            for d in self._serving().get(ids, tokens=tokens)
        ]

    def search(self, query, k: int, opts: Dict[str, Any]):
        return [_hit_tuple(h) for h in self._serving().search(query, k, **opts)]

    def search_batch(self, queries, k: int, opts: Dict[str, Any]):
        return [[_hit_tuple(h) for h in hits] for hits in self._serving().search_batch(queries, k, **opts)]

    def rerank(self, query, ids):
        r = self._serving().rerank(query, ids)
        return [_hit_tuple(h) for h in r.hits], list(r.missing)

    def stats(self) -> Dict[str, Any]:
        return self._serving().stats()

    def count(self) -> int:
        return len(self._serving())

    def flush(self) -> None:
        self._serving().flush()

    def compact(self) -> None:
        self._serving().compact()

    def update_settings(self, settings: Dict[str, Any]) -> Dict[str, Any]:
        return self._serving().update_settings(**settings)

    def close(self) -> None:
        self._admitted = False
        if self._db is not None:
            self._db.close()


def _hit_tuple(h: Any) -> tuple:
    """A hit as a replica sends it: (id, score, text, payload, the text
    source's BM25 score or None)."""
    bm25 = next((src["score"] for src in (h.sources or []) if src["source"] == "text"), None)
    return (h.id, h.score, h.text, h.payload, bm25)


# What a call on a replica came to.
_OK, _DOWN, _ERROR = "ok", "down", "error"
_REFUSED = "not in service"


def _outcome(ref: Any, timeout: Optional[float] = None) -> Tuple[str, Any]:
    """``(_OK, value)``; ``(_DOWN, why)`` when the replica is dead, restarting,
    unreachable or not in service; ``(_ERROR, exception)`` for an engine error."""
    try:
        return _OK, ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as e:
        cause = e.as_instanceof_cause()
        if isinstance(cause, _NotInService):
            return _DOWN, _REFUSED
        return _ERROR, cause
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
        # The actor died, is restarting or unreachable, or the call's result
        # was lost (object lost, owner died, out of memory): down.
        return _DOWN, type(e).__name__
