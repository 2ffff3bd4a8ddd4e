"""The reader's zone on the pages: stored for the user, it reaches the Metrics page's query
(day buckets of that zone, the same figures as the core's) and its table's times."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from observatory_core.accounts.preferences import set_user_zone
from observatory_core.accounts.users import scope_for
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from tests.ui.conftest import ROOT
from tests.ui.test_app import login
from tests.ui.test_metrics_pages import open_page


def test_the_users_zone_buckets_the_metrics_page(app_env):
    engine, _ = app_env
    scope = scope_for(engine, "admin-user")
    set_user_zone(engine, scope, "Asia/Kathmandu")
    try:
        at = open_page(
            "pages/metrics.py", params={"relative": "7d", "m": "request_count.count", "b": "1day"}
        )
        assert not at.exception, at.exception
        table = at.dataframe[0].value
        core = run_metrics(
            engine,
            scope,
            MetricQuery(
                series=("request_count.count",),
                filters=FilterSpec(relative="7d"),
                bucket="1day",
                zone="Asia/Kathmandu",
            ),
        ).frame
        assert len(table) == core.height > 0
        assert [int(v) for v in table["Requests"]] == core["request_count.count"].to_list()
        # shown on the Kathmandu clock: every day starts at local midnight
        shown = table["bucket"].tolist()
        assert all(t.hour == 0 and t.minute == 0 for t in shown)
    finally:
        set_user_zone(engine, scope, None)


def test_picking_a_zone_stores_it(app_env):
    engine, _ = app_env
    scope = scope_for(engine, "admin-user")
    at = login(AppTest.from_file(str(ROOT / "app.py"), default_timeout=60), "admin-user")
    try:
        assert at.sidebar.selectbox(key="zone_picker").value == "(my browser's)"
        at.sidebar.selectbox(key="zone_picker").select("America/New_York").run(timeout=60)
        assert not at.exception, at.exception
        from observatory_core.accounts.preferences import user_zone

        assert user_zone(engine, scope).name == "America/New_York"
    finally:
        set_user_zone(engine, scope, None)
