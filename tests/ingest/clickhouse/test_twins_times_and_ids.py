"""The span store ingest (the near-twin read's packed keys, times given to the driver as
microseconds, ids written into the statement): a real twin at every start phase and offset
within the tolerance is read, the stored times are the ones the driver's own conversion gave,
and an id that is not plain ASCII letters and digits is bound, never written as text."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from observatory_core.ingest import dedup, span_store_twins
from observatory_core.storage.clickhouse import writes
from observatory_core.storage.clickhouse.writes import plain_list, write_spans
from tests.ingest.clickhouse.conftest import llm_call

US = timedelta(microseconds=1)
TOL = dedup.TOLERANCE // US
SLICE = 2 * TOL
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros_of(store, org: int) -> dict[str, tuple[int, int]]:
    rows = store.client.query(
        "SELECT span_id, toUnixTimestamp64Micro(start_time), toUnixTimestamp64Micro(end_time) "
        f"FROM {store.table('spans')} WHERE org_id = {org}"
    ).result_rows
    return {s: (a, b) for s, a, b in rows}


# -- (1) the packed near keys -----------------------------------------------------------------

# a whole slice 5 minutes back (slices start at multiples of 100 ms since 1970)
BASE = datetime.fromtimestamp(int(time.time()) - 300, UTC)
PHASES = [0, 1, TOL - 1, TOL, TOL + 1, SLICE - 1, 12_345, 87_654]
OFFSETS = [-TOL, -TOL + 1, -1, 0, 1, TOL - 1, TOL]
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-3))]
TOKENS = [(0, 0), (2**31 - 1, 2**31 - 1), (-1, -(2**31)), (1_000_003, 0), (0, 1)]


def _grid():
    """(new start, stored twin start, tokens): every phase and offset, zones and token
    extremes in turn; a second apart per phase so the windows stay few."""
    i = 0
    for p, phase in enumerate(PHASES):
        for offset in OFFSETS:
            zone = ZONES[i % len(ZONES)]
            a, b = TOKENS[i % len(TOKENS)]
            tokens = (a, b - i if b > 0 else b + i)  # each case its own
            start = (BASE + timedelta(seconds=p) + phase * US).astimezone(zone)
            yield start, start + offset * US, tokens
            i += 1


def _stored_grid(store, org: int) -> list[tuple]:
    """The grid's cases, each case's twin stored for `org` (span ids from 1,000)."""
    cases = list(_grid())
    write_spans(
        store, [llm_call(org, 1_000 + i, t, tok, "lib.a") for i, (_, t, tok) in enumerate(cases)]
    )
    return cases


def test_engine_key_of_every_twin_is_among_the_new_spans_keys(chdb_store):
    """The engine's `_NEAR_KEY` of each stored twin is one of `_near_keys` of its new span."""
    org = 501
    cases = _stored_grid(chdb_store, org)
    got = dict(
        chdb_store.client.query(
            f"SELECT span_id, {span_store_twins._NEAR_KEY} FROM {chdb_store.table('spans')} "
            f"WHERE org_id = {org}"
        ).result_rows
    )
    assert len(got) == len(cases)
    missed = []
    for i, (start, twin, tok) in enumerate(cases):
        new = llm_call(org, 9_000 + i, start, tok, "lib.b")
        if got[f"{1_000 + i:016x}"] not in span_store_twins._near_keys([new]):
            missed.append((start.isoformat(), (twin - start) // US, tok))
    assert missed == []


def test_set_aside_finds_every_twin_of_the_grid_end_to_end(chdb_store):
    """Through `set_aside_twins`: the whole read (windows, tokens, keys) finds each twin."""
    org = 502
    cases = _stored_grid(chdb_store, org)
    batch = [
        llm_call(org, 9_000 + i, start, tok, "lib.b") for i, (start, _, tok) in enumerate(cases)
    ]
    # the end times moved with the starts: the twin rule compares both
    for row, (start, twin, _) in zip(batch, cases, strict=True):
        row["end_time"] = start + (twin - start) + timedelta(milliseconds=800)
    count = span_store_twins.set_aside_twins(chdb_store, batch, frozenset(), datetime.now(UTC))
    missed = [
        (start.isoformat(), (twin - start) // US)
        for i, (start, twin, _) in enumerate(cases)
        if batch[i]["duplicate_of"] != f"{1_000 + i:016x}"
    ]
    assert missed == []
    assert count == len(cases)


@pytest.mark.parametrize(
    "start",
    [
        datetime(2250, 6, 1, 12, 0, 0, 950_001, tzinfo=UTC),  # past 2**36 slices: keys wrap
        datetime(2299, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # the column's last second
    ],
)
def test_a_far_future_twin_is_still_found(chdb_store, start):
    """A clock far ahead is 'recent' (start >= now - look-back): its keys wrap into the token
    bits, in the engine and in Python alike."""
    org = 503 + start.year
    twin = llm_call(org, 77, start - 30_000 * US, (12, 34), "lib.a")
    write_spans(chdb_store, [twin])
    new = llm_call(org, 78, start, (12, 34), "lib.b")
    new["end_time"] = twin["end_time"]
    assert span_store_twins.set_aside_twins(chdb_store, [new], frozenset(), datetime.now(UTC)) == 1
    assert new["duplicate_of"] == twin["span_id"]


def test_keys_fit_the_engines_uint64_literal(chdb_store):
    """The largest keys (tokens near Int32's ends) parse in the cast text as written."""
    new = llm_call(1, 1, BASE, (-(2**31), 2**31 - 1), "x")
    keys = span_store_twins._near_keys([new])
    assert all(0 <= k < 2**64 for k in keys)
    listed = ",".join(map(str, keys))
    ((back,),) = chdb_store.client.query(f"SELECT CAST('[{listed}]' AS Array(UInt64))").result_rows
    assert list(back) == keys


def test_a_look_alike_of_another_org_or_project_is_no_twin(chdb_store):
    """The near read stays in the new span's org and project: a stored span alike in all
    else (tokens, start, end, model, service) elsewhere is not paired."""
    start = BASE + timedelta(milliseconds=40)
    elsewhere = [llm_call(511, 1, start, (3, 4), "lib.a"), llm_call(512, 2, start, (3, 4), "lib.a")]
    elsewhere[1]["project_id"] = 4
    here = llm_call(512, 3, start, (3, 4), "lib.b")
    write_spans(chdb_store, elsewhere)
    assert span_store_twins.set_aside_twins(chdb_store, [here], frozenset(), datetime.now(UTC)) == 0
    assert here["duplicate_of"] is None
    # the same span in its own project is paired: the probe can fail
    write_spans(chdb_store, [llm_call(512, 4, start, (3, 4), "lib.a")])
    assert span_store_twins.set_aside_twins(chdb_store, [here], frozenset(), datetime.now(UTC)) == 1
    assert here["duplicate_of"] == f"{4:016x}"


# -- (2) times as microseconds ----------------------------------------------------------------

TIMES = [
    datetime(2026, 12, 7, 0, 0, 0, 999_999, tzinfo=UTC),
    datetime(2026, 12, 7, 5, 30, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before 1970
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC),  # the column's first day
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(2262, 4, 11, 23, 47, 16, 999_999, tzinfo=UTC),
    datetime(2299, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # the column's last
]


def _rows(org: int, times: list[datetime]) -> list[dict]:
    out = []
    for i, t in enumerate(times):
        row = llm_call(org, 50_000 + i, t, (1, 1), "lib.a")
        row["end_time"] = t + timedelta(microseconds=i)
        out.append(row)
    return out


def _exact(t: datetime) -> int:
    return ((t if t.tzinfo else t.replace(tzinfo=UTC)) - EPOCH) // US


def _both_ways(store, monkeypatch, times, new_org: int, old_org: int):
    """The stored microseconds of the same rows written with `_micros` (into `new_org`) and
    with the driver's own conversion (`_TIMES` empty: the old code, into `old_org`)."""
    write_spans(store, _rows(new_org, times))
    with monkeypatch.context() as m:
        m.setattr(writes, "_TIMES", frozenset())
        write_spans(store, _rows(old_org, times))
    return _micros_of(store, new_org), _micros_of(store, old_org)


def test_stored_times_are_exact_and_as_the_driver_stored_them(chdb_store, monkeypatch):
    """The same rows written with the driver's own conversion (`_TIMES` empty: the old code)
    and with `_micros`: both store every time to the microsecond (the independent value is
    the time's distance from 1970 in microseconds)."""
    new, old = _both_ways(chdb_store, monkeypatch, TIMES, 601, 602)
    want = {r["span_id"]: (_exact(r["start_time"]), _exact(r["end_time"])) for r in _rows(0, TIMES)}
    assert new == want
    assert old == new


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="needs time.tzset")
def test_naive_times_are_local_as_the_driver_takes_them(chdb_store, monkeypatch):
    """A time without a zone is the process's local time, for the old code and the new."""
    naive = [datetime(2026, 3, 8, 9, 30, 0, 123_456), datetime(1969, 12, 31, 16, 59, 59, 250_000)]
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        assert time.timezone == 8 * 3600  # the zone took: naive times are not UTC here
        new, old = _both_ways(chdb_store, monkeypatch, naive, 611, 612)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert new == old
    local = ZoneInfo("America/Los_Angeles")  # independent: the zone's own rules
    assert sorted(new.values()) == sorted(
        (_exact(t.replace(tzinfo=local)), _exact(t.replace(tzinfo=local)) + i)
        for i, t in enumerate(naive)
    )


def test_otlp_nanoseconds_are_stored_as_before(chdb_store, monkeypatch):
    """The OTLP mapping's times (nanoseconds cut to microseconds) stored alike by both."""
    from observatory_core.ingest.mapping import _time

    now = datetime.now(UTC)
    nanos = [1, 999, 1_000, 1_999, 999_999_999]
    base = int(time.time()) * 10**9
    times = [_time(base + n, "start time", now + timedelta(days=1)) for n in nanos]
    new, old = _both_ways(chdb_store, monkeypatch, times, 621, 622)
    assert new == old
    assert sorted(v[0] for v in new.values()) == sorted((base + n) // 1000 for n in nanos)


# -- (3) ids in the statement -----------------------------------------------------------------

BAD_IDS = [
    "' OR 1=1 --",
    "a'b",
    "a\\",
    "a\\'",
    "a\x00b",
    "",
    "١٢٣٤",  # Arabic-Indic digits: str.isalnum() is True, not ASCII
    "ａｂｃ",  # fullwidth letters
    "abc\n",  # what `^...$` lets through (the importer's check)
    "%(org)s",
    "a b",
    "ab;",
    "a%",
    "x{y}",
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_an_id_not_plain_ascii_is_bound(bad):
    assert plain_list(["0123abcd", bad]) is None


def test_plain_ids_are_quoted_as_they_are():
    assert plain_list(["AZaz09", "ff"]) == "('AZaz09','ff')"
    assert plain_list([]) is None


def test_hostile_ids_are_stored_and_found_again_and_match_nothing_else(chdb_store):
    """Spans with hostile ids are stored once; a resend is found stored (not inserted again);
    the look-up matches no other span of the org nor of another org."""
    org, other = 701, 702
    bystanders = [llm_call(org, 10 + i, BASE, (5, 5), "lib.z") for i in range(3)]
    bystanders += [llm_call(other, 20 + i, BASE, (5, 5), "lib.z") for i in range(3)]
    write_spans(chdb_store, bystanders)
    hostile = []
    for i, bad in enumerate(BAD_IDS):
        row = llm_call(org, 100 + i, BASE + i * US, (6, 6), "lib.a")
        row["span_id"] = bad
        row["trace_id"] = "t" + bad
        hostile.append(row)
    known = writes.stored_starts(chdb_store, hostile)
    assert known == {}  # none stored yet, and no bystander matched
    assert write_spans(chdb_store, hostile) == len(hostile)
    assert write_spans(chdb_store, [dict(r) for r in hostile]) == 0  # found again: not twice
    ((n,),) = chdb_store.client.query(
        f"SELECT count() FROM {chdb_store.table('spans')} WHERE org_id = {org}"
    ).result_rows
    assert n == len(hostile) + 3
    # their twins (other scope, same tokens and start) looked up by trace and start
    batch = []
    for r in hostile:
        twin = dict(r, span_id=r["span_id"] + "2", scope_name="lib.b", parent_span_id=None)
        batch.append(twin)
    count = span_store_twins.set_aside_twins(chdb_store, batch, frozenset(), datetime.now(UTC))
    assert count == len(hostile)
    assert {r["duplicate_of"] for r in batch} == {r["span_id"] for r in hostile}


# -- the statement's size ---------------------------------------------------------------------


def test_a_long_trace_of_calls_a_second_apart_is_read(chdb_store):
    """One trace's LLM calls in one batch, just over a second apart across the look-back (an
    agent's run sent or imported at once): each is its own window in the statement, which
    must stay within the `max_query_size` it sets (before the fix: refused past ~400 calls;
    5c947ae past ~60)."""
    org = 801
    now = datetime.now(UTC)
    first = now - dedup.LOOKBACK + timedelta(seconds=5)
    batch = []
    for i in range(1790):
        row = llm_call(org, 1, first + i * timedelta(seconds=1.001), (9, 9), "a")
        row["span_id"] = f"{i + 1:016x}"
        batch.append(row)
    assert len(dedup.windows(batch)) == len(batch)
    assert span_store_twins.set_aside_twins(chdb_store, batch, frozenset(), now) == 0


def test_naive_pandas_times_with_nanoseconds_are_stored_as_the_driver_did(chdb_store, monkeypatch):
    """A naive `pandas.Timestamp` (a parquet column's, before a caller gives it a zone): its
    `timestamp()` rounds the nanoseconds to microseconds, which can carry into the next
    second; the driver took that apart, `_micros` must too (else a second late)."""
    pd = pytest.importorskip("pandas")
    times = [
        pd.Timestamp("2026-12-07 00:00:00.999999999"),
        pd.Timestamp("2026-12-07 00:00:00.123456789"),
        pd.Timestamp("1969-12-31 23:59:59.999999999"),
    ]
    new, old = _both_ways(chdb_store, monkeypatch, times, 631, 632)
    assert old == new
