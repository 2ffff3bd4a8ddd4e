"""Keys, projects, rejections and the group-commit writer, on both databases."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.ingest import writer as writer_module
from observatory_core.ingest.apikeys import BadKey, create_key, revoke_key
from observatory_core.ingest.otlp import BadPayload
from observatory_core.ingest.receiver import Receiver
from observatory_core.ingest.writer import BatchWriter, Overloaded, ShuttingDown
from tests.helpers import admin_scope, all_spans, assert_rollups_match_rebuild, make_org
from tests.ingest.conftest import JSON, PROTOBUF, sample
from tests.ingest.test_mapping import NOW, kv, one_span_request


def headers(key: str | None, kind: str = PROTOBUF, **extra) -> dict[str, str]:
    out = {"content-type": kind, **extra}
    if key:
        out["authorization"] = f"Bearer {key}"
    return out


def store(engine, decoded) -> None:
    writer = BatchWriter(engine)
    writer.submit(decoded.rows).result(timeout=30)
    writer.stop()


def test_samples_are_stored_once_and_rollups_follow(org_key):
    engine, org_id, project_ids, key = org_key
    receiver = Receiver(engine)
    for name, kind in [("genai.pb", PROTOBUF), ("openinference.json", JSON)]:
        store(engine, receiver.decode(sample(name), headers(key, kind), now=NOW))
    store(engine, receiver.decode(sample("genai.json"), headers(key, JSON), now=NOW))  # re-sent
    df = all_spans(engine)
    assert df.height == 10 and df["trace_id"].n_unique() == 2
    assert set(df["project_id"]) == {project_ids[1]}  # no project named: the org's default
    assert df.filter(pl.col("status") == "error").height == 2
    assert df["input_tokens"].sum() == 2 * (412 + 1288 + 37)
    assert_rollups_match_rebuild(engine)


@pytest.mark.parametrize(
    ("make_key", "message"),
    [
        (lambda e, o: None, "No API key"),
        (lambda e, o: "sk-not-ours", "keys start with 'obs_'"),
        (lambda e, o: "obs_" + "x" * 43, "Unknown API key"),
        (lambda e, o: create_key(e, admin_scope(o), "reader", scopes=("read",)), "'ingest' scope"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(org_key, make_key, message):
    engine, org_id, _, _ = org_key
    with pytest.raises(BadKey, match=message):
        Receiver(engine).decode(sample("genai.pb"), headers(make_key(engine, org_id)))


def test_a_revoked_key_stops_at_once(org_key):
    engine, org_id, _, key = org_key
    receiver = Receiver(engine)
    assert receiver.decode(sample("genai.pb"), headers(key), now=NOW).rows
    from observatory_core.ingest.apikeys import list_keys

    (listed,) = list_keys(engine, admin_scope(org_id))
    assert listed["last_used_at"] is not None and key.startswith(listed["prefix"])
    revoke_key(engine, admin_scope(org_id), listed["id"])
    with pytest.raises(BadKey, match="revoked"):
        receiver.decode(sample("genai.pb"), headers(key))


def test_project_comes_from_the_key_or_the_resource(org_key):
    engine, org_id, project_ids, _ = org_key
    bound = create_key(engine, admin_scope(org_id), "bound", project_id=project_ids[0])
    (row,) = Receiver(engine).decode(one_span_request({}), headers(bound), now=NOW).rows
    assert row["project_id"] == project_ids[0]

    def named(slug: str) -> bytes:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest.FromString(one_span_request({}))
        request.resource_spans[0].resource.attributes.append(kv("observatory.project", slug))
        return request.SerializeToString()

    org_wide = create_key(engine, admin_scope(org_id), "org wide")
    (row,) = Receiver(engine).decode(named("support-bot"), headers(org_wide), now=NOW).rows
    assert row["project_id"] == project_ids[0]
    decoded = Receiver(engine).decode(named("nope"), headers(org_wide), now=NOW)
    assert decoded.rows == [] and decoded.rejected == 1
    assert "project 'nope'" in decoded.reasons[0]


def test_another_orgs_project_cannot_be_bound_to_a_key(org_key):
    engine, org_id, _, _ = org_key
    other_org, other_projects = make_org(engine, "globex", ("secret",))
    from observatory_core.base.errors import UserError

    with pytest.raises(UserError, match="No project"):
        create_key(engine, admin_scope(org_id), "sneaky", project_id=other_projects[0])


T0 = int(NOW.timestamp() * 1e9)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"trace_id": b""}, "trace_id must be 16 bytes"),
        ({"span_id": bytes(8)}, "span_id must be 8 bytes"),
        ({"parent_span_id": b"\x01\x02"}, "parent_span_id must be empty or 8 bytes"),
        ({"start_time_unix_nano": 0}, "start time is missing"),
        ({"start_time_unix_nano": 5, "end_time_unix_nano": 10}, "not plausible"),
        ({"start_time_unix_nano": T0 + 10**15, "end_time_unix_nano": T0 + 10**15}, "not plausible"),
        ({"start_time_unix_nano": T0, "end_time_unix_nano": T0 - 1}, "ends before it starts"),
    ],
)
def test_impossible_spans_are_rejected_and_the_rest_kept(org_key, fields, reason):
    engine, _, _, key = org_key
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(sample("genai.pb"))
    bad = request.resource_spans[0].scope_spans[0].spans[0]
    for name, value in fields.items():
        setattr(bad, name, value)
    decoded = Receiver(engine).decode(request.SerializeToString(), headers(key), now=NOW)
    assert decoded.rejected == 1 and len(decoded.rows) == 4
    assert reason in decoded.reasons[0] and "chat gpt-4o-mini" in decoded.reasons[0]


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"gen_ai.usage.input_tokens": -5}, "between 0 and"),
        ({"gen_ai.usage.input_tokens": 10**12}, "between 0 and"),
        ({"gen_ai.usage.output_tokens": "lots"}, "whole number"),
        ({"gen_ai.usage.cost": "nan"}, "0 or more USD"),
    ],
)
def test_absurd_numbers_are_rejected(org_key, attributes, reason):
    engine, _, _, key = org_key
    decoded = Receiver(engine).decode(one_span_request(attributes), headers(key), now=NOW)
    assert decoded.rejected == 1 and reason in decoded.reasons[0]


@pytest.mark.parametrize(
    ("body", "extra", "status", "message"),
    [
        (b"\xff\xff\xff garbage", {}, 400, "not a valid OTLP"),
        (sample("genai.json")[:200], {"content-type": JSON}, 400, "not valid JSON"),
        (b'{"resourceSpans": 7}', {"content-type": JSON}, 400, "not OTLP/JSON"),
        (b"[1, 2]", {"content-type": JSON}, 400, "must be an object"),
        (sample("genai.pb"), {"content-type": "text/plain"}, 415, "is not supported"),
        (sample("genai.pb"), {"content-encoding": "br"}, 415, "use gzip"),
        (sample("genai.pb"), {"content-encoding": "gzip"}, 400, "not valid gzip"),
    ],
)
def test_bad_bodies_get_a_status_and_a_clear_message(org_key, body, extra, status, message):
    engine, _, _, key = org_key
    with pytest.raises(BadPayload, match=message) as caught:
        Receiver(engine).decode(body, {**headers(key), **extra})
    assert caught.value.status == status


def test_gzip_bombs_and_huge_bodies_are_413(org_key):
    import gzip

    engine, _, _, key = org_key
    receiver = Receiver(engine, max_body_bytes=2**20, max_inflated_bytes=4 * 2**20)
    bomb = gzip.compress(b"\0" * (8 * 2**20))
    with pytest.raises(BadPayload) as caught:
        receiver.decode(bomb, headers(key, **{"content-encoding": "gzip"}))
    assert caught.value.status == 413 and "uncompressed" in caught.value.message
    with pytest.raises(BadPayload) as caught:
        receiver.decode(b"\0" * (2**20 + 1), headers(key))
    assert caught.value.status == 413 and "batch size" in caught.value.message
    ok = receiver.decode(
        gzip.compress(sample("genai.pb")), headers(key, **{"content-encoding": "gzip"}), now=NOW
    )
    assert len(ok.rows) == 5


def test_writer_turns_work_away_when_full_and_drains_on_stop(org_key, monkeypatch):
    engine, _, _, key = org_key
    gate = threading.Event()
    real_write = writer_module.write_spans

    def slow_write(*args, **kwargs):
        gate.wait(10)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(writer_module, "write_spans", slow_write)
    rows = Receiver(engine).decode(sample("genai.pb"), headers(key), now=NOW).rows
    writer = BatchWriter(engine, max_pending=12)
    first = writer.submit(rows[:4])
    second = writer.submit(rows[4:])
    with pytest.raises(Overloaded):
        writer.submit(rows * 2)
    stopper = threading.Thread(target=writer.stop)
    stopper.start()
    with pytest.raises(ShuttingDown):
        for _ in range(100):
            writer.submit(rows[:1])
    gate.set()
    stopper.join(10)
    assert first.result(1) == [] and second.result(1) == []  # nothing refused
    assert all_spans(engine).height == 5


def test_a_span_the_database_refuses_costs_only_itself(org_key, monkeypatch):
    """Three requests grouped into one transaction; the second holds a row the database
    refuses (NOT NULL) between two good ones: only that row is lost, and it is named."""
    engine, _, _, key = org_key
    good = Receiver(engine).decode(sample("genai.pb"), headers(key), now=NOW).rows
    bad = dict(good[0], span_id="f" * 16, name="poison", operation=None)
    extra = [dict(good[0], span_id=f"{i:016x}") for i in (0xA1, 0xA2)]
    gate = threading.Event()
    real_write = writer_module.write_spans
    monkeypatch.setattr(
        writer_module, "write_spans", lambda *a, **k: gate.wait(10) and real_write(*a, **k)
    )
    writer = BatchWriter(engine)
    futures = [
        writer.submit(good[:1]),
        writer.submit([extra[0], bad, extra[1]]),
        writer.submit(good[1:]),
    ]
    gate.set()
    assert futures[0].result(10) == [] and futures[2].result(10) == []
    ((row, reason),) = futures[1].result(10)
    assert row["name"] == "poison" and "operation" in reason  # either driver's message
    writer.stop()
    df = all_spans(engine)
    assert df.height == 7 and "poison" not in set(df["name"])
    assert {"0" * 14 + "a1", "0" * 14 + "a2"} <= set(df["span_id"])
    assert_rollups_match_rebuild(engine)


def test_spans_long_ago_and_now_land_in_the_right_buckets(org_key):
    engine, _, _, key = org_key
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(sample("genai.pb"))
    old = request.resource_spans[1].scope_spans[0].spans[0]
    shift = int(timedelta(days=40).total_seconds() * 1e9)
    old.start_time_unix_nano -= shift
    old.end_time_unix_nano -= shift
    store(engine, Receiver(engine).decode(request.SerializeToString(), headers(key), now=NOW))
    df = all_spans(engine)
    assert df.height == 5
    assert df["start_time"].min() < datetime.now(UTC) - timedelta(days=30)
    assert_rollups_match_rebuild(engine)


def test_the_queue_depth_is_down_before_a_request_hears_back(org_key, monkeypatch):
    """The /ops/metrics depth is read after a 200: it must already count the written spans
    out (a done-callback runs where the writer sets the result, so this cannot race)."""
    engine, _, _, key = org_key
    gate = threading.Event()
    real_write = writer_module.write_spans
    monkeypatch.setattr(
        writer_module, "write_spans", lambda *a, **k: gate.wait(10) and real_write(*a, **k)
    )
    rows = Receiver(engine).decode(sample("genai.pb"), headers(key), now=NOW).rows
    writer = BatchWriter(engine)
    seen: list[int] = []
    future = writer.submit(rows)
    future.add_done_callback(lambda _: seen.append(writer.pending))
    gate.set()
    assert future.result(30) == []
    writer.stop()
    assert seen == [0] and all_spans(engine).height == len(rows)


def test_requests_still_decoding_are_written_with_the_first(org_key, monkeypatch):
    """The writer takes a request queued while another is still being decoded in one group
    with it (the span store pays a fixed cost per group); a request whose decoding ends
    without rows lets it go at once; the clients of the last group are waited for as they
    post again, and one that does not come back is not (past `LINGER_S`). Groups seen
    through the writer's own write."""
    engine, _, _, key = org_key
    monkeypatch.setattr(writer_module, "LINGER_S", 60.0)  # only the arrivals end the wait
    groups: list[int] = []
    real_write = writer_module.write_spans

    def counted(eng, rows, **kwargs):
        groups.append(len(rows))
        return real_write(eng, rows, **kwargs)

    monkeypatch.setattr(writer_module, "write_spans", counted)
    rows = Receiver(engine).decode(sample("genai.pb"), headers(key), now=NOW).rows
    writer = BatchWriter(engine)
    with writer.arriving() as first, writer.arriving() as second:
        done = [first.submit(rows[:2])]
        time.sleep(0.5)  # the writer has woken to the first rows (without the wait: taken)
        with writer.arriving():
            pass  # a request refused before its rows: not waited for
        done.append(second.submit(rows[2:]))
    assert [d.result(30) for d in done] == [[], []]
    # the last group's two clients post again one after the other: written together
    again = [writer.submit(rows[:1])]
    time.sleep(0.5)
    again.append(writer.submit(rows[1:2]))
    assert [d.result(30) for d in again] == [[], []]
    monkeypatch.setattr(writer_module, "LINGER_S", 0.05)
    with writer.arriving() as alone:  # the other did not come back: written after the wait
        assert alone.submit(rows[:1]).result(30) == []
    writer.stop()
    assert groups == [len(rows), 2, 1]
    assert all_spans(engine).height == len(rows)  # sent again: stored once


def test_a_group_cut_in_two_is_written_whole_when_its_clients_post_again(org_key, monkeypatch):
    """Four clients of which one was written alone (the writer took it before the others
    came) are waited for together when they post again: the writer waits for as many
    requests as were in flight since its last group, not for that group's size alone, which
    kept the clients in two groups for good (each half posting again while the other half
    is written). Groups seen through the writer's own write."""
    engine, _, _, key = org_key
    monkeypatch.setattr(writer_module, "LINGER_S", 60.0)  # only the requests end the wait
    rows = Receiver(engine).decode(sample("genai.pb"), headers(key), now=NOW).rows
    assert len(rows) >= 4
    groups: list[int] = []
    gate = threading.Event()
    real_write = writer_module.write_spans

    def counted(eng, batch, **kwargs):
        groups.append(len(batch))
        if len(groups) == 1:
            gate.wait(30)  # the others post while the first is written
        return real_write(eng, batch, **kwargs)

    monkeypatch.setattr(writer_module, "write_spans", counted)
    # one writer thread: with PostgreSQL's two, the other could take a request alone
    writer = BatchWriter(engine, threads=1)
    try:
        first = [writer.submit(rows[:1])]
        deadline = time.monotonic() + 30
        while not groups and time.monotonic() < deadline:  # taken alone: nothing else in flight
            time.sleep(0.01)
        first += [writer.submit(rows[i : i + 1]) for i in (1, 2, 3)]
        gate.set()
        assert [d.result(30) for d in first] == [[]] * 4
        again = []
        for i in range(4):  # all four post again, one after the other
            again.append(writer.submit(rows[i : i + 1]))
            time.sleep(0.2)
        assert [d.result(30) for d in again] == [[]] * 4
    finally:
        gate.set()
        writer.stop()
    assert groups == [1, 3, 4]
    assert all_spans(engine).height == len(rows[:4])  # sent again: stored once


def test_two_writer_threads_take_no_empty_group(org_key, monkeypatch):
    """With two writer threads (PostgreSQL's), the one that waited while the other took the
    whole queue waits for the next request again: it took an empty group (a write of nothing,
    and the last group's size 0, which turned the wait for its clients off)."""
    engine, _, _, key = org_key
    monkeypatch.setattr(writer_module, "LINGER_S", 0.3)
    rows = Receiver(engine).decode(sample("genai.pb"), headers(key), now=NOW).rows
    writer = BatchWriter(engine, threads=2)
    taken: list[int] = []
    real_write = writer._write

    def spy(group):
        taken.append(len(group))
        return real_write(group)

    writer._write = spy
    try:
        for _ in range(3):
            with writer.arriving() as first, writer.arriving() as second:
                done = [first.submit(rows[:1])]
                time.sleep(0.1)  # both threads awake, waiting for the second request
                done.append(second.submit(rows[1:2]))
            assert [d.result(30) for d in done] == [[], []]
        time.sleep(0.5)  # past the wait: an empty group would have been taken by now
    finally:
        writer.stop()
    assert 0 not in taken and sum(taken) == 6


class _TimedWriter(BatchWriter):
    """A writer whose write takes `WRITE_S` and stores nothing: the groups alone."""

    WRITE_S = 0.1

    def __init__(self, threads: int) -> None:
        self.groups: list[int] = []
        super().__init__(None, threads=threads)

    def _write(self, group):
        self.groups.append(len(group))
        time.sleep(self.WRITE_S)
        return [[] for _ in group]


def test_two_writer_threads_do_not_wait_for_the_others_clients(monkeypatch):
    """With two writer threads (PostgreSQL's), the requests of the group the other thread is
    writing cannot post again before that write ends: a group waits only for those it could
    take. Counting them, a client posting again waited its whole linger (here 60 s) for the
    other thread's client, still being written."""
    monkeypatch.setattr(writer_module, "LINGER_S", 60.0)
    monkeypatch.setattr(writer_module, "LINGER_MAX_S", 60.0)
    gates = [threading.Event(), threading.Event()]

    class Gated(_TimedWriter):
        def _write(self, group):
            self.groups.append(len(group))
            if len(self.groups) <= len(gates):
                gates[len(self.groups) - 1].wait(30)
            return [[] for _ in group]

    writer = Gated(threads=2)

    def taken(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(writer.groups) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    try:
        first = writer.submit([{}])
        taken(1)  # one thread writes the first client's request
        second = writer.submit([{}])
        taken(2)  # the other thread writes the second's
        gates[0].set()
        assert first.result(10) == []
        # the first client posts again while the second's request is still being written
        assert writer.submit([{}]).result(10) == []
    finally:
        for gate in gates:
            gate.set()
        writer.stop()
    assert second.result(10) == []
    assert writer.groups == [1, 1, 1]


def test_a_request_whose_waiter_left_does_not_stop_the_writer():
    """A request's future cancelled before its answer (its route's task cancelled, as on a
    forced shutdown) is not answered; the writer thread goes on and the next request is
    answered (setting the cancelled future raised and ended the only writer thread)."""
    writer = _TimedWriter(threads=1)
    try:
        gone = writer.submit([{}])
        assert gone.cancel()
        assert writer.submit([{}]).result(10) == []
    finally:
        writer.stop()
    assert writer.groups in ([1, 1], [2])
