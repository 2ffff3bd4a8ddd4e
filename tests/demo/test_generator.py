"""Demo data looks like real traffic: checked on the generated rows, not on the code."""

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.demo.catalog import INCIDENTS, MODELS
from observatory_core.demo.generator import DemoGenerator
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import complete_row
from tests.helpers import END

IDS = {
    (o, p): (i, j)
    for i, (o, projects) in enumerate(
        {
            "acme": ["support-bot", "code-assistant", "doc-search", "sales-email"],
            "globex": ["research-agent", "summarizer"],
        }.items(),
        start=1,
    )
    for j, p in enumerate(projects, start=10 * i)
}


def generate(n=30_000, seed=5, days=14):
    gen = DemoGenerator(ids=IDS, end=END, days=days, seed=seed, prices=PriceBook({}))
    return [complete_row(r, 16_000) for r in gen.spans(n)]


@pytest.fixture(scope="module")
def df():
    return pl.DataFrame(generate(), infer_schema_length=None)


def test_same_seed_same_rows_other_seed_other_rows():
    assert generate(2000, seed=9) == generate(2000, seed=9)
    assert generate(2000, seed=9) != generate(2000, seed=10)


def test_volume_and_range(df):
    assert df.height >= 30_000
    assert df["start_time"].min() >= END - timedelta(days=14)
    assert df["end_time"].max() <= END + timedelta(minutes=10)


def test_variety_of_orgs_providers_models_and_environments(df):
    llm = df.filter(pl.col("model").is_not_null())
    assert df["org_id"].n_unique() >= 2
    assert df["project_id"].n_unique() >= 6
    assert llm["provider"].n_unique() >= 5
    priced = llm.filter(pl.col("cost_source") == "computed")["model"].n_unique()
    assert priced >= 15
    assert set(df["environment"].unique()) == {"production", "staging", "development"}
    unpriced = llm.filter(pl.col("cost_source") == "unpriced")
    assert set(unpriced["model"].unique()) == {"acme-support-ft-v3"}
    assert unpriced["total_cost_usd"].sum() == 0


def test_agent_traces_are_nested_trees(df):
    ids = df.group_by("trace_id").agg(pl.col("span_id"), pl.col("parent_span_id"), pl.len())
    deep = ids.filter(pl.col("len") >= 4)
    assert deep.height > 1000
    for row in deep.head(200).iter_rows(named=True):
        spans = set(row["span_id"])
        parents = [p for p in row["parent_span_id"] if p is not None]
        assert all(p in spans for p in parents)
        assert row["parent_span_id"].count(None) == 1  # exactly one root
    ops = set(df["operation"].unique())
    assert {"invoke_agent", "chat", "execute_tool", "retrieval", "embeddings"} <= ops


def test_children_lie_inside_their_root(df):
    roots = df.filter(pl.col("parent_span_id").is_null()).select(
        "trace_id", pl.col("start_time").alias("rs"), pl.col("end_time").alias("re")
    )
    joined = df.join(roots, on="trace_id")
    assert (
        joined.filter(
            (pl.col("start_time") < pl.col("rs")) | (pl.col("end_time") > pl.col("re"))
        ).height
        == 0
    )


def test_tokens_fit_the_operation(df):
    tools = df.filter(pl.col("operation").is_in(["execute_tool", "retrieval"]))
    assert tools["total_tokens"].sum() == 0
    emb = df.filter((pl.col("operation") == "embeddings") & (pl.col("status") == "ok"))
    assert emb["output_tokens"].sum() == 0 and emb["input_tokens"].min() > 0
    chats = df.filter((pl.col("operation") == "chat") & (pl.col("status") == "ok"))
    assert chats["input_tokens"].median() > chats["output_tokens"].median() > 50
    assert chats["ttft_ms"].null_count() == 0
    assert (chats["ttft_ms"] <= chats["duration_ms"]).all()


def test_users_follow_a_power_law(df):
    per_user = (
        df.filter(pl.col("parent_span_id").is_null())
        .group_by("user_id")
        .len()
        .sort("len", descending=True)
    )
    top = per_user.head(max(1, per_user.height // 10))["len"].sum()
    assert top / per_user["len"].sum() > 0.35
    assert df["session_id"].n_unique() < df["trace_id"].n_unique()


def test_weekday_afternoons_are_busier_than_nights(df):
    roots = df.filter(pl.col("parent_span_id").is_null())
    hours = roots.with_columns(
        h=pl.col("start_time").dt.hour(), wd=pl.col("start_time").dt.weekday()
    )
    afternoon = hours.filter((pl.col("h").is_between(13, 17)) & (pl.col("wd") <= 5)).height / 5
    night = hours.filter((pl.col("h").is_between(1, 5)) & (pl.col("wd") <= 5)).height / 5
    weekend = hours.filter(pl.col("wd") >= 6).height
    weekday = hours.filter(pl.col("wd") <= 5).height
    assert afternoon > 2.5 * night
    assert weekend / 2 < 0.6 * weekday / 5


def test_latency_differs_by_model(df):
    chats = df.filter((pl.col("operation") == "chat") & (pl.col("status") == "ok"))
    ttft = dict(chats.group_by("model").agg(pl.col("ttft_ms").median()).iter_rows())
    assert ttft["claude-opus-4-1"] > 3 * ttft["gpt-4o-mini"]
    assert ttft["llama-3.1-8b-instant"] < ttft["gpt-4o-mini"]


def test_incident_brings_an_error_burst_and_a_latency_spike(df):
    inc = next(i for i in INCIDENTS if i.provider == "anthropic")
    start = inc.start(END)
    window = (pl.col("start_time") >= start) & (
        pl.col("start_time") < start + timedelta(minutes=inc.minutes)
    )
    anth = df.filter(pl.col("provider") == "anthropic")
    during, outside = anth.filter(window), anth.filter(~window)
    assert during.height > 20
    err_during = (during["status"] == "error").mean()
    err_outside = (outside["status"] == "error").mean()
    assert err_during > 0.3 > 0.05 > err_outside
    assert set(during.filter(pl.col("status") == "error")["error_type"].unique()) == {
        "overloaded_error"
    }
    ok = pl.col("status") == "ok"
    assert during.filter(ok)["ttft_ms"].median() > 2.5 * outside.filter(ok)["ttft_ms"].median()


def test_text_tags_and_metadata_are_present(df):
    chats = df.filter((pl.col("operation") == "chat") & (pl.col("status") == "ok"))
    assert chats["input_text"].null_count() == 0 and chats["output_text"].null_count() == 0
    assert chats["input_text"].str.len_chars().min() > 20
    assert df["tags"].list.len().min() >= 1
    assert {"app_version", "region"} <= set(df["metadata"][0].keys())
    assert df["quality_score"].drop_nulls().is_between(0, 1).all()


def test_every_model_in_the_catalog_is_used(df):
    assert set(df["model"].drop_nulls().unique()) == set(MODELS)
