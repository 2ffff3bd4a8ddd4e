"""A call sent twice on screen: the Admin page counts what was set aside per pair of scopes
and switches the matching off (audited); the trace detail marks the duplicate with a link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select

from observatory_core.accounts.audit import AuditFilter, read_entries
from observatory_core.accounts.org_settings import dedup_enabled, set_dedup
from observatory_core.accounts.users import scope_for
from observatory_core.ingest.persist import write_spans
from observatory_core.rollups.maintain import rebuild
from observatory_core.storage.schema import projects, spans
from tests.helpers import span
from tests.ui.test_app import login, start

LIBRARY, SDK = "openinference.instrumentation.openai", "openai.genai"
KEPT_TRACE, DUP_TRACE = "d" * 31 + "1", "d" * 31 + "2"


@pytest.fixture
def twice(app_env):
    """One call sent by two instrumentations into the demo org; removed afterwards."""
    engine, _ = app_env
    scope = scope_for(engine, "admin-user")
    with engine.connect() as conn:
        project = conn.execute(
            select(projects.c.id).where(projects.c.org_id == scope.org_id).limit(1)
        ).scalar_one()
    start_at = datetime.now(UTC) - timedelta(minutes=3)
    common = dict(model="gpt-4o", provider="openai", input_tokens=50, output_tokens=7)
    rows = [
        span(
            scope.org_id,
            project,
            start_at,
            trace_id=KEPT_TRACE,
            span_id="d" * 16,
            scope_name=LIBRARY,
            input_text="hello",
            output_text="hi",
            finish_reason="stop",
            **common,
        ),
        span(
            scope.org_id,
            project,
            start_at + timedelta(milliseconds=4),
            trace_id=DUP_TRACE,
            span_id="e" * 16,
            scope_name=SDK,
            **common,
        ),
    ]
    write_spans(engine, rows)
    yield engine, scope
    set_dedup(engine, scope, True)
    with engine.begin() as conn:
        conn.execute(delete(spans).where(spans.c.trace_id.in_((KEPT_TRACE, DUP_TRACE))))
    rebuild(engine, org_id=scope.org_id)


def test_admin_page_counts_the_duplicates_and_switches_off(twice):
    engine, scope = twice
    at = login(start(), "admin-user")
    at.switch_page("pages/admin.py")
    at.run()
    assert not at.exception, at.exception
    # the duplicates table, wherever the page puts it among its others
    table = next(d.value for d in at.dataframe if "Set aside (scope)" in d.value.columns)
    assert table.to_dict("records") == [
        {"Set aside (scope)": SDK, "Counted instead (scope)": LIBRARY, "Spans": 1}
    ]
    toggle = next(t for t in at.toggle if t.label == "Count a call sent twice once")
    assert toggle.value is True
    toggle.set_value(False).run()
    assert not at.exception, at.exception
    assert not dedup_enabled(engine, scope)
    (entry,) = read_entries(engine, scope, AuditFilter(action="org.dedup"))[:1]
    assert (entry["username"], entry["after"]) == ("admin-user", {"dedup_enabled": False})


def test_trace_detail_marks_the_duplicate_with_a_link(twice):
    at = login(start(), "admin-user")
    at.switch_page("pages/traces.py")
    at.query_params["trace"] = DUP_TRACE
    at.run()
    assert not at.exception, at.exception
    notice = next(i.value for i in at.info if "Duplicate of span" in i.value)
    assert f"traces?trace={KEPT_TRACE}" in notice and "d" * 16 in notice
    assert any("duplicate of " + "d" * 16 in e.label for e in at.expander)
