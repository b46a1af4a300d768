"""The refusal table (tests/refusals/search_options.json) through the
embedded engine and tessera.Client against a real server: every row gets the
same outcome through both, the same hits when answered, and when refused an
InvalidInputError with the message the table gives (the server's own words:
crates/tessera-server/tests/refusals.rs checks HTTP and gRPC with the same
table). Also: the options are the engine's, unknown ones raise TypeError."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tessera
from conftest import REPO

DIM = 4
TABLE = json.loads((REPO / "tests" / "refusals" / "search_options.json").read_text())["rows"]


def fill(col, rng) -> None:
    tokens = [rng.standard_normal((3, DIM)).astype(np.float32) for _ in range(20)]
    col.upsert(
        [f"d{i}" for i in range(20)],
        tokens,
        texts=[f"apple pie {i}" for i in range(20)],
        payloads=[{"n": i % 3} for i in range(20)],
    )
    col.flush()


def outcome(col, query, options):
    try:
        return "ok", [(h.id, h.score) for h in col.search(query, k=3, **options)]
    except tessera.InvalidInputError as e:
        return "refused", str(e)


def test_every_row_of_the_refusal_table_gets_one_answer_embedded_and_remote(server, tmp_path, rng):
    remote = tessera.Client(server.url).create_collection("c", DIM)
    with tessera.Database(tmp_path / "embedded") as db:
        local = db.create_collection("c", DIM)
        state = rng.bit_generator.state
        fill(remote, rng)
        rng.bit_generator.state = state
        fill(local, rng)
        query = rng.standard_normal((2, DIM)).astype(np.float32)
        assert len(TABLE) >= 20
        for row in TABLE:
            q = query if row["tokens"] else None
            (lk, lv), (rk, rv) = outcome(local, q, row["options"]), outcome(remote, q, row["options"])
            if row["refused"] is None:
                assert (lk, rk) == ("ok", "ok"), (row, lv, rv)
                assert lv == rv, row
            else:
                assert (lk, rk) == ("refused", "refused"), (row, lv, rv)
                assert row["refused"] in lv and row["refused"] in rv, (row, lv, rv)


def test_search_options_are_the_engines(db, rng):
    col = db.create_collection("c", DIM)
    fill(col, rng)
    q = rng.standard_normal((2, DIM)).astype(np.float32)
    assert set(tessera.SEARCH_OPTIONS) >= {"k", "candidates", "nprobe", "filter", "rank_weights", "include_text"}
    with pytest.raises(TypeError, match="unexpected keyword argument 'candidatess'"):
        col.search(q, k=3, candidatess=5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        col.search_batch([q], k=3, nope=1)
    # A negative k is the engine's invalid input, not an OverflowError.
    with pytest.raises(tessera.InvalidInputError, match="non-negative integer"):
        col.search(q, k=-1)
    hits = col.search(q, k=3, include_text=False, include_payload=False)
    assert [h.id for h in hits] == [h.id for h in col.search(q, k=3)]
    assert all(h.text is None and h.payload is None for h in hits)
    assert all(h.text is not None and h.payload is not None for h in col.search(q, k=3))


def test_option_values_are_read_as_the_wire_reads_them(db, rng):
    col = db.create_collection("c", DIM)
    fill(col, rng)
    q = rng.standard_normal((2, DIM)).astype(np.float32)
    base = [h.id for h in col.search(q, k=3)]
    # numpy integers are integers; None leaves an option at its default.
    assert [h.id for h in col.search(q, k=np.int64(3), candidates=np.int32(20), weights=None, rank=None)] == base
    # Booleans are booleans, not truthiness; a bad value names its option.
    for bad in (dict(exact="false"), dict(exact=1), dict(include_text="no")):
        with pytest.raises(tessera.InvalidInputError, match=f"{next(iter(bad))}: invalid type"):
            col.search(q, k=3, **bad)
    with pytest.raises(tessera.InvalidInputError, match="candidates: invalid value"):
        col.search(q, k=3, candidates=-5)
    # A filter given as text is a filter: "null" is not one.
    with pytest.raises(tessera.InvalidInputError, match="invalid argument: filter"):
        col.search(q, k=3, filter="null")
    with pytest.raises(tessera.InvalidInputError, match="invalid argument: filter: not JSON"):
        col.search(q, k=3, filter="{not json")
