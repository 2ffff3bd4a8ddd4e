"""What a wrapper move (`wrapper_moves.py`, docs/span-store-internals.md "Wrapper moves and their
journal") reads of the rollups and the spans to judge a bucket: a key's rows at a bucket merged
(span count, extremes, whether an earlier move's negative row is among them), and what the row is
made of (the minute's counted spans, the hour's minute rows, the day's hour rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from observatory_core.storage.clickhouse import layout, rollup_select
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.ddl import _counted_spans

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEGATIVE = 2**63  # a count at or above it is a complement: a negative row


@dataclass(frozen=True)
class Wrapper:
    """A stored span to stop counting as an LLM call."""

    project_id: int
    trace_id: str
    span_id: str
    start_time: datetime


@dataclass(frozen=True)
class State:
    """A key's rows at a bucket, merged: how many spans they count, and each extreme."""

    count: int
    extremes: dict[str, Any]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _bucket(moment: datetime, seconds: int) -> datetime:
    whole = int((_utc(moment) - _EPOCH).total_seconds() // seconds) * seconds
    return _EPOCH + timedelta(seconds=whole)


def _second(moment: datetime) -> str:
    """A bucket's start as `toDateTime` reads it (whole seconds)."""
    return _utc(moment).strftime("%Y-%m-%d %H:%M:%S")


def _partials() -> tuple[layout.Partial, ...]:
    return rollup_select.partials()  # the minute view's, compiled once


def _kind(column: layout.ChColumn) -> str:
    """sum, min, max or sumMap: how the rollups merge `column`."""
    return column.type.removeprefix("SimpleAggregateFunction(").split(",")[0]


@lru_cache(maxsize=1)
def _key_names() -> tuple[str, ...]:
    return tuple(c.name for c, _ in layout.rollup_keys())


def _key_where(key: dict[str, Any], params: dict[str, Any], column=lambda n: n) -> str:
    """The key's columns equal to its values (parameters `k0`, `k1`, ...)."""
    parts = []
    for i, name in enumerate(_key_names()):
        params[f"k{i}"] = key[name]
        parts.append(f"{column(name)} = %(k{i})s")
    return " AND ".join(parts)


@lru_cache(maxsize=1)
def _extremes() -> tuple[tuple[str, str], ...]:
    """(column, min or max) of the rollups' extremes."""
    return tuple(
        (p.column.name, _kind(p.column)) for p in _partials() if _kind(p.column) in ("min", "max")
    )


def _row_state(store: SpanStore, table: str, org_id: int, bucket: datetime, key: dict):
    """A key's row at a bucket, merged: its span count and each extreme."""
    params: dict[str, Any] = {"org": org_id, "bucket": _second(bucket)}
    where = _key_where(key, params)
    aggs = ", ".join(f"{kind}({name})" for name, kind in _extremes())
    ((count, *values),) = store.client.query(
        f"SELECT sum(span_count), {aggs} FROM {store.table(table)} WHERE org_id = %(org)s "
        f"AND bucket_start = toDateTime(%(bucket)s, 'UTC') AND {where}",
        parameters=params,
    ).result_rows
    return int(count), dict(zip([n for n, _ in _extremes()], values, strict=True))


def _source_state(
    store: SpanStore,
    grain: str,
    org_id: int,
    bucket: datetime,
    key: dict,
    moved: list[Wrapper],
    finer: dict[datetime, State] | None = None,
) -> State:
    """What a key's row at `bucket` is made of, merged: the minute's counted spans but the
    `moved` wrappers (still flagged); the hour's minute rows, the day's hour rows, those of
    `finer` (the finer buckets this move changed, by their start) taken as `finer` says (their
    own mutations may not be applied yet)."""
    seconds = layout.GRAIN_SECONDS[grain]
    params: dict[str, Any] = {
        "org": org_id,
        "lo": _second(bucket),
        "hi": _second(bucket + timedelta(seconds=seconds)),
    }
    finer = finer or {}
    if grain == "1min":
        exprs = dict(rollup_select.keys())  # the minute view's key
        where = _key_where(key, params, lambda n: exprs[n])
        partials = {p.column.name: p.select for p in _partials()}
        aggs = ", ".join(partials[name] for name, _ in _extremes())
        sql = (
            f"SELECT count(), {aggs} FROM {store.table('spans')} AS spans "
            "WHERE spans.org_id = %(org)s AND spans.start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
            "AND spans.start_time < toDateTime64(%(hi)s, 6, 'UTC') "
            f"AND {_counted_spans()} AND {where} "
            "AND (spans.project_id, spans.trace_id, spans.span_id) NOT IN %(ids)s"
        )
        params["ids"] = [(w.project_id, w.trace_id, w.span_id) for w in moved] or [(0, "", "")]
    else:
        table = "rollup_1min" if grain == "1hour" else "rollup_1hour"
        where = _key_where(key, params)
        aggs = ", ".join(f"{kind}({name})" for name, kind in _extremes())
        params["changed"] = sorted(int(b.timestamp()) for b in finer) or [0]
        sql = (
            f"SELECT sum(span_count), {aggs} FROM {store.table(table)} WHERE org_id = %(org)s "
            "AND bucket_start >= toDateTime(%(lo)s, 'UTC') "
            f"AND bucket_start < toDateTime(%(hi)s, 'UTC') AND {where} "
            "AND toUnixTimestamp(bucket_start) NOT IN %(changed)s"
        )
    ((count, *values),) = store.client.query(
        sql, parameters=params, settings={"max_query_size": 262_144 + 100 * len(moved)}
    ).result_rows
    state = State(int(count), dict(zip([n for n, _ in _extremes()], values, strict=True)))
    return _merged([state, *finer.values()])


def _merged(states: list[State]) -> State:
    out: dict[str, Any] = {}
    for name, kind in _extremes():
        values = [s.extremes[name] for s in states if s.extremes[name] is not None]
        out[name] = (min if kind == "min" else max)(values) if values else None
    return State(sum(s.count for s in states), out)


def _negative_rows(store: SpanStore, table: str, org_id: int, bucket: datetime, key: dict) -> bool:
    """Whether a key's rows at a bucket hold a negative row (an earlier move's, not merged
    yet): such a bucket is never deleted (a read while the delete ran could see the negative
    row alone, 2^64 - 1 spans); the move adds its negative there instead."""
    params: dict[str, Any] = {"org": org_id, "bucket": _second(bucket), "neg": _NEGATIVE}
    where = _key_where(key, params)
    ((found,),) = store.client.query(
        f"SELECT count() > 0 FROM {store.table(table)} WHERE org_id = %(org)s "
        f"AND bucket_start = toDateTime(%(bucket)s, 'UTC') AND {where} "
        "AND span_count >= %(neg)s",
        parameters=params,
    ).result_rows
    return bool(found)


def _no_extremes() -> dict[str, Any]:
    return {name: None for name, _ in _extremes()}
