"""Which stored spans a move changes and how (`wrapper_moves.py`, docs/span-store-internals.md,
"Wrapper moves and their journal"): a wrapper's flag cleared, or a twin's columns set
(`duplicate_of`, or the fields it takes from its new twin). The spans still to change, as they
are and as they are to be (the same rows with the columns replaced, `SELECT * REPLACE`), are the
sources the rollups' minute partials, the trace totals and the hours' actors are computed from,
by the views' own expressions."""

from __future__ import annotations

from typing import Any

from observatory_core.storage.clickhouse import rollup_select
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.layout import micro_text
from observatory_core.storage.clickhouse.wrapper_move_journal import Entry
from observatory_core.storage.clickhouse.wrapper_move_reads import Wrapper


def _wrappers_where(wrappers: list[Wrapper], params: dict[str, Any], prefix: str = "") -> str:
    """The wrappers' rows: the key's prefix (org, project, start) and their identity."""
    params["ids"] = [(w.project_id, w.trace_id, w.span_id) for w in wrappers]
    params["lo"] = micro_text(min(w.start_time for w in wrappers))
    params["hi"] = micro_text(max(w.start_time for w in wrappers))
    p = prefix
    return (
        f"{p}org_id = %(org)s AND {p}project_id IN %(projects)s "
        f"AND {p}start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
        f"AND {p}start_time <= toDateTime64(%(hi)s, 6, 'UTC') "
        f"AND ({p}project_id, {p}trace_id, {p}span_id) IN %(ids)s"
    )


Sets = dict[str, Any]  # a span's columns as they are to be
_MOVED: Sets = {"llm_call": False}  # a wrapper's


def _set_groups(entry: Entry) -> list[tuple[Sets, list[Wrapper]]]:
    """The entry's spans by the columns they are to take (a wrapper move's: one group)."""
    if entry.sets is None:
        return [(_MOVED, list(entry.wrappers))]
    out: dict[str, tuple[Sets, list[Wrapper]]] = {}
    for w in entry.wrappers:
        sets = entry.sets[w]
        out.setdefault(repr(sorted(sets.items())), (sets, []))[1].append(w)
    return list(out.values())


def _still(groups: list[tuple[Sets, list[Wrapper]]], params: dict[str, Any]) -> str:
    """The spans not yet as they are to be (a wrapper still flagged)."""
    parts = []
    for i, (sets, mine) in enumerate(groups):
        params[f"g{i}"] = [(w.project_id, w.trace_id, w.span_id) for w in mine]
        same = []
        for j, (name, value) in enumerate(sorted(sets.items())):
            params[f"s{i}_{j}"] = value
            same.append(f"isNull({name})" if value is None else f"ifNull({name} = %(s{i}_{j})s, 0)")
        parts.append(
            f"((project_id, trace_id, span_id) IN %(g{i})s AND NOT ({' AND '.join(same)}))"
        )
    return "(" + " OR ".join(parts) + ")"


def _new_values(groups: list[tuple[Sets, list[Wrapper]]]) -> list[tuple[str, str]]:
    """(column, its value as it is to be: `_still`'s parameters) of each column taken."""
    names = sorted({name for sets, _ in groups for name in sets})
    out = []
    for name in names:
        arms = []
        for i, (sets, _) in enumerate(groups):
            if name in sets:
                j = sorted(sets).index(name)
                arms.append(f"(project_id, trace_id, span_id) IN %(g{i})s, %(s{i}_{j})s")
        out.append((name, f"multiIf({', '.join(arms)}, {name})"))
    return out


def _sources(
    store: SpanStore, org_id: int, wrappers: list[Wrapper], groups: list
) -> tuple[tuple[str, str], dict[str, Any], dict[str, Any]]:
    """(the spans still to change as they are, as they are to be), their parameters and the
    statements' settings."""
    params: dict[str, Any] = {"org": org_id}
    params["projects"] = sorted({w.project_id for w in wrappers})
    chosen = (
        f"(SELECT * FROM {store.table('spans')} WHERE {_wrappers_where(wrappers, params)} "
        f"AND {_still(groups, params)})"
    )
    taken = ", ".join(f"{expr} AS {name}" for name, expr in _new_values(groups))
    replaced = f"(SELECT * REPLACE ({taken}) FROM {chosen})"
    settings = {"max_query_size": 262_144 + 200 * len(wrappers)}
    return (chosen, replaced), params, settings


def _moved_rows(
    store: SpanStore, sources: tuple[str, str], params: dict, settings: dict
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The minute partials of the spans still to change, as the minute's view made them (a
    wrapper's keyed `llm_call = true`), and as it makes them of the spans as they are to be
    (the view's own expressions over `_sources`)."""
    out = []
    for source in sources:
        result = store.client.query(
            rollup_select.select(f"{source} AS spans"), parameters=params, settings=settings
        )
        out.append([dict(zip(result.column_names, r, strict=True)) for r in result.result_rows])
    return out[0], out[1]
