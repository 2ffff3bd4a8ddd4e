"""A metric added in one declaration works end to end: the engine on both stores, the HTTP API,
and the Metrics page, with values equal to polars over the raw rows."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import func

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.semantic.metrics import METRICS, Agg, Kind, Metric, Subject
from tests.api.conftest import _api_data, api, auth  # noqa: F401 - the API fixture, over both stores
from tests.helpers import END, admin_scope, all_spans
from tests.ui.conftest import app_db, app_db_pristine, app_env  # noqa: F401 - the app fixtures

# The one declaration: the length of the answer text, raw only. It reads output_text, so only
# roles that may see prompt and answer text may chart it.
OUTPUT_CHARS = Metric(
    "output_chars",
    "Output characters",
    "chars",
    Subject.SPANS,
    Kind.VALUE,
    (Agg.SUM, Agg.AVG, Agg.MAX),
    lambda c: func.length(c.output_text),
    reads=("output_text",),
)
SERIES = ("output_chars.sum", "output_chars.avg", "output_chars.max")
START = END - timedelta(days=2)


@pytest.fixture
def output_chars(monkeypatch):
    monkeypatch.setitem(METRICS, OUTPUT_CHARS.name, OUTPUT_CHARS)  # restored after the test
    return OUTPUT_CHARS


def _reference(df: pl.DataFrame, org_id: int) -> pl.DataFrame:
    """Per hour and provider, from the raw rows."""
    chars = pl.col("output_text").str.len_chars().cast(pl.Float64)
    return (
        df.filter(
            (pl.col("org_id") == org_id)
            & (pl.col("start_time") >= START)
            & (pl.col("start_time") < END)
        )
        .with_columns(pl.col("start_time").dt.truncate("1h"))
        .group_by(pl.col("start_time").alias("bucket"), "provider")
        .agg(
            chars.sum().alias(SERIES[0]),
            chars.mean().alias(SERIES[1]),
            chars.max().alias(SERIES[2]),
        )
    )


def _assert_equal(rows: list[dict], ref: pl.DataFrame) -> None:
    """Every (hour, provider) of the reference with its values; every other row empty."""
    want = {(r["bucket"], r["provider"]): r for r in ref.to_dicts()}
    assert len(want) > 20
    seen = 0
    for row in rows:
        expected = want.get((row["bucket"], row["provider"]))
        if expected is None:  # an empty bucket of a provider seen elsewhere
            assert (row[SERIES[0]], row[SERIES[1]], row[SERIES[2]]) == (0, None, None)
            continue
        seen += 1
        for s in SERIES:
            w = expected[s] if expected[s] is not None or s != SERIES[0] else 0
            if w is None:
                assert row[s] is None, (row, s)
            else:
                assert row[s] == pytest.approx(w, rel=1e-9), (row, s)
    assert seen == len(want)


def _query() -> MetricQuery:
    return MetricQuery(
        series=SERIES,
        filters=FilterSpec(relative=None, start=START, end=END),
        bucket="1hour",
        group_by=("provider",),
    )


def test_the_engine_charts_it_bucketed_and_grouped_on_both_stores(api, output_chars):  # noqa: F811
    engine = api["engine"]
    result = run_metrics(engine, admin_scope(api["acme"]), _query(), now=END)
    assert result.source == "raw"  # no rollup partials: the raw path answers
    ref = _reference(all_spans(engine), api["acme"])
    _assert_equal(result.frame.to_dicts(), ref)


def test_the_api_serves_it_and_refuses_it_to_a_role_without_text(api, output_chars):  # noqa: F811
    client = api["client"]
    url = (
        "/metrics?" + "&".join(f"series={s}" for s in SERIES) + "&bucket=1hour&group_by=provider"
        f"&start={START.isoformat().replace('+00:00', 'Z')}"
        f"&end={END.isoformat().replace('+00:00', 'Z')}"
    )
    got = client.get(url, headers=auth(api))
    assert got.status_code == 200, got.text
    assert got.json()["data"]["series"] == list(SERIES)
    rows = [
        {**r, "bucket": pl.Series([r["bucket"]]).str.to_datetime(time_zone="UTC")[0]}
        for r in got.json()["data"]["rows"]
    ]
    _assert_equal(rows, _reference(all_spans(api["engine"]), api["acme"]))
    refused = client.get(url, headers=auth(api, "billing"))  # billing may not read answers
    assert refused.status_code == 403, refused.text
    assert "output_chars" in refused.json()["error"]["message"]


def test_the_metrics_page_offers_and_draws_it(app_env, output_chars):  # noqa: F811
    from observatory_core.accounts.users import scope_for
    from tests.ui.test_metrics_pages import open_page

    engine, _ = app_env
    params = {"relative": "7d", "m": "output_chars.sum", "b": "1day", "g": "provider"}
    at = open_page("pages/metrics.py", params=params)
    assert not at.exception, at.exception
    picker = next(m for m in at.multiselect if m.label == "Metrics")
    offered = {"Output characters · sum", "Output characters · avg", "Output characters · max"}
    assert offered <= set(picker.options)
    assert picker.value == ["output_chars.sum"]
    table = at.dataframe[0].value
    core = run_metrics(
        engine,
        scope_for(engine, "admin-user"),
        MetricQuery(
            series=("output_chars.sum",),
            filters=FilterSpec(relative="7d"),
            bucket=None,
        ),
    ).frame
    total = core["output_chars.sum"][0]
    df = all_spans(engine).filter(pl.col("org_id") == scope_for(engine, "admin-user").org_id)
    assert total > 0
    assert total == pytest.approx(df["output_text"].str.len_chars().sum(), rel=1e-9)
    assert float(table["Output characters · sum"].sum()) == pytest.approx(total, rel=1e-9)
    # a role that may not read answer texts is not offered it
    billing = open_page("pages/metrics.py", role="billing", params={"relative": "7d"})
    options = next(m for m in billing.multiselect if m.label == "Metrics").options
    assert "Requests" in options and not any("Output characters" in o for o in options)
