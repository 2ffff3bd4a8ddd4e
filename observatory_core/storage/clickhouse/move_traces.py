"""What a twin restated (`wrapper_moves.py`, docs/span-store-internals.md, "Wrapper moves and
their journal") changes beyond the rollups: its trace's totals and the hours' users and
sessions, which a wrapper move never touches (`llm_call` enters neither).

Trace totals, per (project, trace) whose totals the restated spans change: from the view's own
expressions (`layout.trace_total_partials`) over the spans as they are (`out`) and as they are
to be (`in`: none for a twin set aside), one row is inserted that adds the difference (counts
as their UInt64 complement, sums negated; the extremes of `in`, else values no `min` or `max`
keeps; the key's newest start and retention, so the row expires with the key's); a key left
with no span is deleted instead (unless an earlier negative row is still unmerged there, or
its trace has a span the totals have not counted), as SQLite drops it. Where `out` held an
extreme of the key, the extreme is computed again from the key's other counted spans and
`in`, and set on every row of the key (`ALTER TABLE ... UPDATE`), when those count exactly the
key's spans (else left, and logged); a key whose rows add up to no span takes no extreme.

Actors (a set per hour, project, kind): an actor of `in` not of `out` is inserted; one of
`out` not of `in` is deleted from its hour when no other counted span of the hour and project
has it.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.ddl import ACTORS, _counted_spans, actors_select
from observatory_core.storage.clickhouse.layout import micro_text
from observatory_core.storage.clickhouse.wrapper_move_reads import Wrapper, _kind, _second, _utc

log = logging.getLogger("observatory.span_store")

_NEGATIVE = 2**63
_HOUR = timedelta(seconds=layout.GRAIN_SECONDS["1hour"])
Statement = tuple[str, dict[str, Any]]


def _partials() -> tuple[layout.Partial, ...]:
    return layout.trace_total_partials()


@lru_cache(maxsize=1)
def columns_read() -> frozenset[str]:
    """The span columns the trace totals' and the hours' actors' views read (their
    expressions and WHERE): a change to no other column changes neither."""
    texts = [p.select for p in _partials()] + [_counted_spans(), actors_select("spans")]
    return frozenset(m for t in texts for m in re.findall(r"spans`?\.`?(\w+)", t))


def _extremes() -> list[tuple[str, str, str]]:
    """(column, min or max, its value type) of the trace totals' extremes."""
    out = []
    for p in _partials():
        kind = _kind(p.column)
        if kind in ("min", "max"):
            inner = p.column.type.removeprefix(f"SimpleAggregateFunction({kind}, ")[:-1]
            out.append((p.column.name, kind, inner))
    return out


def _neutral(kind: str, inner: str) -> Any:
    """A value that `kind` over the key's rows passes over."""
    if inner.startswith("DateTime64"):
        return (
            datetime(2299, 12, 31, tzinfo=UTC)
            if kind == "min"
            else datetime(1970, 1, 1, tzinfo=UTC)
        )
    if inner == "String":
        return ""
    return (layout.UINT64_WRAP - 1) if kind == "min" else 0


def _ids(wrappers: list[Wrapper]) -> list[tuple]:
    return [(w.project_id, w.trace_id, w.span_id) for w in wrappers] or [(0, "", "")]


def _rows(store: SpanStore, source: str, params: dict, settings: dict) -> dict[tuple, dict]:
    select = ", ".join(f"{p.select} AS {p.column.name}" for p in _partials())
    result = store.client.query(
        f"SELECT spans.org_id AS org_id, spans.project_id AS project_id, "
        f"spans.trace_id AS trace_id, {select} FROM {source} AS spans "
        f"WHERE {_counted_spans()} GROUP BY org_id, project_id, trace_id",
        parameters=params,
        settings=settings,
    )
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    return {(r["project_id"], r["trace_id"]): _zoned(r) for r in rows}


def _zoned(row: dict) -> dict:
    return {k: _utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _key_state(store: SpanStore, org_id: int, project: int, trace: str) -> tuple[dict, bool]:
    """The key's rows merged (its extremes and span count) and whether a negative row is
    among them."""
    names = [name for name, _, _ in _extremes()]
    aggs = ", ".join(f"{kind}({name})" for name, kind, _ in _extremes())
    ((count, negative, *values),) = store.client.query(
        f"SELECT sum(span_count), countIf(span_count >= {_NEGATIVE}) > 0, {aggs} "
        f"FROM {store.table('trace_totals')} "
        "WHERE org_id = %(org)s AND project_id = %(project)s AND trace_id = %(trace)s",
        parameters={"org": org_id, "project": project, "trace": trace},
    ).result_rows
    row = _zoned(dict(zip(names, values, strict=True)))
    return row | {"span_count": int(count)}, bool(negative)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXPIRY = ("last_start", layout.RETAIN_DAYS)  # the trace totals' TTL reads them


def _starts(have: dict) -> tuple | None:
    """The first and last start of the key's spans: what its rows hold (every span its view
    counted: `min(first_start)`, `max(last_start)`; a neutral row's values pass over). None
    when the rows hold no start (none left, or only a view's gap): then all the trace's spans
    are read, as they were before the bound. Not widened to the restated spans' own starts:
    `_source` leaves them out (`NOT IN`) and takes a kept one as it is to be from `in`; a span
    the totals have not counted may start anywhere (`_others_left` reads all of them)."""
    first, last = have.get("first_start"), have.get("last_start")
    if first is None or last is None or last <= _EPOCH or first > last:
        return None
    return first, last


def _source(
    store: SpanStore,
    org_id: int,
    project: int,
    trace: str,
    wrappers: list[Wrapper],
    inn: dict | None,
    have: dict,
) -> dict:
    """The key's counted spans but the restated ones, with `inn` (the restated as they are to
    be) merged: its span count and extremes. Read within the key's known starts (`_starts`),
    so the engine reads the trace's months' parts only, not the org's every partition."""
    exprs = {p.column.name: p.select for p in _partials()}
    names = [name for name, _, _ in _extremes()]
    aggs = ", ".join(exprs[name] for name in names)
    params = {"org": org_id, "project": project, "trace": trace, "ids": _ids(wrappers)}
    within = ""
    starts = _starts(have)
    if starts is not None:
        params["lo"], params["hi"] = micro_text(starts[0]), micro_text(starts[1])
        within = (
            "AND spans.start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
            "AND spans.start_time <= toDateTime64(%(hi)s, 6, 'UTC') "
        )
    ((count, *values),) = store.client.query(
        f"SELECT count(), {aggs} FROM {store.table('spans')} AS spans "
        f"WHERE spans.org_id = %(org)s AND spans.project_id = %(project)s {within}"
        f"AND spans.trace_id = %(trace)s AND {_counted_spans()} "
        "AND (spans.project_id, spans.trace_id, spans.span_id) NOT IN %(ids)s",
        parameters=params,
    ).result_rows
    row = _zoned(dict(zip(names, values, strict=True))) | {"span_count": int(count)}
    if int(row["span_count"]) == 0:  # no span: the aggregates' defaults are no values
        row = {name: None for name, _, _ in _extremes()} | {"span_count": 0}
    if inn is not None:
        for name, kind, _ in _extremes():
            values = [v for v in (row[name], inn[name]) if v is not None]
            row[name] = (min if kind == "min" else max)(values)
        row["span_count"] = int(row["span_count"]) + int(inn["span_count"])
    return row


def _delta(org_id: int, key: tuple, out: dict | None, inn: dict | None, have: dict) -> dict:
    row: dict[str, Any] = {"org_id": org_id, "project_id": key[0], "trace_id": key[1]}
    kinds = {name: (kind, inner) for name, kind, inner in _extremes()}
    for p in _partials():
        name = p.column.name
        if name in kinds:
            row[name] = inn[name] if inn is not None else _neutral(*kinds[name])
        else:
            value = (inn[name] if inn else 0) - (out[name] if out else 0)
            row[name] = value % layout.UINT64_WRAP if p.column.type == layout.SUM_COUNT else value
    # expires with the key's rows (the table's TTL: the newest start, the longest retention)
    for name in _EXPIRY:
        row[name] = max(row[name], have[name])
    return row


def _others_left(
    store: SpanStore, org_id: int, project: int, trace: str, wrappers: list[Wrapper], have: dict
) -> bool:
    """Whether the trace has a counted span but the restated ones: read within the totals'
    known starts first, and when none is there, over all its spans. A span the totals have not
    counted (its insert's views failed, or still running: `view_gaps.py`) may start outside
    those starts, and a key with it is not emptied: deleting it would delete that span's row
    too, should it land before the delete."""
    # `{}`: no known starts, all its spans (the first read already is, when `have` holds none)
    reads = (have, {}) if _starts(have) else ({},)
    return any(
        _source(store, org_id, project, trace, wrappers, None, known)["span_count"]
        for known in reads
    )


def plan_traces(
    store: SpanStore,
    org_id: int,
    wrappers: list[Wrapper],
    sources: tuple[str, str],
    params: dict,
    settings: dict,
) -> list[dict[str, Any]]:
    """Each (project, trace) whose totals change: its `out` and `in` rows, whether it is left
    with no span (`emptied`), and the row to insert (`delta`, None when emptied)."""
    out = _rows(store, sources[0], params, settings)
    inn = _rows(store, sources[1], params, settings)
    items = []
    for project, trace in sorted(set(out) | set(inn)):
        o, i = out.get((project, trace)), inn.get((project, trace))
        if o == i:
            continue
        have, negative = _key_state(store, org_id, project, trace)
        emptied = (
            i is None
            and not negative
            and int(have["span_count"]) in (int(o["span_count"]) if o else 0, 0)
            and not _others_left(store, org_id, project, trace, wrappers, have)
        )
        delta = None if emptied else _delta(org_id, (project, trace), o, i, have)
        items.append(
            {"project_id": project, "trace_id": trace, "out": o, "in": i, "emptied": emptied}
            | {"delta": delta}
        )
    return items


def _held_values(
    store: SpanStore,
    org_id: int,
    item: dict[str, Any],
    wrappers: list[Wrapper],
    have: dict,
    held: list[tuple[str, str]],
) -> dict[str, Any]:
    """The value each extreme of `held` is to take (none: left as it is, logged): computed
    again from the key's other counted spans and `in`, when those count exactly the key's
    spans. When the key's rows add up to no span, its trace's other spans not counted (yet: a
    view's gap, or one still running), the neutral values: no extreme either, so what lands
    for those spans (a late view's row, `view_gaps.py`'s top-up) is theirs alone; the rows'
    expiry (`_EXPIRY`) kept, as `_delta` keeps it."""
    count = int(have["span_count"]) % layout.UINT64_WRAP
    if count == 0:
        kinds = {name: kind for name, kind, _ in _extremes()}
        return {n: _neutral(kinds[n], inner) for n, inner in held if n not in _EXPIRY}
    project, trace = item["project_id"], item["trace_id"]
    source = _source(store, org_id, project, trace, wrappers, item["in"], have)
    if source["span_count"] != count or any(source[name] is None for name, _ in held):
        log.warning(
            "Span store: org %s's trace totals of %s hold %d spans where its spans hold %d: "
            "its %s left as they were.",
            org_id,
            trace,
            count,
            source["span_count"],
            ", ".join(n for n, _ in held),
        )
        return {}
    return {name: source[name] for name, _ in held}


def trace_mutations(
    store: SpanStore, org_id: int, items: list[dict[str, Any]], wrappers: list[Wrapper]
) -> list[Statement]:
    """The deletes of the keys emptied and the updates of the extremes `out` held, judged on
    the trace totals as they are now (after the move's insert)."""
    out: list[Statement] = []
    table = store.table("trace_totals")
    for item in items:
        params: dict[str, Any] = {
            "org": org_id,
            "project": item["project_id"],
            "trace": item["trace_id"],
        }
        where = "org_id = %(org)s AND project_id = %(project)s AND trace_id = %(trace)s"
        if item["emptied"]:
            out.append((f"DELETE FROM {table} WHERE {where}", params))
            continue
        o = item["out"]
        if o is None:
            continue
        have, _ = _key_state(store, org_id, item["project_id"], item["trace_id"])
        inn = item["in"]
        held = [  # an extreme the copy held and, as it is to be, no longer holds
            (name, inner)
            for name, kind, inner in _extremes()
            if o[name] != _neutral(kind, inner)
            and have[name] == o[name]
            and (inn is None or inn[name] != o[name])
        ]
        if not held:
            continue
        values = _held_values(store, org_id, item, wrappers, have, held)
        if not values:
            continue
        sets = []
        for i, (name, value) in enumerate(values.items()):
            inner = dict(held)[name]
            params[f"v{i}"] = micro_text(value) if isinstance(value, datetime) else value
            sets.append(f"{name} = CAST(%(v{i})s AS {inner})")
        out.append((f"ALTER TABLE {table} UPDATE {', '.join(sets)} WHERE {where}", params))
    return out


def plan_actors(
    store: SpanStore, sources: tuple[str, str], params: dict, settings: dict
) -> dict[str, list[dict[str, Any]]]:
    """The hours' actors the restated spans add (`add`) and may take out (`drop`)."""

    def read(source: str) -> set[tuple]:
        result = store.client.query(actors_select(source), parameters=params, settings=settings)
        return {(r[0], _utc(r[1]), *r[2:]) for r in result.result_rows}

    out, inn = read(sources[0]), read(sources[1])
    names = ("org_id", "bucket_start", "project_id", "kind", "actor")
    return {
        "add": [dict(zip(names, r, strict=True)) for r in sorted(inn - out)],
        "drop": [dict(zip(names, r, strict=True)) for r in sorted(out - inn)],
    }


def add_actors(store: SpanStore, rows: list[dict[str, Any]]) -> None:
    """Inserted each time the move runs: a set, seen twice it changes nothing."""
    if rows:
        names = list(rows[0])
        store.client.insert(
            store.table(ACTORS), [[r[n] for n in names] for r in rows], column_names=names
        )


def actor_deletes(
    store: SpanStore, org_id: int, rows: list[dict[str, Any]], wrappers: list[Wrapper]
) -> list[Statement]:
    """Each actor of `rows` no other counted span of its hour and project has: deleted."""
    out: list[Statement] = []
    for row in rows:
        hour = _utc(row["bucket_start"])
        params: dict[str, Any] = {
            "org": org_id,
            "project": row["project_id"],
            "lo": _second(hour),
            "hi": _second(hour + _HOUR),
            "kind": row["kind"],
            "actor": row["actor"],
            "ids": _ids(wrappers),
        }
        column = "user_id" if row["kind"] == "user" else "session_id"
        ((others,),) = store.client.query(
            f"SELECT count() FROM {store.table('spans')} AS spans WHERE spans.org_id = %(org)s "
            "AND spans.project_id = %(project)s "
            "AND spans.start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
            "AND spans.start_time < toDateTime64(%(hi)s, 6, 'UTC') "
            f"AND {_counted_spans()} AND spans.{column} = %(actor)s "
            "AND (spans.project_id, spans.trace_id, spans.span_id) NOT IN %(ids)s",
            parameters=params,
        ).result_rows
        if others:
            continue
        out.append(
            (
                f"DELETE FROM {store.table(ACTORS)} IN PARTITION {hour:%Y%m} "
                "WHERE org_id = %(org)s AND bucket_start = toDateTime(%(lo)s, 'UTC') "
                "AND project_id = %(project)s AND kind = %(kind)s AND actor = %(actor)s",
                params,
            )
        )
    return out
