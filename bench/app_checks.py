"""What must be equal on both stores for the same data (bench/clickhouse_app_case.py): each
read's answer reduced to a `check`, and whether a check is of an empty answer (which both
stores give alike for a wrong org or window, so it proves nothing)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from bench.case import END

# Pages whose sort key ties across the page (every error of the demo costs 0): which tied rows
# fill a full page, and their order, follow each store's span id (a sequence; a hash on the
# span store). A short page holds every match: its ids, sorted, are checked; a full page is
# checked to hold errors of the window alone, with its sort values.
TIED = {"explorer_first_page_7d_errors_by_cost": ("total_cost_usd", "error", timedelta(days=7))}
PAGE = 50
# The sort key of each page (start time unless named): rows that tie on it at a full page's
# end are cut by each store's own tiebreak (the row id on SQLite and PostgreSQL, the span's ids
# on the span store), so which of them fill the page, and their order, may differ.
SORTS = {
    "explorer_first_page_30d_model_env_by_duration": "duration_ms",
    "explorer_first_page_traces_24h_by_tree_cost": "total_cost_usd",
}


def _digest(values) -> str:
    return hashlib.sha1("\n".join(map(str, values)).encode()).hexdigest()[:12]


def _tied_check(name: str, rows: list[dict], now) -> list:
    sort, status, window = TIED[name]
    if len(rows) < PAGE:  # every match: the same rows on both stores, whatever their order
        return [len(rows), _digest(sorted(f"{r['trace_id']}:{r['span_id']}" for r in rows))]
    inside = all(
        r.get("status") == status and now - window <= _utc(r["start_time"]) <= now for r in rows
    )
    return [len(rows), _digest(r.get(sort) for r in rows), f"all {status}s of the window: {inside}"]


def _sort_value(value):
    if isinstance(value, datetime | str):
        return _utc(value).isoformat()
    return round(value, 9) if isinstance(value, float) else value  # sums in another order


def _page_check(rows: list[dict], sort: str) -> list:
    """A page: its sort values in order, each row before the last value with its value (or
    every row, on a short page: every match), whatever the order of ties, and how many
    distinct spans it holds (a span listed twice is not the same answer)."""
    if rows and sort not in rows[0]:
        raise KeyError(f"the page's rows carry no {sort!r} to check their order by")
    ids = [f"{r.get('trace_id')}:{r.get('span_id')}" for r in rows]
    values = [_sort_value(r.get(sort)) for r in rows]
    boundary = values[-1] if len(rows) >= PAGE else object()
    fixed = sorted(f"{v}|{i}" for i, v in zip(ids, values, strict=True) if v != boundary)
    return [len(rows), len(set(ids)), _digest(values), _digest(fixed)]


def _utc(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_of(name: str, answer, now=END) -> object:
    """What must be equal on both stores for the same data: a page's rows (a digest of their
    ids in order; `TIED`'s pages as said there), a trace's spans, the series' request count
    and cost, the Overview's requests, traces and tokens. `now`: the read's."""
    if name.startswith("explorer_open"):
        return len(answer.spans) if answer else None
    if name.startswith("explorer_"):  # the page's spans (traces), in order
        if name in TIED:
            return _tied_check(name, answer.rows, now)
        return _page_check(answer.rows, SORTS.get(name, "start_time"))
    if name.startswith("metrics_"):
        frame = answer.frame
        return [int(frame["request_count.count"].sum()), round(frame["total_cost.sum"].sum(), 4)]
    if name.startswith("overview_"):
        shown = ("requests", "traces", "tokens")
        return {k.key: [k.current, k.previous] for k in answer.kpis if k.key in shown}
    return None


def empty(check) -> bool:
    """Whether a check is of an empty answer (no trace, no rows, no requests), which both
    stores would give alike for a wrong org or window."""
    if check is None:
        return True
    if isinstance(check, dict):
        return not (check.get("requests") or [0])[0]
    if isinstance(check, list):
        return not check or not check[0]
    return not check
