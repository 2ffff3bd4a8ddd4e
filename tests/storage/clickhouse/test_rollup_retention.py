"""`rollup_retention.expire_rollups` at many orgs and on an older server: thousands of orgs'
policies (a few with rows) make statements under the server's `max_query_size`, and exactly
the rows before each org's cutoff go (against polars on the rows written); a server before
ClickHouse 24.4 (no `lightweight_deletes_sync`) is sent `mutations_sync` instead, which it
knows, and its rows go all the same."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from observatory_core.storage.clickhouse import rollup_retention
from observatory_core.storage.clickhouse.cluster import LIGHTWEIGHT_SYNC
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.retention import Policy
from tests.helpers import span
from tests.storage.clickhouse.test_derived_retention import (
    GRAINS,
    _actors,
    _expected_actors,
    _expected_rollups,
    _frame,
    _rollups,
    _settle,
)

MAX_QUERY_SIZE = 262_144  # the server's default: a longer statement is refused unparsed
AGES = (1, 5, 20, 45, 100)  # days before now each org's spans started
REAL = {11: 10, 12: 40, 13: None}  # org -> rollup days (None: kept), the orgs with rows


class Recording:
    """The store's client, recording each statement with its settings; `server_settings` the
    server's own, or those given (another release's)."""

    def __init__(self, client: Any, server_settings: dict | None = None) -> None:
        self._client = client
        self.sent: list[tuple[str, dict]] = []
        own = client.server_settings
        self.server_settings = own if server_settings is None else server_settings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.sent.append((text, dict(kwargs.get("settings") or {})))
        return self._client.query(text, *args, **kwargs)

    def command(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.sent.append((text, dict(kwargs.get("settings") or {})))
        return self._client.command(text, *args, **kwargs)

    def deletes(self) -> list[tuple[str, dict]]:
        return [(t, s) for t, s in self.sent if t.startswith("DELETE")]


def before_24_4(client: Any) -> dict:
    """The server's settings without `lightweight_deletes_sync`, as a 24.3 server has them."""
    return {k: v for k, v in client.server_settings.items() if k != LIGHTWEIGHT_SYNC}


def _written(store, now: datetime) -> list[dict]:
    rows = [
        span(org, 1, now - timedelta(days=age, minutes=i), user_id=f"u{age}", session_id="s")
        for org in REAL
        for age in AGES
        for i in range(2)
    ]
    assert write_spans(store, rows) == len(rows)
    return rows


@pytest.fixture
def store(chdb_session, request):
    store = chdb_session.store(f"rollup_ret_{request.node.name[-12:].strip('[]-')}")
    own = store.client
    yield store
    store.client = own
    chdb_session.drop(store)


def _check_rows(store, rows: list[dict], now: datetime) -> None:
    sent = _frame(rows)
    cutoffs = {o: d for o, d in REAL.items() if d is not None}
    for table, grain in GRAINS.items():
        assert _rollups(store, table) == _expected_rollups(sent, grain, cutoffs, now), table
    assert _actors(store) == _expected_actors(sent, cutoffs, now)


def test_thousands_of_orgs_are_deleted_in_statements_under_the_query_size(store):
    """6,000 orgs' policies, 900 distinct rollup days: one statement for all of them was
    refused past `max_query_size`, and no org's rollups went."""
    now = datetime.now(UTC)
    rows = _written(store, now)
    synthetic = [Policy(10_000 + i, None, 1 + i % 900) for i in range(6_000)]
    policies = [Policy(o, None, d) for o, d in REAL.items()] + synthetic
    store.client = recording = Recording(store.client)
    got = rollup_retention.expire_rollups(store, policies, now)
    store.client = recording._client
    _settle(store)
    assert set(got) == {11, 12}  # the orgs with rows past their cutoff
    assert recording.sent and max(len(t) for t, _ in recording.sent) < MAX_QUERY_SIZE
    # every org's cutoff in some statement of each table
    assert len(recording.deletes()) >= 4
    _check_rows(store, rows, now)


@pytest.mark.parametrize("server", ["24.3", "current"])
def test_a_server_without_lightweight_deletes_sync_is_sent_mutations_sync(store, server):
    now = datetime.now(UTC)
    rows = _written(store, now)
    known = before_24_4(store.client) if server == "24.3" else None
    store.client = recording = Recording(store.client, known)
    rollup_retention.expire_rollups(store, [Policy(o, None, d) for o, d in REAL.items()], now)
    store.client = recording._client
    deletes = recording.deletes()
    assert len(deletes) == 4  # the three grains and the hours' actors
    want = {"mutations_sync": 0} if server == "24.3" else {LIGHTWEIGHT_SYNC: 0}
    assert all(s == want for _, s in deletes), deletes
    _settle(store)
    _check_rows(store, rows, now)


def test_a_server_whose_settings_the_driver_did_not_fetch_is_asked_once(store):
    store.client = recording = Recording(store.client, {})
    assert store.knows(LIGHTWEIGHT_SYNC) and store.knows(LIGHTWEIGHT_SYNC)
    asked = [t for t, _ in recording.sent if "system.settings" in t]
    assert len(asked) == 1
    assert not store.knows("no_such_setting_anywhere")


@pytest.mark.parametrize("stuck", ["spans", "rollup_1min"])
def test_the_re_stamp_and_the_rollup_delete_run_and_are_said_each_on_its_own(
    store, monkeypatch, stuck, tmp_path
):
    """A mutation that keeps failing on the spans holds back the re-stamp, not the rollup
    delete; one on a rollup table holds back that table's deletes, not the re-stamp nor the
    other tables'. Each is said with its reason and the statement that kills it; the re-stamp
    says the trace totals' rows it sends as well as the spans'."""
    from contextlib import contextmanager

    from observatory_core.runtime.retention import restamp_span_store
    from observatory_core.storage.clickhouse import current, restamp
    from observatory_core.storage.engine import get_engine
    from observatory_core.storage.migrate import upgrade

    now = datetime.now(UTC)
    rows = _written(store, now)
    # org 11: spans 300 days from now on (its stored spans and totals, kept forever, stale)
    rules = {o: Policy(o, 300 if o == 11 else None, d) for o, d in REAL.items()}

    @contextmanager
    def org_stamp(engine, org_id):
        yield restamp.stamps_of([rules[org_id]])[org_id]

    monkeypatch.setattr(current, "span_store", lambda: store)
    monkeypatch.setattr("observatory_core.runtime.retention.policies", lambda conn: rules)
    monkeypatch.setattr("observatory_core.runtime.retention.org_stamp", org_stamp)
    column = "retain_days" if stuck == "spans" else "span_count"
    store.client.command(
        f"ALTER TABLE {store.table(stuck)} UPDATE {column} = "
        f"{column} + throwIf({column} >= 0, 'boom') WHERE 1",
        settings={"mutations_sync": 0},
    )
    try:
        for _ in range(200):  # the engine tries it in the background
            if restamp.failing(store, (stuck,)):
                break
            time.sleep(0.05)
        engine = get_engine(f"sqlite:///{tmp_path / 'settings.db'}")  # the trail's too
        upgrade(engine)
        said = restamp_span_store(engine, now=now)
        assert said.failed and "boom" in said.said and "keeps failing" in said.said
        assert "Deleting" in said.said and "rollup rows of 2 org(s)" in said.said
        if stuck == "spans":
            assert restamp.kill_statement(store) in said.said
            assert "Re-stamping" not in said.said
        else:
            assert rollup_retention.kill(store) in said.said
            assert "Re-stamping 10 stored spans of 1 org(s)" in said.said
            assert "trace totals rows of 1 org(s)" in said.said
    finally:
        store.client.command(
            f"KILL MUTATION WHERE database = '{store.database}' AND table = '{stuck}' SYNC"
        )
    _settle(store)
    # the tables not held back lost their rows past the cutoffs
    sent = _frame(rows)
    cutoffs = {o: d for o, d in REAL.items() if d is not None}
    for table, grain in GRAINS.items():
        if table != stuck:
            assert _rollups(store, table) == _expected_rollups(sent, grain, cutoffs, now), table
