"""FilterSpec: validation names the field, URL and JSON round trips are lossless."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observatory_core.filters.spec import FilterError, FilterSpec

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
text_chars = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
text = st.text(
    text_chars,
    min_size=1,
    max_size=20,
)
hexes = lambda n: st.text("0123456789abcdef", min_size=n, max_size=n)  # noqa: E731
number = st.one_of(st.none(), st.floats(0, 1e12, allow_nan=False), st.integers(0, 10**9))
times = st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC))


@st.composite
def specs(draw):
    kind = draw(st.sampled_from(["relative", "absolute", "open", "all"]))
    values = {}
    if kind == "relative":
        values["relative"] = draw(st.sampled_from(["15m", "90m", "24h", "7d", "365d"]))
    elif kind == "absolute":
        a, b = sorted(draw(st.lists(times, min_size=2, max_size=2, unique=True)))
        values.update(relative=None, start=a, end=b)
    elif kind == "open":
        values.update(relative=None, start=draw(times))
    else:
        values["relative"] = None
    values["trace_ids"] = tuple(draw(st.lists(hexes(32), max_size=2)))
    values["span_ids"] = tuple(draw(st.lists(hexes(16), max_size=2)))
    for name in (
        "session_ids",
        "user_ids",
        "providers",
        "models",
        "environments",
        "tags_any",
        "tags_all",
    ):
        values[name] = tuple(draw(st.lists(text, max_size=3)))
    values["operations"] = tuple(
        draw(st.lists(st.sampled_from(["chat", "embeddings", "other"]), max_size=2))
    )
    values["statuses"] = tuple(
        draw(st.lists(st.sampled_from(["ok", "error", "unset"]), max_size=2))
    )
    values["project_ids"] = tuple(draw(st.lists(st.integers(0, 10**6), max_size=3)))
    for name in ("duration_ms", "cost_usd", "total_tokens"):
        low, high = draw(number), draw(number)
        if low is not None and high is not None and low > high:
            low, high = high, low
        values[f"min_{name}"], values[f"max_{name}"] = low, high
    values["metadata"] = tuple(
        draw(st.lists(st.tuples(text, st.text(text_chars, max_size=10)), max_size=2))
    )
    values["search"] = draw(st.one_of(st.none(), text.filter(lambda s: len(s.strip()) >= 3)))
    return FilterSpec(**values)


@given(specs())
@settings(max_examples=300)
def test_url_round_trip_is_lossless(spec):
    assert FilterSpec.from_query_params(spec.to_query_params()) == spec


@given(specs())
@settings(max_examples=300)
def test_json_round_trip_is_lossless(spec):
    assert FilterSpec.from_json(spec.to_json()) == spec


def test_default_is_last_24_hours_and_has_a_short_link():
    spec = FilterSpec()
    assert spec.window(NOW) == (NOW - timedelta(hours=24), NOW)
    assert spec.to_query_params() == {}
    assert FilterSpec(relative=None).window(NOW) == (None, None)
    assert FilterSpec(relative=None).to_query_params() == {"relative": ["all"]}


def test_pinned_turns_relative_into_absolute():
    pinned = FilterSpec(relative="7d", models=("gpt-4o",)).pinned(NOW)
    assert (pinned.relative, pinned.start, pinned.end) == (None, NOW - timedelta(days=7), NOW)
    assert pinned.models == ("gpt-4o",)


@pytest.mark.parametrize(
    ("build", "field", "fix"),
    [
        (lambda: FilterSpec(relative="5m"), "relative", "15m to 365d"),
        (lambda: FilterSpec(relative="400d"), "relative", "15m to 365d"),
        (lambda: FilterSpec(relative="yesterday"), "relative", "like 15m"),
        (lambda: FilterSpec(relative=None, start=NOW, end=NOW - timedelta(1)), "time", "swap them"),
        (lambda: FilterSpec(relative="24h", start=NOW), "time", "not both"),
        (lambda: FilterSpec(relative=None, start=datetime(2026, 1, 1)), "start", "time zone"),
        (lambda: FilterSpec(min_cost_usd=5, max_cost_usd=1), "min_cost_usd", "swap them"),
        (lambda: FilterSpec(min_duration_ms=float("nan")), "min_duration_ms", "not a number"),
        (lambda: FilterSpec(max_total_tokens=1e300), "max_total_tokens", "between 0 and"),
        (lambda: FilterSpec(min_cost_usd=-1), "min_cost_usd", "between 0 and"),
        (lambda: FilterSpec(operations=("chat", "dance")), "operations", "choose from"),
        (lambda: FilterSpec(statuses=("failed",)), "statuses", "choose from"),
        (lambda: FilterSpec(trace_ids=("xyz",)), "trace_ids", "32 lowercase hex"),
        (lambda: FilterSpec(span_ids=("ABCDEF0123456789",)), "span_ids", "16 lowercase hex"),
        (lambda: FilterSpec(models=("",)), "models", "non-empty"),
        (lambda: FilterSpec(models=("x" * 501,)), "models", "at most 500"),
        (lambda: FilterSpec(models=tuple(f"m{i}" for i in range(201))), "models", "at most 200"),
        (lambda: FilterSpec(project_ids=("1",)), "project_ids", "whole number"),
        (lambda: FilterSpec(search="ab"), "search", "at least 3"),
        (lambda: FilterSpec(metadata=(("", "v"),)), "metadata", "non-empty key"),
        (lambda: FilterSpec(metadata=(("k", "a\x00b"),)), "metadata", "NUL"),
        (lambda: FilterSpec(user_ids=("a\x00",)), "user_ids", "NUL"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(build, field, fix):
    with pytest.raises(FilterError, match=f"Filter '{field}'.*{fix}"):
        build()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_cost_usd": ["lots"]}, "min_cost_usd"),
        ({"start": ["last tuesday"]}, "start"),
        ({"project_ids": ["1; DROP TABLE spans"]}, "project_ids"),
        ({"colour": ["red"]}, "colour"),
        ({"metadata": ["novalue"]}, "metadata"),
        ({"search": ["x" * 9000]}, "url"),
    ],
)
def test_bad_url_parameters_name_the_field(params, field):
    with pytest.raises(FilterError, match=f"Filter '{field}'"):
        FilterSpec.from_query_params(params)


def test_page_parameters_can_live_beside_the_filter():
    spec = FilterSpec.from_query_params(
        {"models": ["gpt-4o"], "cursor": ["abc"]}, ignore=frozenset({"cursor"})
    )
    assert spec.models == ("gpt-4o",)


def test_url_accepts_key_equals_value_metadata_and_z_times():
    spec = FilterSpec.from_query_params(
        {"metadata": ["region=eu-west-1"], "start": "2026-11-01T00:00:00Z"}
    )
    assert spec.metadata == (("region", "eu-west-1"),)
    assert spec.relative is None and spec.start == datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("{not json", "json"),
        ("[1, 2]", "json"),
        ('{"colour": "red"}', "colour"),
        ('{"models": "gpt"}', "models"),
    ],
)
def test_bad_json_names_the_problem(raw, field):
    with pytest.raises(FilterError, match=f"Filter '{field}'"):
        FilterSpec.from_json(raw)


def test_specs_hash_for_streamlit_caches_and_pickle():
    """Pages pass a MetricQuery (holding a FilterSpec) to st.cache_data, which hashes it."""
    import copy
    import hashlib
    import pickle

    from streamlit.runtime.caching.cache_type import CacheType
    from streamlit.runtime.caching.hashing import update_hash

    from observatory_core.metrics.query import MetricQuery

    def digest(value) -> str:
        hasher = hashlib.md5()
        update_hash(value, hasher, CacheType.DATA)
        return hasher.hexdigest()

    def query(**filters) -> MetricQuery:
        return MetricQuery(series=("request_count.count",), filters=FilterSpec(**filters))

    assert digest(query(models=("a",))) == digest(query(models=("a",)))
    assert digest(query(models=("a",))) != digest(query(models=("b",)))
    assert digest(query(min_cost_usd=1.0)) != digest(query(max_cost_usd=1.0))
    spec = FilterSpec(relative=None, models=("a",), min_cost_usd=2.0)
    assert pickle.loads(pickle.dumps(spec)) == spec == copy.deepcopy(spec)
    assert {spec: 1}[FilterSpec(relative=None, min_cost_usd=2.0, models=["a"])] == 1
