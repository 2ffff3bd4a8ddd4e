"""The alert rules the demo orgs start with, and their history over the loaded demo data.

Rules evaluate from the moment the app runs, so without a look back a newcomer's Alerts page
would be empty although the loaded history holds two provider incidents (see
`demo.catalog.INCIDENTS`). At load the starter rules are replayed over the history (the backtest's
state machine) and what they would have done is written as their events: each incident fires and
resolves.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import Column, select
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.tenancy import org_id_by_slug
from observatory_core.alerts.replayed import write_replayed_history
from observatory_core.alerts.rules import RuleSpec, create_rule
from observatory_core.demo.catalog import ORGS
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.schema import alert_rules
from observatory_core.storage.span_reads import span_reads

LLM_CALLS = FilterSpec(relative=None, operations=("chat", "completion"))
STARTER_RULES = (
    RuleSpec(
        name="Provider error rate above 25%",
        series="error_rate.avg",
        comparator=">",
        threshold=0.25,
        window_s=3600,
        filters=LLM_CALLS,
        group_by="provider",
        min_requests=10,
    ),
    RuleSpec(
        name="Provider p95 latency above 25 s",
        series="duration_ms.p95",
        comparator=">",
        threshold=25_000,
        window_s=3600,
        filters=LLM_CALLS,
        group_by="provider",
        min_requests=10,
    ),
)


def demo_orgs_with_names(engine: Engine, name: Column) -> Iterator[tuple[Scope, set[str]]]:
    """Each demo org's admin scope and the names `name` (a column of an org's table) holds
    there: what a starter set leaves alone."""
    for org in ORGS:
        with engine.connect() as conn:
            org_id = org_id_by_slug(conn, org.slug)
            have = set(conn.execute(select(name).where(name.table.c.org_id == org_id)).scalars())
        yield Scope(org_id, Role.ADMIN, username="demo"), have


def install_starter_rules(engine: Engine, *, days: float, now: datetime | None = None) -> int:
    """Create the starter rules each demo org lacks and write their replayed history over the
    last `days`; the number of events written. Rules that exist already are left alone. The
    replays read the spans where they are kept (the span store's when it is set)."""
    now = now or datetime.now(UTC)
    spans = span_reads(engine)
    written = 0
    for scope, have in demo_orgs_with_names(engine, alert_rules.c.name):
        for rule in STARTER_RULES:
            if rule.name in have:
                continue
            rule_id = create_rule(engine, scope, rule, now=now)
            written += write_replayed_history(
                engine, scope, rule_id, rule, days=days, now=now, spans=spans
            )
    return written
