"""Migration 0014 decides `llm_call` for stored spans (the operation rule, then the `other`
rule set-based) and gives the rollups the flag; its downgrade merges the rows back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from alembic import command
from sqlalchemy import text

from observatory_core.rollups.upgrade import upgrade as upgrade_with_rebuild
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import alembic_config, upgrade
from tests.helpers import all_spans, assert_rollups_match_rebuild, make_org, span, write
from tests.reference import reference_llm_calls
from tests.storage.test_packed_sketch import fresh_url  # noqa: F401 (a fixture)

AT = datetime(2026, 11, 1, 12, tzinfo=UTC)
CALL = {"model": "gpt-4o", "provider": "openai", "input_tokens": 50, "output_tokens": 10}


def _rows(org: int, project: int) -> list[dict]:
    def at(i: int) -> datetime:
        return AT + timedelta(seconds=i)

    return [
        # an agent run repeating its call's model and usage, above a step and a chat span
        span(
            org,
            project,
            at(0),
            trace_id="1" * 32,
            span_id="a" * 16,
            operation="invoke_agent",
            **CALL,
        ),
        span(
            org,
            project,
            at(1),
            trace_id="1" * 32,
            span_id="b" * 16,
            parent_span_id="a" * 16,
            operation="other",
        ),
        span(
            org,
            project,
            at(2),
            trace_id="1" * 32,
            span_id="c" * 16,
            parent_span_id="b" * 16,
            **CALL,
        ),
        # an `other` wrapper with the usage of the chat span below it
        span(org, project, at(3), trace_id="2" * 32, span_id="d" * 16, operation="other", **CALL),
        span(
            org,
            project,
            at(4),
            trace_id="2" * 32,
            span_id="e" * 16,
            parent_span_id="d" * 16,
            **CALL,
        ),
        # a lone `other` span with a model and tokens, and embeddings
        span(org, project, at(5), trace_id="3" * 32, span_id="f" * 16, operation="other", **CALL),
        span(
            org, project, at(6), trace_id="4" * 32, span_id="0" * 16, operation="embeddings", **CALL
        ),
    ]


def test_stored_spans_are_decided_by_the_migration(fresh_url):  # noqa: F811
    engine = get_engine(fresh_url)
    upgrade(engine)
    org, (project,) = make_org(engine, "acme")
    write(engine, _rows(org, project))
    with engine.begin() as conn:  # back to before the flag: the rollups merge back
        command.downgrade(alembic_config(engine, conn), "0013")
    with engine.connect() as conn:
        n = conn.execute(text("SELECT sum(span_count) FROM rollup_1hour")).scalar_one()
    assert n == 7
    upgrade_with_rebuild(engine)
    df = all_spans(engine)
    flagged = set(df.filter(pl.col("llm_call"))["id"].to_list())
    assert flagged == reference_llm_calls(df)
    by_span = dict(df.select("span_id", "llm_call").iter_rows())
    assert [s for s, flag in sorted(by_span.items()) if flag] == [
        "0" * 16,
        "c" * 16,
        "e" * 16,
        "f" * 16,
    ]
    assert_rollups_match_rebuild(engine)
