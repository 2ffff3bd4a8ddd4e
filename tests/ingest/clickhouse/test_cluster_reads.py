"""Ingest's reads of stored spans around a batch on a cluster (docs/scale.md, "A cluster",
"Writes"): the twins' pool, a paired span's instance and a wrapper's stored tree go to the
replicas the inserts go to (`cluster.SAME_REPLICA`), as the writer's check does. A recording
client (`tests/storage/clickhouse/test_cluster.py`) stands in for the server and answers each
read with a stored span, so every read runs and its answer is used; on one node the same calls
send no replica setting."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.ingest.span_store_twins import set_aside_twins
from observatory_core.ingest.to_clickhouse import settle_wrappers
from tests.storage.clickhouse.conftest import demo_rows
from tests.storage.clickhouse.test_cluster import ONE_NODE, URL, _store

SAME = {"load_balancing": "in_order", "prefer_localhost_replica": 0}
POOL = "UNION ALL"  # the twins' pool read: one statement of two key-bounded reads
INSTANCE = "JSONExtractRaw(attributes, 'resource', 'service.instance.id')"
TREE = "WHERE org_id = %(org)s AND trace_id IN %(traces)s"


def _call() -> dict:
    """A new LLM call span of an instrumented scope, from a resource that names its instance."""
    row = next(r for r in demo_rows(50, seed=3) if r["operation"] == "chat")
    return {
        **row,
        "scope_name": "openinference",
        "attributes": {"resource": {"service.instance.id": "pod-1"}},
    }


@pytest.mark.parametrize("url", [URL, ONE_NODE])
def test_ingest_reads_stored_spans_from_the_replicas_the_inserts_go_to(url):
    call = _call()
    now = call["start_time"] + timedelta(minutes=1)
    # stored: the same call sent by another library, in a trace of its own (a twin)
    twin = (
        call["org_id"],
        call["project_id"],
        "f" * 32,
        "a" * 16,
        None,
        call["start_time"],
        call["end_time"],
        call["service_name"],
        "opentelemetry.instrumentation.openai",
        call["input_tokens"],
        call["output_tokens"],
        call["model"],
    )
    # a new wrapper span whose stored child is an LLM call (it stops being one itself)
    wrapper = {
        **call,
        "span_id": "b" * 16,
        "parent_span_id": None,
        "operation": "other",
        "llm_call": True,
        "scope_name": None,
    }
    child = (wrapper["trace_id"], "c" * 16, wrapper["span_id"], "chat", call["model"], 10, 5)
    # its instance, then what the keeper rule compares (richness, copied fields, cost)
    details = (False,) * 5 + ("openai", call["model"], None, None, 0.001, 0.002, 0.003, "priced")
    store, client = _store(url, {POOL: [twin], INSTANCE: [('"pod-1"', *details)], TREE: [child]})

    batch = [call]
    assert set_aside_twins(store, batch, frozenset(), now) == 1
    assert (call["duplicate_of"], call["duplicate_trace_id"]) == ("a" * 16, "f" * 32)
    assert settle_wrappers(store, [wrapper]) == 1 and wrapper["llm_call"] is False

    reads = client.of("query")
    kinds = [next(k for k in (POOL, INSTANCE, TREE) if k in text) for text, _ in reads]
    assert kinds == [POOL, INSTANCE, TREE]
    for text, settings in reads:
        assert f"FROM {store.table('spans')} " in text  # the Distributed table on a cluster
        if url == URL:
            assert {k: settings.get(k) for k in SAME} == SAME, text
        else:
            assert not set(SAME) & set(settings), text
    assert client.of("command") == [] and client.of("insert") == []
