"""Anomaly rules ("unusual for this hour") on five weeks of demo data, on both stores: the
backtest fires on the demo's two incidents and on nothing else in the quiet week between them,
its numbers equal polars over the raw rows, and the live evaluator fires, stores the baseline
with the event and queues the webhook as it does for threshold rules."""

from __future__ import annotations

import json
import statistics
import uuid
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import delete, select

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.tenancy import org_id_by_slug
from observatory_core.alerts.anomaly import (
    FLOOR_SHARE,
    MAD_SCALE,
    Baseline,
    baseline_of,
    outside,
)
from observatory_core.alerts.backtest import backtest, replay
from observatory_core.alerts.evaluate import evaluate
from observatory_core.alerts.history import events
from observatory_core.alerts.rules import build_rule, create_rule, list_rules, spec_of
from observatory_core.base.errors import UserError
from observatory_core.demo.catalog import INCIDENTS
from observatory_core.demo.generator import DemoGenerator
from observatory_core.demo.load import ensure_demo_tenants
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.persist import write_spans
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import complete_row
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import alert_rules, spans, webhook_deliveries
from tests.conftest import PG_ADMIN_URL, pg_admin

# The openai incident (3.5 hours before the end, 40 minutes) then fills 14:00-14:40 UTC, and
# the anthropic one (8 days back, 14:00 UTC, 95 minutes) 14:00-15:35: both in one hourly bucket.
END = datetime(2026, 11, 20, 17, 30, tzinfo=UTC)
DAYS = 37  # 4 weeks of baseline before the 9 days the backtest replays
LLM_CALLS = FilterSpec(relative=None, operations=("chat", "completion"))
RULE = dict(
    name="First token unusually slow",
    series="ttft_ms.p50",
    comparator=">",
    threshold=0,
    window_s=3600,
    filters=LLM_CALLS,
    group_by="provider",
    min_requests=10,
    kind="anomaly",
    baseline_weeks=4,
    sensitivity=4,
    direction="above",
)


def _incident_start(provider: str) -> datetime:
    return next(i for i in INCIDENTS if i.provider == provider).start(END)


_ROWS: dict[tuple, list[dict]] = {}


def _generated(ids: tuple, prices: PriceBook, org_id: int) -> list[dict]:
    """The rules' spans of the generated traffic, generated once for both stores (their fresh
    databases give the demo orgs and projects the same ids)."""
    if (ids, org_id) not in _ROWS:
        generator = DemoGenerator(ids=dict(ids), end=END, days=DAYS, seed=7, prices=prices)
        _ROWS[(ids, org_id)] = [
            complete_row(r, 200)
            for r in generator.spans(60_000)
            if r["operation"] in LLM_CALLS.operations and r["org_id"] == org_id
        ]
    return _ROWS[(ids, org_id)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def history(request, tmp_path_factory):
    """Five weeks of demo traffic (60,000 generated spans), of which the rules' spans are stored:
    Acme's LLM calls (the rest would not change one figure and would quadruple the load)."""
    if request.param == "sqlite":
        url, name = f"sqlite:///{tmp_path_factory.mktemp('anomaly') / 'a.db'}", None
    else:
        request.getfixturevalue("pg_url")
        name = f"obs_anomaly_{uuid.uuid4().hex[:10]}"
        pg_admin(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    ids = ensure_demo_tenants(engine)
    with engine.connect() as conn:
        prices = PriceBook.load(conn)
        acme = org_id_by_slug(conn, "acme")
    write_spans(engine, [dict(r) for r in _generated(tuple(sorted(ids.items())), prices, acme)])
    with engine.connect() as conn:
        raw = pl.DataFrame(
            [
                dict(r)
                for r in conn.execute(
                    select(
                        spans.c.org_id,
                        spans.c.provider,
                        spans.c.start_time,
                        spans.c.ttft_ms,
                        spans.c.llm_call,
                    ).where(spans.c.org_id == acme)
                ).mappings()
            ],
            infer_schema_length=None,
        )
    yield {"engine": engine, "org_id": acme, "raw": raw}
    engine.dispose()
    if name is not None:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _scope(org_id: int) -> Scope:
    return Scope(org_id, Role.ADMIN, username="t")


def _hourly_p50(raw: pl.DataFrame, provider: str, start: datetime) -> tuple[float | None, int]:
    """polars: the p50 of the provider's time to first token over one hour, and its requests."""
    rows = raw.filter(
        (pl.col("provider") == provider)
        & (pl.col("start_time") >= start)
        & (pl.col("start_time") < start + timedelta(hours=1))
        & pl.col("llm_call").cast(pl.Boolean)
    )
    return rows["ttft_ms"].drop_nulls().quantile(0.5, "linear"), rows.height


def test_the_backtest_fires_on_both_incidents_and_nothing_else(history):
    rule = build_rule(**RULE)
    frame, bucket, transitions, _ = replay(
        history["engine"], _scope(history["org_id"]), rule, days=9, now=END
    )
    assert bucket == "1hour"
    fired = [(t.group, t.at) for t in transitions if t.after == "firing"]
    hour = timedelta(hours=1)
    assert fired == [
        ("anthropic", _incident_start("anthropic") + hour),
        ("openai", _incident_start("openai") + hour),
    ], fired
    # every firing bucket is an incident's: the quiet week between them never leaves the band
    hot = frame.filter(pl.col("firing"))
    for group, at in hot.select("group", "bucket").iter_rows():
        incident = next(i for i in INCIDENTS if i.provider == group).start(END)
        assert incident - hour <= at <= incident + timedelta(minutes=incident_minutes(group))
    # and each incident resolves once it is over
    resolved = {t.group for t in transitions if t.after == "resolved"}
    assert resolved == {"anthropic", "openai"}


def incident_minutes(provider: str) -> float:
    return next(i for i in INCIDENTS if i.provider == provider).minutes


def test_the_backtest_numbers_equal_polars_over_the_raw_rows(history):
    rule = build_rule(**RULE)
    frame, *_ = replay(history["engine"], _scope(history["org_id"]), rule, days=9, now=END)
    start = _incident_start("openai")
    row = frame.filter((pl.col("group") == "openai") & (pl.col("bucket") == start)).row(
        0, named=True
    )
    value, requests = _hourly_p50(history["raw"], "openai", start)
    assert row["value"] == pytest.approx(value)
    assert row["requests"] == requests
    past = []
    for k in range(1, 5):
        v, n = _hourly_p50(history["raw"], "openai", start - timedelta(weeks=k))
        past.append(v if n >= RULE["min_requests"] else None)
    kept = [v for v in past if v is not None]
    median = statistics.median(kept)
    mad = statistics.median([abs(v - median) for v in kept])
    spread = max(MAD_SCALE * mad, FLOOR_SHARE * median)
    assert row["median"] == pytest.approx(median)
    assert row["high"] == pytest.approx(median + 4 * spread)
    assert row["value"] > row["high"] and row["firing"]


def test_live_evaluation_fires_with_the_baseline_and_queues_the_webhook(history):
    engine, org_id = history["engine"], history["org_id"]
    scope = _scope(org_id)
    with engine.begin() as conn:
        conn.execute(delete(alert_rules).where(alert_rules.c.system_kind.is_(None)))
    spec = build_rule(**{**RULE, "webhook_url": "https://hooks.example.com/anomaly"})
    rule_id = create_rule(engine, scope, spec, now=END)
    quiet = _incident_start("openai") - timedelta(hours=2)
    during = _incident_start("openai") + timedelta(minutes=40)
    evaluate(engine, quiet)
    assert [e for e in events(engine, scope, rule_id=rule_id)] == []
    report = evaluate(engine, during)
    assert report.queries >= 5  # this window, then the same window in each of 4 weeks
    (fired,) = events(engine, scope, rule_id=rule_id)
    assert (fired["group_key"], fired["to_state"]) == ("openai", "firing")
    raw = history["raw"].filter(
        (pl.col("provider") == "openai")
        & pl.col("llm_call").cast(pl.Boolean)
        & (pl.col("start_time") >= during - timedelta(hours=1))
        & (pl.col("start_time") < during)
    )
    assert fired["value"] == pytest.approx(raw["ttft_ms"].drop_nulls().quantile(0.5, "linear"))
    assert fired["threshold"] is not None and fired["threshold"] < fired["value"] / 2
    with engine.connect() as conn:
        (body,) = conn.execute(
            select(webhook_deliveries.c.body).where(webhook_deliveries.c.rule_id == rule_id)
        ).scalars()
    alert = json.loads(body)["alert"]
    assert (alert["kind"], alert["state"], alert["group"]) == ("anomaly", "firing", "openai")
    assert alert["usual"] == pytest.approx(fired["threshold"])
    assert "above usual" in json.loads(body)["text"]
    # the stored rule reads back as the rule that was saved
    (stored,) = [r for r in list_rules(engine, scope) if r["id"] == rule_id]
    assert spec_of(stored) == spec


def test_the_backtest_summary_counts_the_incident_of_the_last_week(history):
    result = backtest(history["engine"], _scope(history["org_id"]), build_rule(**RULE), now=END)
    assert result.fired == 1  # the openai incident; the anthropic one was 8 days ago


def test_baseline_is_the_median_and_scaled_mad_with_a_floor():
    values = [100.0, 130.0, 70.0, 400.0]  # one odd week does not move it
    base = baseline_of(values)
    series = pl.Series(values)
    median = series.median()
    mad = (series - median).abs().median()
    assert (base.median, base.spread, base.weeks) == (median, MAD_SCALE * mad, 4)
    assert outside(250.0, base, 3, "above") and not outside(240.0, base, 3, "above")
    assert outside(-20.0, base, 3, "below") and not outside(250.0, base, 3, "below")
    assert outside(-20.0, base, 3, "both") and outside(250.0, base, 3, "both")
    flat = baseline_of([200.0, 200.0, 200.0])  # MAD 0: the floor keeps noise out
    assert flat.spread == FLOOR_SHARE * 200 and not outside(250.0, flat, 3, "above")
    assert baseline_of([0.0, 0.0], ratio=True).spread == 0.01
    assert baseline_of([5.0, None, None]) is None  # fewer than two weeks count
    assert not outside(None, base, 3, "above") and not outside(1e9, None, 3, "above")
    assert Baseline(10.0, 2.0, 3).band(3) == (4.0, 16.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"direction": "sideways"}, "Direction 'sideways' must be one of above, below, both"),
        ({"baseline_weeks": 1}, "Weeks of baseline must be between 2 and 12"),
        ({"sensitivity": "high"}, "Sensitivity (deviations) must be a number"),
        ({"kind": "magic"}, "Rule kind 'magic' must be one of threshold, anomaly"),
    ],
)
def test_bad_anomaly_settings_get_a_message_naming_the_fix(change, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_rule(**{**RULE, **change})


def test_an_anomaly_rule_needs_no_threshold_and_keeps_its_direction():
    rule = build_rule(**{**RULE, "comparator": "?", "threshold": "none", "direction": "both"})
    assert (rule.kind, rule.comparator, rule.threshold, rule.direction) == (
        "anomaly",
        "<>",
        0,
        "both",
    )
    assert build_rule(**{**RULE, "kind": "threshold"}).kind == "threshold"


def test_anomaly_rules_go_through_pending_and_keep_firing_like_threshold_rules():
    from observatory_core.alerts.state import step

    rule = build_rule(**{**RULE, "pending_s": 60, "keep_firing_s": 120})
    usual = Baseline(500.0, 50.0, 4)  # unusual above 500 + 4 x 50 = 700
    at = END
    timeline, state = [], None
    for seconds, value in ((0, 900), (30, 900), (61, 900), (150, 600), (180, 600), (181, 600)):
        state, _ = step(state, value, 20, rule, at + timedelta(seconds=seconds), usual)
        timeline.append(state.state)
    # the last unusual value was seen at 61 s: keep-firing (120 s) holds it until 181 s
    assert timeline == ["pending", "pending", "firing", "firing", "firing", "resolved"]
    # no baseline (too few weeks with enough requests): no judgement, so no alert
    assert step(None, 10_000, 20, rule, at, None)[0].state == "ok"
    # below the minimum requests the rule does not judge either
    assert step(None, 10_000, 5, rule, at, usual)[0].state == "ok"


def test_a_viewer_sees_no_usual_cost_in_an_anomaly_rules_history(org):
    """The usual value of a cost is a cost: hidden from viewers as a threshold is."""
    from observatory_core.storage.schema import alert_events
    from tests.helpers import admin_scope

    engine, org_id, _ = org
    spec = build_rule(**{**RULE, "name": "unusual spend", "series": "total_cost.sum"})
    rule_id = create_rule(engine, admin_scope(org_id), spec, now=END)
    with engine.begin() as conn:
        conn.execute(
            alert_events.insert().values(
                org_id=org_id,
                rule_id=rule_id,
                group_key="openai",
                from_state="ok",
                to_state="firing",
                value=4.56,
                threshold=1.23,
                at=END,
            )
        )
    (seen,) = events(engine, admin_scope(org_id, Role.DEVELOPER))
    assert (seen["kind"], seen["value"], seen["threshold"]) == ("anomaly", 4.56, 1.23)
    (hidden,) = events(engine, admin_scope(org_id, Role.VIEWER))
    assert hidden["values_hidden"] and hidden["value"] is None and hidden["threshold"] is None
    (rule,) = [
        r for r in list_rules(engine, admin_scope(org_id, Role.VIEWER)) if r["id"] == rule_id
    ]
    assert rule["values_hidden"]
