"""Writes: canonical span rows in, each span once, and the engine's rollups and trace totals
agree with polars on the raw rows (a span sent twice, or set aside as a twin, is not in them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.target import parse_target
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import demo_rows

ROWS = demo_rows(3000)
REPEATED = [dict(r, org_id=99) for r in demo_rows(60, seed=11)]  # an org of its own
TWINS = [dict(r, org_id=95, duplicate_of="0" * 16) for r in demo_rows(20, seed=12)]


def _moved(rows: list[dict], org_id: int, ago: timedelta) -> list[dict]:
    """The rows in another org, started `ago` before now (the TTL hook counts from now)."""
    shift = datetime.now(UTC) - ago - max(r["start_time"] for r in rows)
    return [
        dict(r, org_id=org_id, start_time=r["start_time"] + shift, end_time=r["end_time"] + shift)
        for r in rows
    ]


EXPIRED = _moved(demo_rows(30, seed=13), 97, timedelta(days=3))
KEPT = _moved(demo_rows(30, seed=14), 96, timedelta(days=3))


@pytest.fixture(scope="module")
def loaded(chdb_store):
    store = chdb_store
    counts = {
        "first": write_spans(store, ROWS, batch_size=1500),
        "again": write_spans(store, ROWS[:1500] + ROWS[2500:], batch_size=1000),
        "repeated": write_spans(store, REPEATED + REPEATED[::-1]),
        "twins": write_spans(store, TWINS),
        "retention": write_spans(
            store, EXPIRED + KEPT, retain_days={(97, 0): 1, (96, KEPT[0]["project_id"]): 30}
        ),
    }
    # the TTL runs when parts are written and merged; merge now rather than wait
    store.client.command(f"OPTIMIZE TABLE {store.table('spans')} FINAL")
    return store, counts


def _query(store, sql: str):
    return store.client.query(sql.format(db=store.database)).result_rows


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None)


def test_every_new_span_is_written_and_none_twice(loaded):
    store, counts = loaded
    assert counts["first"] == len(ROWS)
    assert counts["again"] == 0
    ((stored,),) = _query(store, "SELECT count() FROM {db}.spans WHERE org_id < 90")
    assert stored == len(ROWS)


def test_a_span_repeated_in_one_batch_is_written_once(loaded):
    store, counts = loaded
    assert counts["repeated"] == len(REPEATED)
    ((stored,),) = _query(store, "SELECT count() FROM {db}.spans WHERE org_id = 99")
    assert stored == len(REPEATED)


def test_rollups_count_each_span_once_by_hour_as_polars_does(loaded):
    store, _ = loaded
    got = _query(
        store,
        "SELECT org_id, bucket_start, sum(span_count), sum(error_count), sum(total_cost_sum), "
        "sum(duration_count), sum(total_tokens_sum), max(duration_max) "
        "FROM {db}.rollup_1hour WHERE org_id < 90 GROUP BY org_id, bucket_start "
        "ORDER BY org_id, bucket_start",
    )
    want = (
        _frame(ROWS)
        .group_by("org_id", pl.col("start_time").dt.truncate("1h").alias("bucket"))
        .agg(
            pl.len(),
            (pl.col("status") == "error").sum(),
            pl.col("total_cost_usd").sum(),
            pl.col("duration_ms").count().alias("durations"),
            pl.col("total_tokens").sum(),
            pl.col("duration_ms").max().alias("longest"),
        )
        .sort("org_id", "bucket")
    )
    assert len(got) == want.height
    for (org, bucket, n, errors, cost, durations, tokens, longest), expected in zip(
        got, want.iter_rows(), strict=True
    ):
        assert (org, bucket.replace(tzinfo=UTC), n, errors, durations, tokens) == (
            expected[0],
            expected[1],
            expected[2],
            expected[3],
            expected[5],
            expected[6],
        )
        assert cost == pytest.approx(expected[4], rel=1e-9, abs=1e-12)
        assert longest == pytest.approx(expected[7])


def test_the_day_rollup_holds_the_same_spans_and_its_bins_their_latency(loaded):
    from observatory_core.metrics.rollup_bins import merged_bins, percentiles_from_sketches
    from observatory_core.storage.latency_bins import RELATIVE_BOUND

    store, _ = loaded
    frame = _frame(ROWS)
    for grain in ("1min", "1day"):
        ((n,),) = _query(
            store, f"SELECT sum(span_count) FROM {{db}}.rollup_{grain} WHERE org_id < 90"
        )
        assert n == frame.height
    rows = _query(
        store,
        "SELECT org_id, mapKeys(sumMap(latency_bins)), mapValues(sumMap(latency_bins)) "
        "FROM {db}.rollup_1day WHERE org_id < 90 AND llm_call GROUP BY org_id ORDER BY org_id",
    )
    bins = pl.DataFrame(
        {"bins": [list(r[1]) for r in rows], "bin_counts": [list(r[2]) for r in rows]}
    )
    p95 = percentiles_from_sketches(merged_bins(bins), len(rows), 0.95)
    got = {r[0]: float(v) for r, v in zip(rows, p95, strict=True)}
    want = dict(
        frame.filter(pl.col("llm_call"))
        .group_by("org_id")
        .agg(pl.col("duration_ms").quantile(0.95, "linear"))
        .iter_rows()
    )
    assert got.keys() == want.keys()
    for org, value in want.items():
        assert abs(got[org] - value) <= RELATIVE_BOUND * value, (org, got[org], value)


def test_the_merged_bins_text_holds_each_groups_bins_and_counts(loaded):
    """`bin_map_pairs` as this store compiles it (one text per group, read in one buffer by
    `merged_bins`): every group's bins added up, a bin past 255, a count past 2**32 and a sum
    past 2**54 (each row's count below 2**53: the store packs a bin and its count, signed, in
    64 bits) whole, a count taken out by a row of its UInt64 complement (a wrapper's move,
    `wrapper_moves.py`), a group without bins empty, in the order the rows come."""
    from sqlalchemy import column, select, text

    from observatory_core.metrics.rollup_bins import BIN_PAIRS, merged_bins
    from observatory_core.storage.dialect import bin_map_pairs

    store, _ = loaded
    maps = {  # group -> its rows' maps, as `map(bin, count, ...)` arguments
        1: ["3, 2, 871, 1", "3, 5, 40, 4294967296", *["871, 9007199254740991"] * 3],
        2: [""],
        3: ["870, 7", "0, 1", "870, 18446744073709551614"],
    }
    source = " UNION ALL ".join(
        f"SELECT {g} AS g, CAST(map({m}), 'Map(UInt16, UInt64)') AS m"
        for g, ms in maps.items()
        for m in ms
    )
    u = text(source).columns(column("g"), column("m")).subquery("u")
    query = select(u.c.g, bin_map_pairs(u.c.m).label(BIN_PAIRS)).group_by(u.c.g).order_by(u.c.g)
    sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
    rows = store.client.query(sql).result_rows
    frame = pl.DataFrame({BIN_PAIRS: [r[1] for r in rows]})
    got = [tuple(map(int, x)) for x in zip(*merged_bins(frame), strict=True)]
    assert [r[0] for r in rows] == [1, 2, 3]
    assert got == [(0, 3, 7), (0, 40, 2**32), (0, 871, 3 * 2**53 - 2), (2, 0, 1), (2, 870, 5)]


@pytest.mark.parametrize("totals", [False, True])
def test_the_merged_bins_text_adds_any_groups_maps_as_python_does(loaded, totals):
    """`bin_map_pairs` over random groups of maps (none, one, many rows; one bin, many, bins 0
    and the last; counts of 0, 1 and just under 2**53 whose sums pass 2**54, and UInt64
    complements, a wrapper's move's negative counts, `wrapper_moves.py`): each group's bins
    those of every row, ascending, each with its counts' sum, as Python adds them; the same
    for totals (`sumMap`) as for series (packed pairs sorted)."""
    import random

    from sqlalchemy import column, select, text

    from observatory_core.metrics.rollup_bins import BIN_PAIRS, merged_bins
    from observatory_core.storage.dialect import bin_map_pairs
    from observatory_core.storage.latency_bins import BINS

    store, _ = loaded
    rng = random.Random(7)
    rows, want = [], {}
    for g in range(150):
        sums: dict[int, int] = {}
        for _ in range(rng.choice([1, 1, 2, 6, 25])):
            bins = rng.sample(range(BINS), rng.choice([0, 1, 3, 12]))
            bins += rng.sample([0, BINS - 1], rng.choice([0, 0, 1, 2]))
            counts = [
                rng.choice([0, 1, rng.randrange(2, 10**6), 2**53 - 1, 2**64 - rng.randrange(1, 99)])
                for _ in bins
            ]
            rows.append(f"({g}, {list(dict.fromkeys(bins))}, {counts[: len(set(bins))]})")
            for b, c in zip(dict.fromkeys(bins), counts, strict=False):
                sums[b] = (sums.get(b, 0) + c) % 2**64
        want[g] = sorted(sums.items())
    source = (
        "SELECT t.1 AS g, CAST(mapFromArrays(t.2, t.3), 'Map(UInt16, UInt64)') AS m "
        f"FROM (SELECT arrayJoin([{', '.join(rows)}]) AS t)"
    )
    u = text(source).columns(column("g"), column("m")).subquery("u")
    merged = bin_map_pairs(u.c.m, totals).label(BIN_PAIRS)
    query = select(u.c.g, merged).group_by(u.c.g).order_by(u.c.g)
    sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
    assert ("sumMap(" in sql) == totals
    got_rows = store.client.query(sql).result_rows
    assert [r[0] for r in got_rows] == sorted(want)
    frame = pl.DataFrame({BIN_PAIRS: [r[1] for r in got_rows]})
    row, bins, counts = merged_bins(frame)
    got = {g: [] for g in want}
    for r, b, c in zip(row.tolist(), bins.tolist(), counts.astype("uint64").tolist(), strict=True):
        got[got_rows[r][0]].append((b, c))
    assert got == want


def test_trace_totals_are_each_traces_spans(loaded):
    store, _ = loaded
    got = _query(
        store,
        "SELECT org_id, project_id, trace_id, sum(span_count), sum(error_count), "
        "sum(total_cost_usd), sum(total_tokens), min(first_start), max(last_end), "
        "max(root_span_id) FROM {db}.trace_totals WHERE org_id < 90 "
        "GROUP BY org_id, project_id, trace_id ORDER BY org_id, project_id, trace_id",
    )
    want = (
        _frame(ROWS)
        .group_by("org_id", "project_id", "trace_id")
        .agg(
            pl.len(),
            (pl.col("status") == "error").sum(),
            pl.col("total_cost_usd").sum(),
            pl.col("total_tokens").sum(),
            pl.col("start_time").min(),
            pl.col("end_time").max(),
            pl.col("span_id")
            .filter(pl.col("parent_span_id").is_null())
            .max()
            .fill_null("")
            .alias("root"),
        )
        .sort("org_id", "project_id", "trace_id")
    )
    assert len(got) == want.height
    for row, expected in zip(got, want.iter_rows(), strict=True):
        assert row[:5] == expected[:5] and row[6] == expected[6] and row[9] == expected[9]
        assert row[5] == pytest.approx(expected[5], rel=1e-9, abs=1e-12)
        assert (row[7].replace(tzinfo=UTC), row[8].replace(tzinfo=UTC)) == expected[7:9]


def test_twins_set_aside_are_stored_but_left_out_of_every_figure(loaded):
    store, counts = loaded
    assert counts["twins"] == len(TWINS)
    ((stored,),) = _query(store, "SELECT count() FROM {db}.spans WHERE org_id = 95")
    assert stored == len(TWINS)
    for table in ("rollup_1min", "rollup_1hour", "rollup_1day", "trace_totals"):
        assert _query(store, f"SELECT count() FROM {{db}}.{table} WHERE org_id = 95") == [(0,)]


def test_the_retention_hook_deletes_spans_past_their_days(loaded):
    store, counts = loaded
    # a span already past its days is not written: the engine would drop it as it writes the
    # part, after the views counted it (and count it again when sent again)
    assert counts["retention"] == len(KEPT)
    for table in ("rollup_1min", "trace_totals"):
        assert _query(store, f"SELECT count() FROM {{db}}.{table} WHERE org_id = 97") == [(0,)]
    kept_project = KEPT[0]["project_id"]
    expected_kept = sum(1 for r in KEPT if r["project_id"] == kept_project)
    got = dict(
        _query(
            store, "SELECT org_id, count() FROM {db}.spans WHERE org_id IN (96, 97) GROUP BY org_id"
        )
    )
    # org 97: kept one day, started three days ago; org 96: 30 days for one project, and
    # the project's rows not named are kept until deleted (0: forever)
    assert 97 not in got
    assert got[96] == len(KEPT) and expected_kept > 0


def test_every_opening_of_a_store_in_a_process_shares_its_write_lock(loaded):
    store, _ = loaded
    again = SpanStore(store.target, store.client)
    assert again.write_lock is store.write_lock
    other = SpanStore(parse_target("chdb:///elsewhere"), store.client)
    assert other.write_lock is not store.write_lock
