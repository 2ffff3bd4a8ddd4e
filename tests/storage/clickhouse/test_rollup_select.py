"""Every repair that computes rollup rows from spans outside the minute view (a move's
partials, remap's rebuild of a day, the bins' back-fill, the view-gap top-up at every grain)
runs the view's own SELECT (`rollup_select.py`): given the same spans, each gives the rows the
engine's views wrote, key for key and partial for partial.

The same 303 demo spans (every seventh a twin set aside, counted by no figure) are written
under three orgs: `VIEWED` as every write does, its rollup rows the reference; `BARE` with the
minute view detached (no rollup row at any grain: the top-up and a day's rebuild have all to
make); `BINLESS` the same, then given `VIEWED`'s minute rows without their bins (the back-fill's
case). Inserts only: no mutation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from observatory_core.storage.clickhouse import layout, rebuild, rewrite_spans, view_gaps
from observatory_core.storage.clickhouse.wrapper_move_spans import _moved_rows
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import demo_rows
from tests.storage.clickhouse.test_view_gaps import _views_failing

VIEWED, BARE, BINLESS = 71, 72, 73
GRAINS = tuple(layout.GRAIN_SECONDS)


def _rows(org: int) -> list[dict]:
    rows = [dict(r, org_id=org) for r in demo_rows(300, seed=81)]
    for i in range(3, len(rows), 7):
        twin = rows[i - 1]
        rows[i] = dict(rows[i], duplicate_of=twin["span_id"], duplicate_trace_id=twin["trace_id"])
    return rows


@pytest.fixture(scope="module")
def store(chdb_store):
    viewed = _rows(VIEWED)
    assert write_spans(chdb_store, viewed) == len(viewed)
    for org in (BARE, BINLESS):
        with _views_failing(chdb_store, ("rollup_1min_mv",)):
            assert write_spans(chdb_store, _rows(org)) == len(viewed)
    names = _key_names() + [p.column.name for p in layout.rollup_partials()]
    chdb_store.client.command(
        f"INSERT INTO {chdb_store.table('rollup_1min')} ({', '.join(names)}) "
        f"SELECT * REPLACE ({BINLESS} AS org_id, map() AS {layout.BINS_COLUMN}) "
        f"FROM (SELECT {', '.join(names)} FROM {chdb_store.table('rollup_1min')} "
        f"WHERE org_id = {VIEWED})"
    )
    return chdb_store


def _key_names() -> list[str]:
    """A rollup row's key columns, the same at every grain (the bucket's width is its value's)."""
    return ["org_id", "bucket_start", *(c.name for c, _ in layout.rollup_keys())]


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _by_key(rows: list[dict], columns: list[str]) -> dict[tuple, dict]:
    """Rows by their key (the org left out), with `columns`; one row per key."""
    keys = _key_names()[1:]
    out: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(_utc(row[k]) for k in keys)
        assert key not in out, key
        out[key] = {c: row[c] for c in columns}
    return out


def _viewed(store, grain: str, columns: list[str] | None = None) -> dict[tuple, dict]:
    """What the engine's views wrote for `VIEWED` at `grain`, each key's rows merged."""
    partials = layout.rollup_partials()
    chosen = [p for p in partials if columns is None or p.column.name in columns]
    merged = ", ".join(f"{layout.merged(p.column)} AS {p.column.name}" for p in chosen)
    keys = ", ".join(_key_names())
    result = store.client.query(
        f"SELECT {keys}, {merged} FROM {store.table('rollup_' + grain)} AS rows "
        f"WHERE org_id = {VIEWED} GROUP BY {keys}"
    )
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    return _by_key(rows, [p.column.name for p in chosen])


def _same(got: dict[tuple, dict], want: dict[tuple, dict]) -> None:
    assert want and got.keys() == want.keys()
    for key, row in want.items():
        for name, value in row.items():
            if isinstance(value, float):
                assert got[key][name] == pytest.approx(value, rel=1e-9, abs=1e-9), (key, name)
            else:
                assert got[key][name] == value, (key, name)


def _query(store, statement: str, params: dict) -> list[dict]:
    result = store.client.query(statement, parameters=params, settings={"max_query_size": 1 << 20})
    return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


def _partial_names() -> list[str]:
    return [p.column.name for p in layout.rollup_partials()]


def _starts(store, org: int) -> list[tuple[int, datetime]]:
    rows = store.client.query(
        f"SELECT project_id, start_time FROM {store.table('spans')} WHERE org_id = {org}"
    ).result_rows
    return [(p, _utc(s)) for p, s in rows]


def test_a_moves_partials_are_the_views_rows(store):
    """`wrapper_move_spans._moved_rows`: the minute partials of the spans it is given (here
    all of `BARE`'s, as they are and as they are to be)."""
    source = f"(SELECT * FROM {store.table('spans')} WHERE org_id = %(org)s)"
    rows, again = _moved_rows(store, (source, source), {"org": BARE}, {})
    assert rows == again
    _same(_by_key(rows, _partial_names()), _viewed(store, "1min"))


def test_remaps_rebuild_of_a_day_is_the_views_rows(store):
    """`rewrite_spans._days_statement`: the minute rows of the org's (project, day)s."""
    days = sorted({(p, date(s.year, s.month, s.day)) for p, s in _starts(store, BARE)})
    statement = rewrite_spans._days_statement(store).split("\n", 1)[1]  # its SELECT
    rows = _query(store, statement, rewrite_spans._days_params(BARE, days))
    _same(_by_key(rows, _partial_names()), _viewed(store, "1min"))


@pytest.mark.parametrize("grain", GRAINS)
def test_the_view_gap_top_up_is_the_views_rows(store, grain):
    """`view_gaps._rollup_statement`: with no row of the org's at any grain, what it inserts
    is every key's row, as the views (the minute's, and the hour's and day's folding it)
    wrote them."""
    seconds = layout.GRAIN_SECONDS[grain]
    starts = [s for _, s in _starts(store, BARE)]
    params = {
        "org": BARE,
        "lo": layout.micro_text(min(starts).replace(hour=0, minute=0, second=0, microsecond=0)),
        "hi": layout.micro_text(max(starts).replace(hour=23, minute=59, second=59)),
        "buckets": sorted({int(s.timestamp()) // seconds * seconds for s in starts}),
    }
    statement = view_gaps._rollup_statement(store, grain).split("\n", 1)[1]  # its SELECT
    result = store.client.query(statement, parameters=params, settings={"max_query_size": 1 << 20})
    names = _key_names() + _partial_names()  # its columns, in the INSERT's order
    rows = [dict(zip(names, r, strict=True)) for r in result.result_rows]
    _same(_by_key(rows, _partial_names()), _viewed(store, grain))


def test_the_bins_back_fill_is_the_views_bins(store):
    """`rebuild._statement`: each of `BINLESS`'s minute rows (the view's counts, no bins)
    given the bins of its spans, as the view made them."""
    starts = [s for _, s in _starts(store, BINLESS)]
    first = min(starts).replace(hour=0, minute=0, second=0, microsecond=0)
    last = max(starts).replace(hour=23, minute=59, second=59)
    params = {"org": BINLESS, "start": first, "end": last}
    statement = rebuild._statement(store).split("\n", 1)[1]  # its SELECT
    result = store.client.query(statement, parameters=params)
    names = [*_key_names(), layout.BINS_COLUMN]  # its columns, in the INSERT's order
    rows = [dict(zip(names, r, strict=True)) for r in result.result_rows]
    want = _viewed(store, "1min", [layout.BINS_COLUMN])
    _same(_by_key(rows, [layout.BINS_COLUMN]), {k: v for k, v in want.items() if any(v.values())})
