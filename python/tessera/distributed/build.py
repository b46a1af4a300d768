"""Bulk build: a sharded collection made from a Ray Dataset, each shard
built by one task and installed in its replicas."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import ray

from ..errors import InvalidInputError, TesseraError, UnavailableError
from ._replica import _archive, _DOWN, _ERROR, _LAYOUT, _log, _OK, _outcome, shard_of
from .sharded import ShardedCollection


_COLUMNS = ("id", "tokens", "text", "payload")


@ray.remote(max_restarts=0)
class _Builder:
    """Builds one shard's database from the batches Ray Data sends it, in a
    scratch folder; `finish` seals it and hands it over as a `snapshot`."""

    def __init__(self, path: str, name: str, dim: int, options: Dict[str, Any]):
        import tessera

        self._path = Path(path)
        shutil.rmtree(self._path, ignore_errors=True)
        self._error: Optional[BaseException] = None
        try:
            self._db = tessera.Database(str(self._path))
            self._col = self._db.create_collection(name, dim, **options)
        except Exception as e:
            self._error = e

    def ready(self) -> None:
        if self._error is not None:
            raise self._error

    def add(self, ids, tokens, texts, payloads) -> int:
        self._col.upsert(ids, tokens, texts=texts, payloads=payloads)
        return len(ids)

    def finish(self) -> bytes:
        """Seals what it holds into segments; returns the database as an
        archive for `_Replica.install`, and removes the scratch folder."""
        self._col.flush()
        archive = _archive(self._db, self._path.parent)
        self._db.close()
        shutil.rmtree(self._path, ignore_errors=True)
        return archive


def _route(batch: Dict[str, Any], builders: List[Any], shards: int) -> Dict[str, Any]:
    """A Ray Data batch split by shard and sent to the shards' builders (from
    the worker that holds it, not through the driver). A Tessera error comes
    back as data, ``"Class\\0message"`` (exception causes do not survive Ray
    Data's wrapping), for `build` to raise as it is."""
    try:
        # Checked here, batch by batch: asking the dataset for its schema
        # first could run the whole pipeline once more.
        columns = list(batch)
        missing = [c for c in ("id", "tokens") if c not in columns]
        unknown = [c for c in columns if c not in _COLUMNS]
        if missing or unknown:
            raise InvalidInputError(
                f"the dataset has columns {columns}: it needs 'id' and 'tokens' and may have 'text' and 'payload'"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {unknown})" if unknown else "")
            )
        ids = list(batch["id"])
        for i in ids:
            if not isinstance(i, str):
                raise InvalidInputError(f"the dataset's ids must be str, not {type(i).__name__} ({i!r})")
        ids = [str(i) for i in ids]  # numpy.str_ as str
        texts = batch.get("text")
        payloads = batch.get("payload")
        by_shard: Dict[int, List[int]] = {}
        for i, doc_id in enumerate(ids):
            by_shard.setdefault(shard_of(doc_id, shards), []).append(i)
        refs = [
            builders[s].add.remote(
                [ids[i] for i in rows],
                [batch["tokens"][i] for i in rows],
                None if texts is None else [None if texts[i] is None else str(texts[i]) for i in rows],
                None if payloads is None else [payloads[i] for i in rows],
            )
            for s, rows in by_shard.items()
        ]
        for ref in refs:
            kind, got = _outcome(ref)
            if kind == _ERROR:
                raise got
            if kind == _DOWN:
                raise UnavailableError(f"a shard builder failed ({got})")
    except TesseraError as e:
        kind = next(c for c in type(e).__mro__ if c.__module__ == TesseraError.__module__)
        return {"documents": [0], "error": [f"{kind.__name__}\0{e}"]}
    return {"documents": [len(ids)], "error": [""]}


def _raise_first(errors: List[str]) -> None:
    """Raises the first error `_route` reported, as its Tessera class."""
    from .. import errors as module

    for e in errors:
        if e:
            name, message = e.split("\0", 1)
            raise getattr(module, name, TesseraError)(message)


def build(
    dataset: Any,
    name: str,
    dim: int,
    *,
    shards: int = 1,
    replicas: int = 1,
    root: "str | os.PathLike[str]",
    batch_size: int = 256,
    write_quorum: Optional[int] = None,
    **options: Any,
) -> ShardedCollection:
    """Builds a new sharded collection from a Ray Dataset and returns it, in
    service.

    ``dataset`` has an ``id`` (str) and a ``tokens`` column (a ``[n, dim]``
    array per row), and optionally ``text`` and ``payload`` (a dict); ids are
    expected to be unique (of an id given twice, one version is kept). Ray
    Data streams its batches, ``batch_size`` rows each, from the workers that
    read them straight to one builder actor per shard; the shards are built in
    parallel, each into segments in a scratch folder, then attached to every
    replica of the shard in one step (the copy a replica catching up gets).
    ``root`` must not hold a sharded collection yet; on failure nothing is
    left there. The other arguments are those of
    :meth:`ShardedCollection.create`."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InvalidInputError(f"batch_size must be an integer ≥ 1, not {batch_size!r}")
    root = Path(root).resolve()
    if (root / _LAYOUT).exists():
        raise InvalidInputError(f"{root} holds a sharded collection already: build makes a new one (add to it with upsert)")
    made_root = not root.exists()
    if not made_root and any(root.iterdir()):
        raise InvalidInputError(f"{root} is not empty: build makes a new sharded collection in a new or empty folder")
    clock = time.monotonic()
    phases: Dict[str, float] = {}

    def phase(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        phases[name] = round(now - clock, 3)
        clock = now

    col: Optional[ShardedCollection] = None
    builders: List[Any] = []
    done: List[Dict[str, Any]] = []
    try:
        col = ShardedCollection.create(
            name, dim, shards=shards, replicas=replicas, root=root, write_quorum=write_quorum, **options
        )
        builders = [
            _Builder.options(num_cpus=0, scheduling_strategy="SPREAD").remote(
                str(root / f"shard-{s}" / ".build"), name, dim, options
            )
            for s in range(shards)
        ]
        for b in builders:
            kind, got = _outcome(b.ready.remote())
            if kind != _OK:
                raise got if kind == _ERROR else UnavailableError(f"a builder did not start ({got})")
        phase("start")
        done = dataset.map_batches(
            _route, fn_kwargs={"builders": builders, "shards": shards}, batch_format="numpy", batch_size=batch_size
        ).take_all()
        _raise_first([row["error"] for row in done])
        phase("stream")
        archives = [b.finish.remote() for b in builders]
        ray.wait(archives, num_returns=len(archives))
        phase("seal")
        for s in range(shards):
            with col._locks[s]:
                # The archive's object reference goes to every replica: Ray
                # ships it to each replica's node once.
                refs = [a.install.remote(archives[s], True) for a in col._actors[s]]
                for kind, got in (_outcome(ref) for ref in refs):
                    if kind == _ERROR:
                        raise got
                    if kind == _DOWN:
                        raise UnavailableError(f"a replica of shard {s} failed while the build was attached ({got})")
        phase("attach")
    except BaseException:
        if col is not None:
            col.close()
        if made_root:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for child in root.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        raise
    finally:
        for b in builders:
            ray.kill(b, no_restart=True)
    col.build_seconds = phases
    _log.info("built %s: %d documents in %s (seconds)", name, sum(int(r["documents"]) for r in done), phases)
    return col
