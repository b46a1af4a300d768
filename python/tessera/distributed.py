"""Sharded, replicated collections on Ray.

A :class:`ShardedCollection` is ``shards × replicas`` Ray actors, each owning
an embedded Tessera database (``tessera.Database``) in its own folder under
``root``. An id always lives in one shard, chosen by a stable hash of the id
(CRC-32 modulo the shard count), so an upsert replaces and a delete removes
across the whole collection. Every replica of a shard holds the same
documents:

- **Writes** are split by shard and sent to every replica of each shard
  touched; the call returns once all of them acknowledged (each after its
  WAL append, fsynced with ``durability="sync"``). If a replica fails, the
  call raises :class:`tessera.UnavailableError` (retryable: the write is
  idempotent).
- **Searches** go to one live replica per shard (the next replica when one
  is unreachable). Each shard answers its top ``k`` with exact MaxSim
  scores, which are comparable across shards, so the merged top ``k`` is
  exact: an exact search over the sharded collection answers what one
  collection holding every document answers.

Needs Ray (``pip install './python[ray]'``). Status and design:
docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ._tessera import Document, Hit
from .errors import InvalidInputError, UnavailableError

try:
    import ray
except ImportError as e:  # pragma: no cover - exercised only without ray
    raise ImportError(
        "tessera.distributed needs Ray: pip install './python[ray]' (or pip install ray)"
    ) from e

__all__ = ["ShardedCollection", "shard_of"]

_LAYOUT = "layout.json"


def shard_of(doc_id: str, shards: int) -> int:
    """The shard an id lives in: CRC-32 of its UTF-8 bytes modulo ``shards``
    (stable across processes and machines, unlike Python's ``hash``)."""
    return zlib.crc32(doc_id.encode("utf-8")) % shards


@ray.remote(num_cpus=0, max_restarts=0)
class _Replica:
    """One replica of one shard: an embedded database in ``path``."""

    def __init__(self, path: str, name: str, dim: int, options: Dict[str, Any]):
        import tessera

        # An error opening (a bad option, a corrupt database) is kept for
        # `ready` to raise as it is, rather than killing the actor.
        self._error: Optional[BaseException] = None
        try:
            self._db = tessera.Database(path)
            self._col = self._db.open_or_create_collection(name, dim, **options)
        except Exception as e:
            self._error = e

    def ready(self) -> None:
        if self._error is not None:
            raise self._error

    def upsert(self, ids, tokens, texts, payloads) -> int:
        return self._col.upsert(ids, tokens, texts=texts, payloads=payloads)

    def delete(self, ids) -> int:
        return self._col.delete(ids)

    def get(self, ids, tokens: bool):
        return [
            None if d is None else (d.id, d.n_tokens, d.tokens, d.text, d.payload)
            for d in self._col.get(ids, tokens=tokens)
        ]

    def search(self, query, k: int, opts: Dict[str, Any]):
        return [(h.id, h.score, h.text, h.payload) for h in self._col.search(query, k, **opts)]

    def search_batch(self, queries, k: int, opts: Dict[str, Any]):
        return [
            [(h.id, h.score, h.text, h.payload) for h in hits]
            for hits in self._col.search_batch(queries, k, **opts)
        ]

    def count(self) -> int:
        return len(self._col)

    def flush(self) -> None:
        self._col.flush()

    def compact(self) -> None:
        self._col.compact()

    def close(self) -> None:
        self._db.close()


def _read_from(actors: List[Any], shard: int, call):
    """Runs ``call(actor)`` on the first of ``actors`` (replicas of ``shard``) that answers."""
    last = None
    for actor in actors:
        try:
            return ray.get(call(actor))
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        except ray.exceptions.RayActorError as e:
            last = type(e).__name__
    raise UnavailableError(f"no replica of shard {shard} answers (last: {last})")


# Search options whose final score is not a per-document MaxSim (a fused or
# normalised score depends on the other candidates of the shard): refused,
# as merged results would not be comparable across shards.
_NOT_MERGEABLE = {"rank": {"linear"}}


class ShardedCollection:
    """A collection split over ``shards`` shards of ``replicas`` replicas each,
    with the embedded :class:`tessera.Collection` API for writes and searches."""

    def __init__(self, name: str, dim: int, shards: int, replicas: int, root: Path, actors: List[List[Any]]):
        self.name, self.dim, self.shards, self.replicas, self.root = name, dim, shards, replicas, root
        self._actors = actors

    @classmethod
    def create(
        cls,
        name: str,
        dim: int,
        *,
        shards: int = 1,
        replicas: int = 1,
        root: "str | os.PathLike[str]",
        **options: Any,
    ) -> "ShardedCollection":
        """Starts the ``shards × replicas`` actors, each on its database under
        ``root`` (created, or reopened with its data: the WAL is replayed).
        Replicas are spread over the cluster's nodes where it has several.
        ``options`` are those of ``Database.create_collection`` (index, text,
        durability, storage, screening). Reopening checks that the name, dim,
        shard and replica counts are those ``root`` was made with."""
        if not (isinstance(shards, int) and shards >= 1 and isinstance(replicas, int) and replicas >= 1):
            raise InvalidInputError(f"shards and replicas must be integers ≥ 1, not {shards!r} and {replicas!r}")
        if not ray.is_initialized():
            raise UnavailableError("Ray is not initialised: call ray.init() (or connect to a cluster) first")
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        layout = {"name": name, "dim": dim, "shards": shards, "replicas": replicas}
        path = root / _LAYOUT
        if path.exists():
            found = json.loads(path.read_text())
            if found != layout:
                raise InvalidInputError(f"{root} holds a sharded collection made as {found}, not {layout}")
        else:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(layout))
            os.replace(tmp, path)
        actors = [
            [
                _Replica.options(scheduling_strategy="SPREAD").remote(
                    str(root / f"shard-{s}" / f"replica-{r}"), name, dim, options
                )
                for r in range(replicas)
            ]
            for s in range(shards)
        ]
        col = cls(name, dim, shards, replicas, root, actors)
        try:
            # Opening errors (a bad option, a corrupt database) surface here, as they are.
            col._all([[a.ready.remote() for a in replicas_of] for replicas_of in actors])
        except BaseException:
            col.close()
            raise
        return col

    # ------------------------------------------------------------ plumbing

    def _all(self, refs: List[List[Any]]) -> List[List[Any]]:
        """Waits for every call; raises the first engine error as it is, and a
        replica that died as UnavailableError (retryable)."""
        out = []
        for shard, row in enumerate(refs):
            got = []
            for replica, ref in enumerate(row):
                try:
                    got.append(ray.get(ref))
                except ray.exceptions.RayTaskError as e:
                    raise e.as_instanceof_cause() from None
                except ray.exceptions.RayActorError as e:
                    raise UnavailableError(
                        f"replica {replica} of shard {shard} is unavailable ({type(e).__name__}); the call may be retried"
                    ) from None
            out.append(got)
        return out

    def _read(self, shard: int, call):
        """Runs ``call(actor)`` on the first replica of ``shard`` that answers."""
        return _read_from(self._actors[shard], shard, call)

    def _split(self, ids: Sequence[str]) -> Dict[int, List[int]]:
        by_shard: Dict[int, List[int]] = {}
        for i, doc_id in enumerate(ids):
            if not isinstance(doc_id, str):
                raise InvalidInputError(f"ids[{i}] must be a str, not {type(doc_id).__name__}")
            by_shard.setdefault(shard_of(doc_id, self.shards), []).append(i)
        return by_shard

    # ------------------------------------------------------------ writes

    def upsert(
        self,
        ids: Sequence[str],
        tokens: Sequence[Any],
        texts: Optional[Sequence[Optional[str]]] = None,
        payloads: Optional[Sequence[Any]] = None,
    ) -> int:
        """As ``Collection.upsert`` (a list of ``[n_i, dim]`` arrays); returns
        once every replica of every shard touched has it."""
        ids = list(ids)
        tokens = list(tokens)
        for name, column in (("tokens", tokens), ("texts", texts), ("payloads", payloads)):
            if column is not None and len(column) != len(ids):
                raise InvalidInputError(f"{name} has {len(column)} entries for {len(ids)} ids")
        refs = []
        for s, rows in sorted(self._split(ids).items()):
            part = (
                [ids[i] for i in rows],
                [tokens[i] for i in rows],
                None if texts is None else [texts[i] for i in rows],
                None if payloads is None else [payloads[i] for i in rows],
            )
            refs.append([a.upsert.remote(*part) for a in self._actors[s]])
        return sum(row[0] for row in self._all(refs))

    def delete(self, ids: Sequence[str]) -> int:
        """Deletes by id on every replica; returns how many existed."""
        ids = list(ids)
        refs = [
            [a.delete.remote([ids[i] for i in rows]) for a in self._actors[s]]
            for s, rows in sorted(self._split(ids).items())
        ]
        return sum(row[0] for row in self._all(refs))

    def flush(self) -> None:
        self._all([[a.flush.remote() for a in row] for row in self._actors])

    def compact(self) -> None:
        self._all([[a.compact.remote() for a in row] for row in self._actors])

    # ------------------------------------------------------------ reads

    def get(self, ids: Sequence[str], tokens: bool = False) -> List[Optional[Document]]:
        """As ``Collection.get``: aligned with ``ids``."""
        ids = list(ids)
        out: List[Optional[Document]] = [None] * len(ids)
        for s, rows in self._split(ids).items():
            got = self._read(s, lambda a, rows=rows: a.get.remote([ids[i] for i in rows], tokens))
            for i, d in zip(rows, got):
                out[i] = None if d is None else Document(d[0], d[1], d[2], d[3], d[4])
        return out

    def _check_mergeable(self, opts: Dict[str, Any]) -> None:
        for key, refused in _NOT_MERGEABLE.items():
            if opts.get(key) in refused:
                raise InvalidInputError(
                    f"{key}={opts[key]!r} is not supported on a sharded collection: its scores are normalised "
                    "over each shard's candidates and would not compare across shards"
                )

    @staticmethod
    def _merge(per_shard: List[List[tuple]], k: int) -> List[Hit]:
        hits = sorted((h for shard in per_shard for h in shard), key=lambda h: (-h[1], h[0]))[:k]
        return [Hit(i, score, text, payload) for i, score, text, payload in hits]

    def search(self, query: Any, k: int = 10, **opts: Any) -> List[Hit]:
        """As ``Collection.search``: each shard's top ``k`` by MaxSim, merged.
        Exact searches equal one collection's; two-stage searches give each
        shard ``candidates`` (default: the engine's)."""
        self._check_mergeable(opts)
        refs = [self._submit(s, "search", query, k, opts) for s in range(self.shards)]
        return self._merge([self._collect(s, r, "search", query, k, opts) for s, r in enumerate(refs)], k)

    def search_batch(self, queries: Sequence[Any], k: int = 10, **opts: Any) -> List[List[Hit]]:
        """As ``Collection.search_batch``: one list of hits per query."""
        self._check_mergeable(opts)
        queries = list(queries)
        refs = [self._submit(s, "search_batch", queries, k, opts) for s in range(self.shards)]
        per_shard = [self._collect(s, r, "search_batch", queries, k, opts) for s, r in enumerate(refs)]
        return [self._merge([shard[q] for shard in per_shard], k) for q in range(len(queries))]

    def _submit(self, shard: int, method: str, query: Any, k: int, opts: Dict[str, Any]):
        """Starts a read on the first replica of ``shard`` (fan-out: every
        shard at once); `_collect` fails over to the others."""
        return getattr(self._actors[shard][0], method).remote(query, k, opts)

    def _collect(self, shard: int, ref: Any, method: str, query: Any, k: int, opts: Dict[str, Any]):
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        except ray.exceptions.RayActorError:
            replicas = self._actors[shard][1:]
            if not replicas:
                raise UnavailableError(f"the only replica of shard {shard} is unavailable") from None
            return _read_from(replicas, shard, lambda a: getattr(a, method).remote(query, k, opts))

    def __len__(self) -> int:
        return sum(self._read(s, lambda a: a.count.remote()) for s in range(self.shards))

    def close(self) -> None:
        """Closes every replica's database and stops the actors (the data
        stays under ``root``; ``create`` with the same arguments reopens it)."""
        for row in self._actors:
            for a in row:
                try:
                    ray.get(a.close.remote())
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError):
                    pass
                ray.kill(a)
        self._actors = [[] for _ in self._actors]

    def __enter__(self) -> "ShardedCollection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedCollection({self.name!r}, dim={self.dim}, shards={self.shards}, replicas={self.replicas})"
