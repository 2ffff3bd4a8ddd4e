"""The rollups' SELECT over spans: how a group of counted spans becomes a rollup row (its key
and partials, `layout.rollup_keys` and `layout.rollup_partials`), written once
(docs/span-store-internals.md, "Wrapper moves and their journal").

The minute view (`ddl._rollups`) is this SELECT over each inserted block; the repairs run it
over spans the view did not see as they stand: a wrapper move's and a twin's partials
(`wrapper_move_spans.py`), remap's rebuild of a day (`rewrite_spans.py`), the bins' back-fill
(`rebuild.py`) and the view-gap top-up at every grain (`view_gaps.py`). One builder, so a key
or partial added to the declarations reaches the view and every repair alike: a repair that
computed a row otherwise would put in figures the view never writes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from observatory_core.semantic.duplicates import counted
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.schema import spans


def counted_spans() -> str:
    """Spans that count in figures (not a twin set aside: `semantic/duplicates.py`): the
    views' WHERE (`ddl._counted_spans` is this) and every repair's."""
    return layout.sql(counted(spans.c))


def bucket(grain: str = "1min") -> str:
    """The bucket a span falls in at `grain`, as the rollup's `bucket_start`."""
    seconds = layout.GRAIN_SECONDS[grain]
    return (
        f"toDateTime(toStartOfInterval(spans.start_time, INTERVAL {seconds} SECOND, 'UTC'), 'UTC')"
    )


@lru_cache(maxsize=4)
def keys(grain: str = "1min") -> tuple[tuple[str, str], ...]:
    """(column, its expression over spans) of a rollup row's key: the org, the bucket and
    `layout.rollup_keys`, in the tables' order."""
    out = [("org_id", "spans.org_id"), ("bucket_start", bucket(grain))]
    return tuple(out + [(c.name, expr) for c, expr in layout.rollup_keys()])


@lru_cache(maxsize=1)
def partials() -> tuple[layout.Partial, ...]:
    """The rollups' partials as the current schema keeps them (the latency bins)."""
    return layout.rollup_partials()


def items(grain: str = "1min", of: Sequence[layout.Partial] | None = None) -> list[str]:
    """The SELECT's columns, `expression AS column`: the key, then each partial of `of` (all
    of `partials()` when None)."""
    chosen = partials() if of is None else of
    return [f"{expr} AS {name}" for name, expr in keys(grain)] + [
        f"{p.select} AS {p.column.name}" for p in chosen
    ]


def names(grain: str = "1min", of: Sequence[layout.Partial] | None = None) -> list[str]:
    """The SELECT's column names, in its order (an INSERT's column list)."""
    chosen = partials() if of is None else of
    return [name for name, _ in keys(grain)] + [p.column.name for p in chosen]


def select(
    source: str,
    where: str = "",
    *,
    grain: str = "1min",
    of: Sequence[layout.Partial] | None = None,
) -> str:
    """The rollup rows of `source`'s counted spans (a table or subquery read as `spans`),
    `where` more conditions on them: one row per key, as the view writes it."""
    more = f" AND {where}" if where else ""
    return (
        f"SELECT {', '.join(items(grain, of))}\nFROM {source}\n"
        f"WHERE {counted_spans()}{more}\n"
        f"GROUP BY {', '.join(name for name, _ in keys(grain))}"
    )


def texts(of: Sequence[layout.Partial] | None = None) -> list[str]:
    """The SELECT's expressions over spans (its key, partials and WHERE): a subquery feeding it
    must hold every column they name as `spans.x` (`view_gaps.newest_spans`)."""
    chosen = partials() if of is None else of
    return [e for _, e in keys()] + [p.select for p in chosen] + [counted_spans()]


def columns_read(of: Sequence[layout.Partial] | None = None) -> frozenset[str]:
    """The span columns the SELECT reads: a change to no other column changes no rollup row.
    Every partial's (the default, which each move asks for) computed once."""
    return _all_columns_read() if of is None else _columns(texts(of))


@lru_cache(maxsize=1)
def _all_columns_read() -> frozenset[str]:
    return _columns(texts())


def _columns(exprs: list[str]) -> frozenset[str]:
    return frozenset(m for t in exprs for m in re.findall(r"spans`?\.`?(\w+)", t))
