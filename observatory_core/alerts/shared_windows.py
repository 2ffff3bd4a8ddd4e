"""The alert cycle's reads of spans on the span store: the batches of one window read together.

A statement on chDB costs some 5-10 ms however few spans it reads (its parts, marks and
pipeline), so a cycle of 100 rules spent most of its time on some 30 statements of a few hundred
spans each. Batches of one org, window and subject whose filters and group-bys name only a model
and an environment (the common rule shapes) are answered by one grouped statement there: one
`GROUPING SETS` set per shape (no key, the model, the environment, both), each batch taking the
rows of its set whose keys its filter names. The same aggregates as the metrics engine's raw
path (`metrics/raw.series_expression`), over the same spans (the scope, the window, the counted
spans of the subject), so the same values (docs/span-store-internals.md, "Reports and alerts"). The
windows read from spans: up to an hour (exact), and longer ones whose series or group-by the rollups
cannot answer. Anything else is read per batch as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, literal_column, tuple_
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.alerts.state import NO_GROUP, group_key
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import ZERO_WHEN_EMPTY, Agg
from observatory_core.metrics.raw import series_expression
from observatory_core.metrics.rollup_path import rollup_can_answer
from observatory_core.metrics.series_reads import frame_of_statement
from observatory_core.semantic.duplicates import counted
from observatory_core.semantic.metrics import METRICS, Subject, sample_series, subject_condition
from observatory_core.storage.schema import spans

# The filter lists and group-bys a set can stand for, in the order `grouping` numbers them.
KEYS = {"model": "models", "environment": "environments"}


class Shape(NamedTuple):
    """A batch as a set's rows: the keys its filter fixes (key, value) and its group-by."""

    fixed: tuple[tuple[str, str], ...]
    group_by: str | None

    @property
    def keys(self) -> frozenset[str]:
        return frozenset([k for k, _ in self.fixed] + ([self.group_by] if self.group_by else []))


def shape_of(filter_json: str, group_by: str | None) -> Shape | None:
    """The batch's shape, or None when its filter or group-by is not a set's (read apart)."""
    if group_by is not None and group_by not in KEYS:
        return None
    spec = FilterSpec.from_json(filter_json)
    if not spec.only_uses(tuple(KEYS.values())):
        return None
    fixed = []
    for key, field in KEYS.items():
        values = getattr(spec, field)
        if len(values) > 1:
            return None
        if values:
            fixed.append((key, values[0]))
    return Shape(tuple(fixed), group_by)


def subject_of(members: list[dict]) -> Subject | None:
    """The one subject of every series the batch reads (with each rule's sample), else None."""
    names = {r["series"] for r in members} | {sample_series(r["series"]) for r in members}
    subjects = {METRICS[n.split(".")[0]].subject for n in names}
    return subjects.pop() if len(subjects) == 1 else None


def rollups_answer(members: list[dict], filter_json: str, group_by: str | None) -> bool:
    """Whether the metrics engine, not forced to spans, answers the batch from rollups (its
    percentiles from the latency bins): such a batch is read apart, as before."""
    names = tuple(dict.fromkeys(s for r in members for s in _series(r)))
    spec = FilterSpec.from_json(filter_json)
    return rollup_can_answer(names, (group_by,) if group_by else (), spec)


def _mask(keys: frozenset[str], used: tuple[str, ...]) -> int:
    """`grouping(*used)` of the set of `keys`: a bit set for each key left out (the first key
    the highest bit)."""
    out = 0
    for key in used:
        out = (out << 1) | (key not in keys)
    return out


def read_together(
    engine: Engine,
    org_id: int,
    subject: Subject,
    batches: list[tuple[Shape, list[dict]]],
    start: datetime,
    end: datetime,
    dialect: str,
    max_groups: int,
) -> dict[int, dict[str, tuple[float | None, int]]] | None:
    """Rule id -> group key -> (value, requests) for every batch, from one statement over
    [start, end); None when a batch's set holds more than `max_groups` groups (the caller reads
    them apart, where the engine folds the smallest into "(other)")."""
    scope = Scope(org_id=org_id, role=Role.ADMIN, username="alerts")
    names = {s for _, members in batches for r in members for s in _series(r)}
    series = tuple(sorted(names))
    sets = {shape.keys for shape, _ in batches}
    used = tuple(k for k in KEYS if any(k in keys for keys in sets))  # grouping() wants keys
    spec = FilterSpec(relative=None, start=start, end=end)
    query = scoped_spans(
        scope,
        (func.grouping(*(spans.c[k] for k in used)) if used else literal_column("0")).label("_set"),
        *(spans.c[key].label(key) for key in used),
        *(series_expression(s).label(s) for s in series),
    ).where(*filter_conditions(spec, end, dialect), counted(spans.c))
    rows = subject_condition(subject, spans.c)
    if rows is not None:
        query = query.where(rows)
    if used:  # else the totals alone: one row, also over no span
        grouping = [
            tuple_(*(spans.c[k] for k in used if k in keys)) if keys else literal_column("()")
            for keys in sorted(sets, key=lambda keys: _mask(keys, used), reverse=True)
        ]
        query = query.group_by(func.grouping_sets(*grouping))
    frame = frame_of_statement(engine, query)
    by_set: dict[int, list[dict]] = {}
    for row in frame.iter_rows(named=True):
        by_set.setdefault(row["_set"], []).append(row)
    observed: dict[int, dict[str, tuple[float | None, int]]] = {}
    for shape, members in batches:
        mine = [
            row
            for row in by_set.get(_mask(shape.keys, used), [])
            if all(row[key] == value for key, value in shape.fixed)
        ]
        if shape.group_by is not None and len(mine) > max_groups:
            return None
        if shape.group_by is None and not mine:  # no span: the totals' one row over none
            mine = [{s: None for s in series}]
        for rule in members:
            by_group = observed.setdefault(rule["id"], {})
            for row in mine:
                key = group_key(row[shape.group_by]) if shape.group_by else NO_GROUP
                value = _typed(rule["series"], row[rule["series"]])
                count = int(row[sample_series(rule["series"])] or 0)
                by_group[key] = (value, count)
    return observed


def _series(rule: dict) -> tuple[str, str]:
    return rule["series"], sample_series(rule["series"])


def _typed(series: str, value) -> float | None:
    """As `metrics/shaping.typed` leaves it: zero for an empty count or sum, else the value."""
    if value is None:
        return 0.0 if Agg(series.split(".")[1]) in ZERO_WHEN_EMPTY else None
    return float(value)
