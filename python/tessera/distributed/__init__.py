"""Sharded, replicated collections on Ray.

A :class:`ShardedCollection` is ``shards × replicas`` Ray actors, each owning
an embedded Tessera database (``tessera.Database``) in its own folder under
``root``. An id always lives in one shard, chosen by a stable hash of the id
(CRC-32 modulo the shard count), so an upsert replaces and a delete removes
across the whole collection. Every replica of a shard holds the same
documents:

- **Writes** are split by shard and sent to every replica in service of each
  shard touched; the call returns once ``write_quorum`` of them (all, by
  default) acknowledged, each after its WAL append (fsynced with
  ``durability="sync"``). Otherwise it raises
  :class:`tessera.UnavailableError` (retryable: writes are idempotent).
- **Searches** go to one replica in service per shard (the next one when it
  fails). Each shard answers its top ``k`` with exact MaxSim scores, which
  are comparable across shards, so the merged top ``k`` is exact: an exact
  search over the sharded collection answers what one collection holding
  every document answers.
- **Faults.** Ray restarts a replica whose actor dies; it reopens its
  database (WAL replay) but serves nothing until it caught up: a background
  thread copies the shard from a replica in service (a consistent backup
  shipped through Ray's object store) unless their write sequence numbers
  show it missed nothing, then puts it back in service.

Needs Ray (``pip install './python[ray]'``). Design: docs/DISTRIBUTED.md.
"""

from ._replica import shard_of
from .build import build
from .sharded import ShardedCollection

__all__ = ["ShardedCollection", "build", "shard_of"]
