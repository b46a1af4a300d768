"""`ShardedCollection`: shards × replicas of Ray actors behind one
collection's calls."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .._tessera import Document, Hit, Reranked
from ..client import _array, _check_document, _check_id, _column, _ids
from ..errors import InvalidInputError, UnavailableError
from ._replica import _DOWN, _ERROR, _LAYOUT, _log, _OK, _outcome, _REFUSED, _Replica, shard_of


class ShardedCollection:
    """A collection split over ``shards`` shards of ``replicas`` replicas each,
    with the embedded :class:`tessera.Collection` API for writes and searches.
    Make one with :meth:`create`. One ``ShardedCollection`` object
    coordinates the writes (it orders them per shard); it is thread-safe."""

    def __init__(
        self,
        name: str,
        dim: int,
        shards: int,
        replicas: int,
        write_quorum: int,
        root: Path,
        actors: List[List[Any]],
        groups: List[Any],
        repair_interval: float,
    ):
        self.name, self.dim, self.shards, self.replicas, self.root = name, dim, shards, replicas, root
        self.write_quorum = write_quorum
        self._actors, self._groups = actors, groups
        # A shard's writes are sent under its lock, so every replica applies
        # them in one order; admitting a repaired replica holds it too.
        self._locks = [threading.Lock() for _ in range(shards)]
        self._mutex = threading.Lock()  # guards the three sets below
        self._out: List[set] = [set() for _ in range(shards)]  # replicas not in service
        self._dirty: List[set] = [set() for _ in range(shards)]  # failed a write: copy, whatever their seq
        # The highest sequence number of a write acknowledged, per shard: a
        # replica below it is never the only one in service.
        self._acked: List[int] = [0] * shards
        self._turn = itertools.count()
        self._repair_interval = repair_interval
        self._write_timeout = 60.0
        self._wake, self._stop = threading.Event(), threading.Event()
        self._repairer: Optional[threading.Thread] = None
        # Set by `build`: seconds spent starting, streaming, sealing, attaching.
        self.build_seconds: Optional[Dict[str, float]] = None

    @classmethod
    def create(
        cls,
        name: str,
        dim: int,
        *,
        shards: int = 1,
        replicas: int = 1,
        root: "str | os.PathLike[str]",
        write_quorum: Optional[int] = None,
        repair_interval: float = 0.5,
        write_timeout: float = 60.0,
        **options: Any,
    ) -> "ShardedCollection":
        """Starts the ``shards × replicas`` actors, each on its database under
        ``root`` (created, or reopened with its data: the WAL is replayed).
        The replicas of a shard are placed on different nodes where the
        cluster has enough (a ``STRICT_SPREAD`` placement group per shard;
        ``SPREAD`` on fewer nodes). A write returns once ``write_quorum``
        replicas of each shard it touches acknowledged (default: all).
        ``options`` are those of ``Database.create_collection`` (index, text,
        durability, storage, screening, keep). Reopening checks that the name, dim,
        shard and replica counts are those ``root`` was made with, and
        brings replicas that missed writes up to date before returning.
        ``write_timeout``: seconds a write waits for the replicas' answers
        (one that does not answer goes out of service); ``repair_interval``:
        seconds between the repair thread's rounds (its health check runs
        every ten)."""
        for what, v in (("shards", shards), ("replicas", replicas)):
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise InvalidInputError(f"{what} must be an integer ≥ 1, not {v!r}")
        if write_quorum is None:
            write_quorum = replicas
        if not (isinstance(write_quorum, int) and 1 <= write_quorum <= replicas):
            raise InvalidInputError(f"write_quorum must be an integer in 1..={replicas} (replicas), not {write_quorum!r}")
        for what, v in (("repair_interval", repair_interval), ("write_timeout", write_timeout)):
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
                raise InvalidInputError(f"{what} must be a positive number of seconds, not {v!r}")
        if not ray.is_initialized():
            raise UnavailableError("Ray is not initialised: call ray.init() (or connect to a cluster) first")
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        layout = {"name": name, "dim": dim, "shards": shards, "replicas": replicas}
        path = root / _LAYOUT
        fresh = not path.exists()
        if not fresh:
            found = json.loads(path.read_text())
            if found != layout:
                raise InvalidInputError(f"{root} holds a sharded collection made as {found}, not {layout}")
        groups = _placement_groups(shards, replicas)
        actors = [
            [
                _Replica.options(
                    scheduling_strategy=PlacementGroupSchedulingStrategy(groups[s], placement_group_bundle_index=r)
                ).remote(str(root / f"shard-{s}" / f"replica-{r}"), name, dim, options)
                for r in range(replicas)
            ]
            for s in range(shards)
        ]
        col = cls(name, dim, shards, replicas, write_quorum, root, actors, groups, float(repair_interval))
        col._write_timeout = float(write_timeout)
        try:
            # Opening errors (a bad option, a corrupt database) surface here, as they are.
            for s, row in enumerate(actors):
                for r, a in enumerate(row):
                    # A new collection: what an earlier one under this root
                    # left on a replica's node (dropped from another) is not
                    # its data. (Not a constructor argument: Ray runs the
                    # constructor again when it restarts the actor.)
                    kind, got = _outcome(a.reset.remote() if fresh else a.ready.remote())
                    if kind == _ERROR:
                        raise got
                    if kind == _DOWN:
                        raise UnavailableError(f"replica {r} of shard {s} did not start ({got})")
            for s in range(shards):
                col._admit_at_open(s)
            if fresh:
                # Written once every replica opened: a create that failed
                # leaves no layout, and the next one starts fresh again.
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(layout))
                os.replace(tmp, path)
        except BaseException:
            col.close()
            raise
        col._repairer = threading.Thread(target=col._repair_loop, name=f"tessera-repair-{name}", daemon=True)
        col._repairer.start()
        return col

    # ------------------------------------------------------------ replicas

    def _in_service(self, shard: int) -> List[int]:
        with self._mutex:
            return [r for r in range(self.replicas) if r not in self._out[shard]]

    def _take_out(self, shard: int, replica: int, dirty: bool = False) -> None:
        with self._mutex:
            self._out[shard].add(replica)
            if dirty:
                self._dirty[shard].add(replica)
        self._wake.set()

    def _admit_at_open(self, shard: int) -> None:
        """At `create`: the replica with the highest write sequence number
        (a finished copy) is in service; the others with that number too,
        and those behind are copied from it first."""
        row = self._actors[shard]
        status = [ray.get(a.status.remote()) for a in row]
        finished = [r for r in range(self.replicas) if not status[r]["resync"]] or list(range(self.replicas))
        source = max(finished, key=lambda r: status[r]["seq"])
        ray.get(row[source].admit.remote())
        with self._mutex:
            self._out[shard] = set(range(self.replicas)) - {source}
            self._acked[shard] = status[source]["seq"]
        for r in range(self.replicas):
            if r != source:
                self._repair(shard, r, status[r], wait=True)

    def _repair(self, shard: int, replica: int, status: Optional[Dict[str, Any]] = None, wait: bool = False) -> bool:
        """Brings an out-of-service replica back: copies the shard from a
        replica in service unless it missed nothing (same sequence number,
        no failed write, no unfinished copy). The copy is made while writes go
        on; only the final check that nothing came in meanwhile, and the
        admission, hold the shard's lock (after three copies overtaken by
        writes, the last is made under it). Returns whether it is back."""
        actor = self._actors[shard][replica]
        if status is None:
            # Not while it is restarting: a probe that answers quickly first.
            kind, status = _outcome(actor.status.remote(), timeout=None if wait else 2.0)
            if kind != _OK:
                return False
        for attempt in range(4):
            locked = attempt == 3
            if locked:
                self._locks[shard].acquire()
            try:
                with self._mutex:
                    if replica not in self._out[shard]:
                        return True
                    dirty = replica in self._dirty[shard]
                sources = self._in_service(shard)
                if not sources:
                    if locked:
                        return self._elect(shard)
                    with self._locks[shard]:
                        return self._elect(shard)
                source = self._actors[shard][sources[0]]
                kind, status = _outcome(actor.status.remote(), timeout=60.0)
                src_kind, src = _outcome(source.status.remote(), timeout=60.0)
                if src_kind == _DOWN and src != "GetTimeoutError":
                    self._take_out(shard, sources[0])
                if kind != _OK or src_kind != _OK:
                    return False
                if dirty or status["resync"] or status["seq"] != src["seq"]:
                    started = time.monotonic()
                    # The archive goes from the source to this replica through
                    # the object store, not through the coordinator.
                    kind, seq = _outcome(actor.install.remote(source.snapshot.remote(), False))
                    if kind != _OK:
                        _log.warning("copying shard %d into replica %d failed: %s", shard, replica, seq)
                        return False
                    with self._mutex:
                        self._dirty[shard].discard(replica)
                    _log.info("replica %d of shard %d caught up by a copy (seq %d) in %.2f s",
                              replica, shard, seq, time.monotonic() - started)  # fmt: skip
                if not locked:
                    self._locks[shard].acquire()
                    locked = True
                # Writes are sent under this lock, and these calls run after
                # every write sent before: admit only if the copy is current.
                kind, status = _outcome(actor.status.remote(), timeout=60.0)
                src_kind, src = _outcome(source.status.remote(), timeout=60.0)
                if kind != _OK or src_kind != _OK:
                    return False
                if status["seq"] != src["seq"] or status["resync"]:
                    continue  # overtaken by writes: copy again
                if _outcome(actor.admit.remote())[0] != _OK:
                    return False
                with self._mutex:
                    self._out[shard].discard(replica)
                    self._dirty[shard].discard(replica)
                return True
            finally:
                if locked:
                    self._locks[shard].release()
        return False

    def _elect(self, shard: int) -> bool:
        """No replica of ``shard`` is in service: the reachable replica with
        the highest sequence number (and no unfinished copy) comes back first,
        if it holds every write acknowledged (the others are then copied
        from it). Holds the shard's lock."""
        reachable = {}
        for r, a in enumerate(self._actors[shard]):
            kind, st = _outcome(a.status.remote(), timeout=2.0)
            if kind == _OK and not st["resync"] and st["seq"] >= 0:
                reachable[r] = st["seq"]
        if not reachable:
            return False
        best = max(reachable, key=reachable.get)
        with self._mutex:
            acked = self._acked[shard]
        if reachable[best] < acked:
            # A replica holding acknowledged writes is still away: wait for it.
            _log.warning(
                "shard %d: the replicas that answer have seq ≤ %d, below the acknowledged %d; waiting",
                shard, reachable[best], acked,
            )
            return False
        if _outcome(self._actors[shard][best].admit.remote())[0] != _OK:
            return False
        with self._mutex:
            self._out[shard].discard(best)
            self._dirty[shard].discard(best)
        self._wake.set()
        return True

    def _repair_loop(self) -> None:
        checked = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self._repair_interval)
            self._wake.clear()
            try:
                if time.monotonic() - checked > 10 * self._repair_interval:
                    # A replica restarted while idle is noticed here, not only
                    # when a call reaches it.
                    self._check_health()
                    checked = time.monotonic()
                for shard in range(self.shards):
                    with self._mutex:
                        out = sorted(self._out[shard])
                    for replica in out:
                        if self._stop.is_set():
                            return
                        try:
                            self._repair(shard, replica)
                        except Exception:  # keep repairing the others; logged
                            _log.exception("repairing replica %d of shard %d", replica, shard)
            except Exception:  # the thread must not die: logged, tried again
                _log.exception("checking the replicas of %s", self.name)

    def _check_health(self) -> None:
        """Takes out of service the replicas that do not answer or no longer
        serve (restarted by Ray)."""
        refs = [(s, r, self._actors[s][r].status.remote()) for s in range(self.shards) for r in self._in_service(s)]
        if not refs:
            return
        ray.wait([ref for _, _, ref in refs], num_returns=len(refs), timeout=10.0)
        for s, r, ref in refs:
            kind, st = _outcome(ref, timeout=0)
            # A replica busy past the wait (a long search) is not taken out.
            if (kind == _DOWN and st != "GetTimeoutError") or (kind == _OK and not st["in_service"]):
                self._take_out(s, r)

    def status(self) -> List[List[Dict[str, Any]]]:
        """Per shard, per replica: ``in_service``, ``seq`` (its last write
        batch), ``documents``, ``node`` (a Ray node id), ``pid`` — or
        ``{"reachable": False}`` for a replica that does not answer."""
        out = []
        for s, row in enumerate(self._actors):
            refs = [a.status.remote() for a in row]
            got = []
            for r, ref in enumerate(refs):
                kind, st = _outcome(ref, timeout=10.0)
                if kind != _OK:
                    got.append({"reachable": False, "in_service": False})
                    continue
                with self._mutex:
                    st["in_service"] = st["in_service"] and r not in self._out[s]
                got.append(st)
            out.append(got)
        return out

    def wait_in_service(self, timeout: float = 60.0) -> None:
        """Waits until every replica is in service (caught up), or raises
        UnavailableError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._mutex:
                out = [(s, sorted(o)) for s, o in enumerate(self._out) if o]
            if not out:
                return
            if time.monotonic() > deadline:
                raise UnavailableError(f"replicas still out of service after {timeout} s (shard, replicas): {out}")
            self._wake.set()
            time.sleep(0.05)

    # ------------------------------------------------------------ writes

    def _split(self, ids: Sequence[str]) -> Dict[int, List[int]]:
        by_shard: Dict[int, List[int]] = {}
        for i, doc_id in enumerate(ids):
            if not isinstance(doc_id, str):
                raise InvalidInputError(f"ids[{i}] must be a str, not {type(doc_id).__name__}")
            by_shard.setdefault(shard_of(doc_id, self.shards), []).append(i)
        return by_shard

    def _write(self, method: str, parts: Dict[int, tuple]) -> int:
        """Sends each shard's part to its replicas in service, in one order
        per shard; returns the sum of the shards' answers once every shard
        has ``write_quorum`` acknowledgements. Replicas that failed it, or
        did not answer within ``write_timeout``, go out of service (copied
        before they serve again)."""
        shards = sorted(parts)
        for s in shards:  # in a fixed order: no deadlock between writers
            self._locks[s].acquire()
        try:
            live = {s: self._in_service(s) for s in shards}
            short = [s for s in shards if len(live[s]) < self.write_quorum]
            if short:
                self._wake.set()
                raise UnavailableError(
                    f"shard {short[0]} has {len(live[short[0]])} of {self.replicas} replicas in service, "
                    f"fewer than the write quorum {self.write_quorum}; nothing was written, the call may be retried"
                )
            # Ray runs an actor's calls from one caller in the order sent, so
            # sending under the shard's lock gives every replica one order.
            # (A copy for a replica catching up is taken by a call sent
            # later, so it holds every write sent before it.)
            refs = {s: {r: getattr(self._actors[s][r], method).remote(*parts[s]) for r in live[s]} for s in shards}
        finally:
            for s in shards:
                self._locks[s].release()
        everything = [ref for row in refs.values() for ref in row.values()]
        ray.wait(everything, num_returns=len(everything), timeout=self._write_timeout)
        outcomes = {s: {r: _outcome(ref, timeout=0) for r, ref in row.items()} for s, row in refs.items()}
        total, failure = 0, None
        for s in shards:
            acks = [v for kind, v in outcomes[s].values() if kind == _OK]
            refused = [v for kind, v in outcomes[s].values() if kind == _ERROR and isinstance(v, InvalidInputError)]
            for r, (kind, why) in outcomes[s].items():
                if kind == _OK or (kind == _ERROR and isinstance(why, InvalidInputError)):
                    continue
                # Not in service: it refused, intact. Dead, late or failed
                # (an I/O error poisons its collection): it may hold the
                # write or not, and is copied before it serves again.
                self._take_out(s, r, dirty=kind == _ERROR or why != _REFUSED)
            if acks:
                with self._mutex:
                    self._acked[s] = max(self._acked[s], max(seq for _, seq in acks))
            if failure is not None:
                continue
            if not acks and refused:
                # The engine refused it alike in every replica (its checks):
                # nothing was written in this shard.
                failure = refused[0]
            elif len(acks) < self.write_quorum:
                errors = [v for kind, v in outcomes[s].values() if kind == _ERROR]
                failure = errors[0] if errors and not acks else UnavailableError(
                    f"shard {s}: {len(acks)} of {self.replicas} replicas acknowledged, fewer than the write "
                    f"quorum {self.write_quorum}; the call may be retried"
                )
            else:
                total += acks[0][0]
        if failure is not None:
            raise failure
        return total

    def upsert(
        self,
        ids: Sequence[str],
        tokens: Sequence[Any],
        texts: Optional[Sequence[Optional[str]]] = None,
        payloads: Optional[Sequence[Any]] = None,
        *,
        pool_factor: Optional[int] = None,
    ) -> int:
        """As ``Collection.upsert`` (a list of ``[n_i, dim]`` arrays); returns
        once ``write_quorum`` replicas of every shard touched have it. The
        batch is checked whole first (ids, dimension, values, texts, payloads
        as JSON), so a bad document refuses all of it; only a payload beyond
        the engine's bounds (65,536 JSON values) is refused in its shard alone,
        and the other shards' parts are then applied."""
        ids = _ids(ids)
        tokens = _column(tokens, "tokens", len(ids)) or []
        texts = _column(texts, "texts", len(ids))
        payloads = _column(payloads, "payloads", len(ids))
        seen: Dict[str, int] = {}
        for i, id_ in enumerate(ids):
            where = _check_document(
                i, id_, _array(tokens[i], f"tokens[{i}]"), None if texts is None else texts[i], self.dim, seen
            )
            if payloads is not None and payloads[i] is not None:
                try:
                    json.dumps(payloads[i], allow_nan=False)
                except (TypeError, ValueError) as e:
                    raise InvalidInputError(f"{where}payload is not JSON: {e}") from None
        parts = {
            s: (
                [ids[i] for i in rows],
                [tokens[i] for i in rows],
                None if texts is None else [texts[i] for i in rows],
                None if payloads is None else [payloads[i] for i in rows],
                pool_factor,
            )
            for s, rows in self._split(ids).items()
        }
        return self._write("upsert", parts)

    def delete(self, ids: Sequence[str]) -> int:
        """Deletes by id in every shard; returns how many existed. Checked
        whole first (ids, duplicates), as ``upsert`` is."""
        ids = _ids(ids)
        seen: Dict[str, int] = {}
        for i, id_ in enumerate(ids):
            _check_id(i, id_, seen, "ids")
        return self._write("delete", {s: ([ids[i] for i in rows],) for s, rows in self._split(ids).items()})

    def _everywhere(self, method: str, *args: Any) -> None:
        """Runs ``method`` on every replica in service; one that fails goes
        out of service (and is repaired); an engine error is raised."""
        refs = [(s, r, getattr(self._actors[s][r], method).remote(*args)) for s in range(self.shards) for r in self._in_service(s)]
        for s, r, ref in refs:
            kind, got = _outcome(ref)
            if kind == _ERROR:
                raise got
            if kind == _DOWN:
                self._take_out(s, r)

    def flush(self) -> None:
        self._everywhere("flush")

    def compact(self) -> None:
        self._everywhere("compact")

    def update_settings(self, **settings: Any) -> Dict[str, Any]:
        """As ``Collection.update_settings``, on every replica in service."""
        self._everywhere("update_settings", settings)
        return dict(self.stats()["settings"])

    # ------------------------------------------------------------ reads

    def _order(self, shard: int) -> List[int]:
        """The replicas in service of ``shard``, starting from the next in turn
        (reads are spread over them)."""
        live = self._in_service(shard)
        if not live:
            self._wake.set()
            raise UnavailableError(f"no replica of shard {shard} is in service; the call may be retried")
        start = next(self._turn) % len(live)
        return live[start:] + live[:start]

    def _read(self, shard: int, call: Callable[[Any], Any], first: Optional[Tuple[int, Any]] = None) -> Any:
        """``call(actor)`` on a replica in service of ``shard``, failing over
        to the others; ``first`` is a call already started on one."""
        order = self._order(shard)
        if first is not None:
            order = [first[0]] + [r for r in order if r != first[0]]
        for i, r in enumerate(order):
            ref = first[1] if (i == 0 and first is not None) else call(self._actors[shard][r])
            kind, got = _outcome(ref)
            if kind == _OK:
                return got
            if kind == _ERROR:
                raise got
            self._take_out(shard, r)
        raise UnavailableError(f"no replica of shard {shard} answers; the call may be retried")

    def _fan_out(self, call: Callable[[Any], Any]) -> List[Any]:
        """``call`` on one replica of every shard at once, with fail-over."""
        started = []
        for s in range(self.shards):
            r = self._order(s)[0]
            started.append((r, call(self._actors[s][r])))
        return [self._read(s, call, first) for s, first in enumerate(started)]

    def get(self, ids: Sequence[str], tokens: bool = False) -> List[Optional[Document]]:
        """As ``Collection.get``: aligned with ``ids``."""
        ids = list(ids)
        out: List[Optional[Document]] = [None] * len(ids)
        for s, rows in self._split(ids).items():
            got = self._read(s, lambda a, rows=rows: a.get.remote([ids[i] for i in rows], tokens))
            for i, d in zip(rows, got):
                out[i] = None if d is None else Document(d[0], d[1], d[2], d[3], d[4])
        return out

    @staticmethod
    def _merge_plan(has_tokens: bool, opts: Dict[str, Any]) -> Optional[Tuple[float, float]]:
        """How shard answers merge. With query tokens the final score is
        MaxSim (None: merge by score, exactly). Without, only a BM25 query
        merges: by BM25 score, the fused score recomputed over the merged
        order; returns its RRF ``(weight, k0)``. Anything else is refused."""
        if opts.get("rank") == "linear":
            raise InvalidInputError(
                "rank='linear' is not supported on a sharded collection: its scores are normalised over each "
                "shard's candidates and would not compare across shards"
            )
        if has_tokens:
            return None
        if not opts.get("text") or opts.get("ids") or opts.get("fusion") not in (None, "rrf"):
            raise InvalidInputError(
                "without query tokens a sharded collection answers BM25 queries (text=) with RRF fusion only: "
                "fused scores of other sources are ranks within a shard and do not compare across shards"
            )
        weights = opts.get("weights") or {}
        try:
            return float(weights.get("text", 1.0)), float(opts.get("rrf_k0", 60.0))
        except (AttributeError, TypeError, ValueError):
            raise InvalidInputError("weights must map sources to numbers, and rrf_k0 be a number") from None

    @staticmethod
    def _merge(per_shard: List[List[tuple]], k: int, plan: Optional[Tuple[float, float]] = None) -> List[Hit]:
        if plan is None:
            hits = sorted((h for shard in per_shard for h in shard), key=lambda h: (-h[1], h[0]))[:k]
            return [Hit(i, score, text, payload) for i, score, text, payload, _ in hits]
        weight, k0 = plan
        hits = sorted((h for shard in per_shard for h in shard), key=lambda h: (-h[4], h[0]))[:k]
        out = []
        for rank, (i, _, text, payload, bm25) in enumerate(hits, 1):
            fused = weight / (k0 + rank)  # as the engine computes it: f64, the score its f32
            source = [{"source": "text", "rank": rank, "score": bm25}]
            out.append(Hit(i, float(np.float32(fused)), text, payload, fused, source, []))
        return out

    def search(self, query: Any = None, k: int = 10, **opts: Any) -> List[Hit]:
        """As ``Collection.search``: each shard's top ``k``, merged. With
        query tokens the order is MaxSim: exact searches equal one
        collection's, and two-stage searches give each shard ``candidates``
        (default: the engine's). A BM25 query without tokens merges by BM25
        score (each shard's statistics: docs/DISTRIBUTED.md)."""
        plan = self._merge_plan(query is not None, opts)
        return self._merge(self._fan_out(lambda a: a.search.remote(query, k, opts)), k, plan)

    def search_batch(self, queries: Sequence[Any], k: int = 10, **opts: Any) -> List[List[Hit]]:
        """As ``Collection.search_batch``: one list of hits per query."""
        plan = self._merge_plan(True, opts)
        queries = list(queries)
        per_shard = self._fan_out(lambda a: a.search_batch.remote(queries, k, opts))
        return [self._merge([shard[q] for shard in per_shard], k, plan) for q in range(len(queries))]

    def rerank(self, query: Any, ids: Sequence[str]) -> Reranked:
        """As ``Collection.rerank``: exact MaxSim of ``query`` against the
        documents ``ids`` (each scored in its shard), best first, and the ids
        that are not live documents (in the order given)."""
        ids = list(dict.fromkeys(_ids(ids)))
        hits, missing = [], set()
        for s, rows in self._split(ids).items():
            got, miss = self._read(s, lambda a, rows=rows: a.rerank.remote(query, [ids[i] for i in rows]))
            hits.append(got)
            missing.update(miss)
        return Reranked(self._merge(hits, len(ids)), [i for i in ids if i in missing])

    def stats(self) -> Dict[str, Any]:
        """As ``Collection.stats``, over the shards (one replica each): counts
        and sizes summed, per-token sizes averaged over the tokens, build
        times summed; ``shards``, ``replicas`` and ``write_quorum`` added."""
        per_shard = self._fan_out(lambda a: a.stats.remote())
        out = dict(per_shard[0])
        tokens = sum(st["tokens"] for st in per_shard)
        for key in ("documents", "tokens", "segments", "memtable_documents", "deleted_in_segments", "bytes_on_disk"):
            out[key] = sum(st[key] for st in per_shard)
        for key in ("segment_bytes_per_token", "index_bytes_per_token"):
            out[key] = sum(st[key] * st["tokens"] for st in per_shard) / tokens if tokens else 0.0
        out["build"] = {k: sum(st["build"][k] for st in per_shard) for k in per_shard[0]["build"]}
        out["segment_sizes"] = [seg for st in per_shard for seg in st.get("segment_sizes", [])]
        errors = [st["last_flush_error"] for st in per_shard if "last_flush_error" in st]
        if errors:
            out["last_flush_error"] = errors[0]
        out.update(shards=self.shards, replicas=self.replicas, write_quorum=self.write_quorum)
        return out

    def __len__(self) -> int:
        return sum(self._fan_out(lambda a: a.count.remote()))

    def _stop_repairs(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._repairer is not None and self._repairer is not threading.current_thread():
            self._repairer.join()

    def close(self) -> None:
        """Stops the repair thread, closes every replica's database and stops
        the actors (the data stays under ``root``; ``create`` with the same
        arguments reopens it)."""
        self._stop_repairs()
        for row in self._actors:
            for a in row:
                _outcome(a.close.remote(), timeout=60.0)
                ray.kill(a, no_restart=True)
        self._actors = [[] for _ in self._actors]
        for g in self._groups:
            remove_placement_group(g)
        self._groups = []

    def drop(self) -> None:
        """Deletes the collection: every replica's folder, on whichever node
        it is, and ``root``'s layout; then stops the actors."""
        self._stop_repairs()
        for s, row in enumerate(self._actors):
            for r, a in enumerate(row):
                kind, why = _outcome(a.destroy.remote(), timeout=120.0)
                if kind != _OK:
                    raise UnavailableError(f"replica {r} of shard {s} could not remove its data ({why}); drop again")
        (self.root / _LAYOUT).unlink(missing_ok=True)
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "ShardedCollection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ShardedCollection({self.name!r}, dim={self.dim}, shards={self.shards}, replicas={self.replicas}, "
            f"write_quorum={self.write_quorum})"
        )


def _placement_groups(shards: int, replicas: int) -> List[Any]:
    """One placement group per shard with a bundle per replica: on distinct
    nodes (``STRICT_SPREAD``) when the cluster has as many alive nodes,
    otherwise spread as far as it goes (``SPREAD``). A bundle reserves a
    token CPU share (Ray refuses empty bundles); the actors ask for none."""
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    strategy = "STRICT_SPREAD" if replicas > 1 and nodes >= replicas else "SPREAD"
    groups = [placement_group([{"CPU": 0.001}] * replicas, strategy=strategy) for _ in range(shards)]
    try:
        ray.get([g.ready() for g in groups], timeout=120)
    except ray.exceptions.GetTimeoutError:
        for g in groups:
            remove_placement_group(g)
        raise UnavailableError(
            f"the cluster could not place {shards} × {replicas} replicas ({strategy}) within 120 s"
        ) from None
    return groups
