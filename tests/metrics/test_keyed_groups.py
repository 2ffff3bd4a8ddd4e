"""Group-bys by any tag or metadata key ("tag:customer", "metadata:customer"), against polars
over the raw rows, on both stores; bad keys are refused with what to send."""

from __future__ import annotations

import random

import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricError, MetricQuery
from tests.helpers import admin_scope, all_spans, empty_database, make_org, write
from tests.metrics.reference import reference_metrics
from tests.metrics.test_engine import check
from tests.traces.conftest import NOW, build_rows

CUSTOMERS = ["acme-co", "globex", "o'neil", ""]


def tag_customer(tags: list[str] | None) -> str | None:
    """The reference: the first tag "customer:<value>", written here again."""
    for t in tags or []:
        if t.startswith("customer:"):
            return t.split(":", 1)[1]
    return None


def meta_customer(data: dict | None) -> str | None:
    value = (data or {}).get("customer")
    return None if value is None else str(value)


def keyed_rows(org_id: int, projects: list[int], seed: int, traces: int = 120) -> list[dict]:
    """Spans with and without a customer tag (some with two: the first counts) and a
    customer metadata key (some without)."""
    rng = random.Random(seed)
    rows = build_rows(org_id, projects, seed=seed, traces=traces)
    for r in rows:
        extra = [f"customer:{rng.choice(CUSTOMERS)}"] * rng.choice([0, 1, 1, 2])
        if len(extra) == 2:
            extra[1] = "customer:second"
        r["tags"] = [*r["tags"], *extra] if rng.random() < 0.5 else [*extra, *r["tags"]]
        if rng.random() < 0.7:
            r["metadata"] = {**r["metadata"], "customer": rng.choice(CUSTOMERS[:3])}
    return rows


@pytest.fixture(scope="module")
def keyed(db_url):
    engine = empty_database(db_url)
    acme, projects = make_org(engine, "acme", projects=("bot", "search"))
    globex, globex_projects = make_org(engine, "globex")
    rows = keyed_rows(acme, projects, seed=3)
    for i in range(0, len(rows), 101):
        write(engine, rows[i : i + 101])
    write(engine, keyed_rows(globex, globex_projects, seed=4, traces=30))
    df = all_spans(engine)
    df = df.with_columns(
        pl.Series("tag:customer", [tag_customer(t) for t in df["tags"].to_list()], pl.Utf8),
        pl.Series(
            "metadata:customer", [meta_customer(m) for m in df["metadata"].to_list()], pl.Utf8
        ),
    )
    return {"engine": engine, "acme": acme, "df": df}


SERIES = ("request_count", "total_cost.sum", "total_tokens.sum", "error_count", "duration_ms.p95")


@pytest.mark.parametrize("dim", ["tag:customer", "metadata:customer"])
@pytest.mark.parametrize("bucket", [None, "1day"])
def test_group_by_any_key_matches_polars(keyed, dim, bucket):
    d = keyed
    spec = FilterSpec(relative="7d")
    query = MetricQuery(series=SERIES, filters=spec, bucket=bucket, group_by=(dim, "model"))
    result = run_metrics(d["engine"], admin_scope(d["acme"]), query, now=NOW)
    assert result.source == "raw"
    ref = reference_metrics(
        d["df"], spec, NOW, d["acme"], result.series, result.group_by, result.bucket_seconds
    )
    keys = (["bucket"] if result.bucket_seconds else []) + [dim, "model"]
    check(result, ref, keys)
    values = set(result.frame[dim].to_list())
    assert None in values and "second" not in values  # spans without the key: their own group
    if dim == "tag:customer":
        assert "" in values and "o'neil" in values


def test_totals_by_key_add_up(keyed):
    d = keyed
    scope = admin_scope(d["acme"])
    spec = FilterSpec(relative="7d")
    whole = run_metrics(
        d["engine"],
        scope,
        MetricQuery(series=("total_cost.sum",), filters=spec, bucket=None),
        now=NOW,
    ).frame["total_cost.sum"][0]
    parts = (
        run_metrics(
            d["engine"],
            scope,
            MetricQuery(
                series=("total_cost.sum",), filters=spec, bucket=None, group_by=("tag:customer",)
            ),
            now=NOW,
        )
        .frame["total_cost.sum"]
        .sum()
    )
    assert parts == pytest.approx(whole, rel=1e-9)


@pytest.mark.parametrize(
    "dim, says",
    [
        ("customer", "tag:<key>"),
        ("label:customer", "metadata:<key>"),
        ("tag:", "1 to 64 letters"),
        ("metadata:bad key", "1 to 64 letters"),
        ("tag:x'; drop table spans; --", "1 to 64 letters"),
    ],
)
def test_bad_keys_are_refused_saying_what_to_send(dim, says):
    with pytest.raises(MetricError, match="Cannot group by") as err:
        MetricQuery(series=("request_count",), group_by=(dim,))
    assert says in str(err.value)
