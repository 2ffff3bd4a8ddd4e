"""How long an org keeps its spans and rollups: set by admins, each change audited.

Spans are kept `span_retention_days` (a project may keep its own number), rollups
`rollup_retention_days`, which must be at least as long so old months still chart after their
spans are gone; None keeps them forever. The worker deletes what has expired
(storage/retention.py, docs/operations.md "Retention").

With the ClickHouse span store (`OBSERVATORY_SPAN_STORE`), each stored span carries its days
for the table's TTL: a change re-stamps the org's stored spans here, after the setting is
saved, so the Admin page and the command line go through one path (docs/scale.md,
"Retention"). A store that fails then does not undo the setting: the answer says so, and the
worker's next retention run re-stamps them (`storage/clickhouse/restamp.py`, `reconcile`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from observatory_core.accounts.audit import record_for
from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.storage.schema import orgs, projects

MIN_DAYS = 1
MAX_DAYS = 36_500  # a hundred years: past that, say "forever" (leave it empty)


@dataclass(frozen=True)
class Retention:
    """An org's retention; `projects` maps project id -> its own span days."""

    span_days: int | None = None
    rollup_days: int | None = None
    projects: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Saved:
    """What `set_retention` did: whether the setting changed (the object is true then), and a
    sentence on the span store's stored spans (None without a span store or a change)."""

    changed: bool
    span_store: str | None = None
    span_store_failed: bool = False

    def __bool__(self) -> bool:
        return self.changed


def _days(value: object, what: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserError(f"{what}: give a whole number of days, or leave it empty for forever.")
    try:
        days = float(value)
    except ValueError:
        raise UserError(f"{what}: {value!r} is not a number of days.") from None
    if days != int(days) or not MIN_DAYS <= days <= MAX_DAYS:
        raise UserError(
            f"{what}: give a whole number of days from {MIN_DAYS} to {MAX_DAYS}, "
            "or leave it empty to keep them forever."
        )
    return int(days)


def read(conn: Connection, org_id: int) -> Retention:
    row = conn.execute(
        select(orgs.c.span_retention_days, orgs.c.rollup_retention_days).where(orgs.c.id == org_id)
    ).first()
    if row is None:
        raise UserError("This org no longer exists.")
    overrides = conn.execute(
        select(projects.c.id, projects.c.span_retention_days).where(
            projects.c.org_id == org_id, projects.c.span_retention_days.is_not(None)
        )
    )
    return Retention(row[0], row[1], dict(overrides.all()))


def get_retention(engine: Engine, scope: Scope) -> Retention:
    """The org's retention (anyone in the org may read how long their data is kept)."""
    with engine.connect() as conn:
        return read(conn, scope.org_id)


def set_retention(
    engine: Engine,
    scope: Scope,
    span_days: object,
    rollup_days: object,
    project_days: dict[int, object] | None = None,
    *,
    wait: bool = False,
) -> Saved:
    """Admins set the org's span and rollup retention and the projects' own span retention
    (`project_days`: project id -> days, empty for the org's). Answers whether anything
    changed (and what became of the span store's stored spans); the change is audited with
    its before and after. `wait`: return once the span store has re-stamped (the command
    line), else the engine finishes it in the background (the page)."""
    scope.require(Permission.ADMIN)
    spans_ = _days(span_days, "Span retention")
    rollups = _days(rollup_days, "Rollup retention")
    wanted = {
        int(p): d
        for p, v in (project_days or {}).items()
        if (d := _days(v, f"Span retention of project {p}")) is not None
    }
    longest = max([d for d in (spans_, *wanted.values()) if d is not None], default=None)
    if rollups is not None and (longest is None or rollups < longest):
        raise UserError(
            "Keep rollups at least as long as spans (else old months stop charting before "
            "their spans go): raise the rollup retention or leave it empty (forever)."
        )
    with engine.begin() as conn:
        before = read(conn, scope.org_id)
        own = set(
            conn.execute(select(projects.c.id).where(projects.c.org_id == scope.org_id)).scalars()
        )
        if project_days is not None and not {int(p) for p in project_days} <= own:
            raise UserError("A project named is not one of this org's; reload the page.")
        after = Retention(spans_, rollups, wanted if project_days is not None else before.projects)
        if after == before:
            return Saved(False)
        conn.execute(
            update(orgs)
            .where(orgs.c.id == scope.org_id)
            .values(span_retention_days=spans_, rollup_retention_days=rollups)
        )
        if project_days is not None:
            for project in own:
                conn.execute(
                    update(projects)
                    .where(projects.c.id == project)
                    .values(span_retention_days=wanted.get(project))
                )
        record_for(
            conn,
            scope,
            "retention.set",
            "span and rollup retention",
            before=_described(before),
            after=_described(after),
        )
        # sent before the commit, while the org's row is held: the worker's re-stamp takes the
        # same row first (`org_stamp`), so the engine gets the two mutations in commit order
        sent = _restamp(scope.org_id, after)
    if isinstance(sent, Saved):
        return sent
    store, rows = sent
    if not rows:
        return Saved(True, "The spans in the span store already had this retention.")
    if not wait:
        return Saved(True, f"{rows:,} spans in the span store being re-stamped in the background.")
    from observatory_core.storage.clickhouse import restamp

    try:
        done = restamp.settle(store)
    except UserError as exc:
        return Saved(True, f"{rows:,} spans in the span store being re-stamped ({exc}).")
    if not done:
        return Saved(
            True,
            f"{rows:,} spans in the span store being re-stamped; the engine is still at it "
            f"after {restamp.WAIT_S:.0f} s and finishes in the background.",
        )
    return Saved(True, f"{rows:,} spans in the span store re-stamped with the new retention.")


def _restamp(org_id: int, after: Retention):
    """Send the mutation that re-stamps the org's stored spans with the saved days: (store,
    rows it rewrites), or a `Saved` that says there is no span store or why it failed (left
    to the worker's next retention run; the setting stays saved)."""
    from observatory_core.storage.clickhouse import restamp
    from observatory_core.storage.clickhouse.current import span_store

    try:
        store = span_store()
        if store is None:
            return Saved(True)
        return store, restamp.restamp(store, _stamp(org_id, after))
    except UserError as exc:  # unreachable, held by another process, a bad setting
        return Saved(
            True,
            f"Saved, but the spans already in the span store keep their old retention for now "
            f"({exc}) The worker's next retention run applies it to them.",
            span_store_failed=True,
        )


def _stamp(org_id: int, retention: Retention):
    """The org's span retention as the span store stamps it."""
    from observatory_core.storage.clickhouse.restamp import Stamp

    return Stamp(org_id, retention.span_days or 0, retention.projects)


@contextmanager
def org_stamp(engine: Engine, org_id: int) -> Iterator:
    """The org's current span retention as the span store stamps it, read while its row is
    held (an idle update: a row lock on PostgreSQL, the write lock on SQLite) until the block
    ends: a re-stamp sent in the block cannot overtake an admin's change being saved."""
    with engine.begin() as conn:
        conn.execute(update(orgs).where(orgs.c.id == org_id).values(id=orgs.c.id))
        yield _stamp(org_id, read(conn, org_id))


def _described(value: Retention) -> dict:
    return {
        "span_days": value.span_days,
        "rollup_days": value.rollup_days,
        "project_span_days": {str(p): d for p, d in sorted(value.projects.items())},
    }
