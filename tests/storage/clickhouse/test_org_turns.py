"""The span store's write turn across processes (`org_turns.py`), on SQLite and PostgreSQL
`DATABASE_URL`s: the ingest writer holds its batch's orgs' turns around the "already stored"
check and the insert, and a second real process holding an org's turn makes that org's writes
wait, and no other org's. (One chDB folder cannot be opened by two processes, so the second
process holds the turn itself rather than writing spans.)"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.ingest import to_clickhouse
from observatory_core.storage.clickhouse import org_turns
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.engine import get_engine
from observatory_core.storage.stores import _turns as store_turns
from tests.storage.clickhouse.conftest import demo_rows

ROOT = Path(__file__).resolve().parents[3]
HOLDER = """
import sys, time
from observatory_core.storage.engine import get_engine
from observatory_core.storage.clickhouse.org_turns import org_turns
with org_turns(get_engine(sys.argv[1]))([int(sys.argv[2])]):
    print("held", flush=True)
    sys.stdin.readline()
    print(time.time(), flush=True)
"""


def _rows(org_id: int, seed: int, count: int = 40) -> list[dict]:
    return [dict(r, org_id=org_id) for r in demo_rows(count, seed=seed)]


def held(engine, org_id: int) -> bool:
    """Whether some connection or process holds `org_id`'s turn, seen from outside it."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return bool(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    f"AND classid = {store_turns.TURNS} AND objid = {org_id} AND objsubid = 2"
                ).scalar()
            )
    database = Path(engine.url.database)
    path = database.parent / (database.name + store_turns.SUFFIX) / f"org-{org_id}"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:  # a lock on another open file is another holder's, even in this process
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class Spy:
    """The store's client, noting at each statement whether each watched org's turn is held."""

    def __init__(self, client, engine, orgs: tuple[int, ...]) -> None:
        self._client, self._engine, self._orgs = client, engine, orgs
        self.seen: list[tuple[str, float, dict[int, bool]]] = []
        self.statements: list[str] = []  # each one's SQL, or the table inserted into

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name not in ("query", "insert", "command"):
            return attr

        def statement(*args, **kwargs):
            self.seen.append((name, time.time(), {o: held(self._engine, o) for o in self._orgs}))
            self.statements.append(str(args[0]) if args else "")
            return attr(*args, **kwargs)

        return statement


@pytest.fixture
def engine(db_url):
    to_clickhouse.forget_settings()
    return get_engine(db_url)


@pytest.fixture
def org(engine):
    """The first of this database's orgs: the chDB store is the module's, shared by both."""
    return 70 if engine.dialect.name == "sqlite" else 80


class Holder:
    """Another process holding `org_id`'s turn until `release()`."""

    def __init__(self, db_url: str, org_id: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, db_url, str(org_id)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> float:
        """Tell it to let go; answers the time just before it did."""
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        let_go = float(self.proc.stdout.readline())
        assert self.proc.wait(timeout=30) == 0
        return let_go

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_the_writer_holds_its_orgs_turns_around_the_check_and_the_insert(engine, org, chdb_store):
    rows = _rows(org + 1, 31) + _rows(org + 2, 32)
    spy = Spy(chdb_store.client, engine, (org + 1, org + 2))
    store = SpanStore(chdb_store.target, spy)
    assert to_clickhouse.write_spans(store, engine, rows) == len(rows)
    kinds = [name for name, _, _ in spy.seen]
    assert "query" in kinds and kinds[-1] == "insert"  # the stored-span check, ..., the insert
    assert all(orgs == {org + 1: True, org + 2: True} for _, _, orgs in spy.seen)
    assert not held(engine, org + 1) and not held(engine, org + 2)
    # sent again: the check finds them all, under the turn, and nothing is inserted
    spy.seen.clear()
    assert to_clickhouse.write_spans(store, engine, rows) == 0
    assert spy.seen and all(orgs == {org + 1: True, org + 2: True} for _, _, orgs in spy.seen)


def test_another_process_holding_an_orgs_turn_holds_back_that_org_only(
    engine, org, db_url, chdb_store, monkeypatch
):
    monkeypatch.setattr(org_turns, "WAIT_S", 60.0)  # a broken turn fails the test, not hangs
    holder = Holder(db_url, org + 3)
    try:
        other = _rows(org + 4, 33)
        assert to_clickhouse.write_spans(chdb_store, engine, other) == len(other)
        assert holder.proc.poll() is None  # written while the first org's turn was still held

        spy = Spy(chdb_store.client, engine, ())
        store = SpanStore(chdb_store.target, spy)
        mine = _rows(org + 3, 34)
        done: list[int] = []
        writer = threading.Thread(
            target=lambda: done.append(to_clickhouse.write_spans(store, engine, mine))
        )
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive() and spy.seen == []  # not even the stored-span check yet
        let_go = holder.release()
        writer.join(timeout=60)
        assert done == [len(mine)]
        assert spy.seen[0][1] >= let_go
    finally:
        holder.kill()
    ((stored,),) = chdb_store.client.query(
        f"SELECT count() FROM {chdb_store.table('spans')} WHERE org_id IN ({org + 3}, {org + 4})"
    ).result_rows
    assert stored == len(mine) + len(other)


def test_a_turn_held_past_the_wait_is_answered_unavailable(engine, org, db_url, monkeypatch):
    monkeypatch.setattr(org_turns, "WAIT_S", 0.3)
    holder = Holder(db_url, org + 6)
    try:
        turns = org_turns.org_turns(engine)
        with (
            pytest.raises(DatabaseUnavailable, match=rf"write turn of org {org + 6} .*retry"),
            turns([org + 6, org + 5]),
        ):
            pass
        assert not held(engine, org + 5)  # taken before the one that timed out, and let go
        with org_turns.org_turns(engine)([org + 5]):
            assert held(engine, org + 5)
    finally:
        holder.kill()


def test_migrate_spans_takes_the_orgs_turn_around_its_writes(engine, chdb_store):
    from observatory_core.storage.clickhouse.migrate_spans import migrate_spans
    from tests.helpers import END, make_org, span, write

    org_id, (project_id,) = make_org(engine, f"turns-{engine.dialect.name}")
    rows = [span(org_id, project_id, END - timedelta(minutes=i)) for i in range(30)]
    assert write(engine, rows) == len(rows)
    spy = Spy(chdb_store.client, engine, (org_id,))
    store = SpanStore(chdb_store.target, spy)
    report = migrate_spans(engine, store, org_ids=[org_id], batch=20)
    assert report.copied == len(rows)
    spans_table = f"{chdb_store.table('spans')}"
    on_spans = [
        turns
        for (_, _, turns), text in zip(spy.seen, spy.statements, strict=True)
        if text == spans_table or f"{spans_table} " in text
    ]
    assert len(on_spans) >= 4  # two pages: a check and an insert each
    assert all(turns == {org_id: True} for turns in on_spans)


def _pg_with(db_url: str, **options: int):
    """`db_url`'s PostgreSQL database with session settings an operator may have set."""
    from sqlalchemy import create_engine

    flags = " ".join(f"-c {name}={value}" for name, value in options.items())
    return create_engine(db_url, connect_args={"options": flags})


def test_a_turn_outlasts_the_servers_idle_in_transaction_timeout(engine, org, db_url):
    """The turn's transaction is idle while the span store inserts: a server's
    `idle_in_transaction_session_timeout` must not end it (and let go of the lock) mid-insert."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's setting")
    strict = _pg_with(db_url, idle_in_transaction_session_timeout=300)
    try:
        with org_turns.org_turns(strict)([org + 7]):
            time.sleep(1.0)  # an insert into the span store
            assert held(engine, org + 7)
    finally:
        strict.dispose()


def test_only_a_lock_wait_is_said_to_be_another_writers_turn(engine, org, db_url):
    """Another failure while taking the turn (here the server's statement timeout) is raised as
    what it is, not as a turn held for over 120 s."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's SQLSTATE")
    from sqlalchemy.exc import DBAPIError

    holder = Holder(db_url, org + 8)
    strict = _pg_with(db_url, statement_timeout=300)
    try:
        with (
            pytest.raises(DBAPIError, match="statement timeout"),
            org_turns.org_turns(strict)([org + 8]),
        ):
            pass
    finally:
        strict.dispose()
        holder.kill()


def test_the_bins_rebuild_takes_each_orgs_turn_around_its_insert(engine, org, chdb_store):
    """`clickhouse-rebuild-rollups` computes a day's bins from its spans and inserts the
    difference: under the org's turn, so no writer's insert or top-up of the same rows
    interleaves (it races the gap filler on the latency bins otherwise)."""
    from observatory_core.storage.clickhouse.rebuild import rebuild_bins

    mine = org + 9
    # a minute row whose latencies have no bins (as before schema version 3)
    chdb_store.client.command(
        f"INSERT INTO {chdb_store.table('rollup_1min')} (org_id, bucket_start, span_count, "
        f"duration_count) VALUES ({mine}, '2026-11-19 10:00:00', 1, 1)"
    )
    spy = Spy(chdb_store.client, engine, (mine,))
    store = SpanStore(chdb_store.target, spy)
    try:
        rebuild_bins(store, turn=org_turns.org_turns(engine))
    finally:  # the row has no spans to give it bins: the other database's run must not see it
        chdb_store.client.command(
            f"ALTER TABLE {chdb_store.table('rollup_1min')} DELETE WHERE org_id = {mine}",
            settings={"mutations_sync": 2},
        )
    inserts = [
        turns
        for (kind, _, turns), text in zip(spy.seen, spy.statements, strict=True)
        if kind == "command" and text.startswith("INSERT INTO")
    ]
    assert inserts and all(turns == {mine: True} for turns in inserts)
    assert not held(engine, mine)


def test_turns_that_cannot_be_kept_beside_the_sqlite_file_are_a_setup_error(tmp_path):
    """A folder the server cannot make or write is fixed by the operator, not by a retry: a
    `ConfigError` naming it, not a 503 an exporter would retry for ever."""
    from sqlalchemy import create_engine

    from observatory_core.base.errors import ConfigError

    database = tmp_path / "observatory.db"
    (tmp_path / ("observatory.db" + store_turns.SUFFIX)).write_text("in the way")
    turns = org_turns.org_turns(create_engine(f"sqlite:///{database}"))
    with pytest.raises(ConfigError, match=r"span-turns .*must be writable"), turns([1]):
        pass


def test_a_sqlite_database_in_memory_takes_this_process_turn_only(tmp_path, monkeypatch):
    from sqlalchemy import create_engine

    cwd = tmp_path / "cwd"  # a database named "" would put its folder beside the cwd
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    from sqlalchemy.pool import StaticPool

    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:turns?mode=memory&uri=true"):
        engine = create_engine(url, poolclass=StaticPool)
        with org_turns.org_turns(engine)([1, 2]):  # no lock file: nothing written beside it
            pass
    assert list(tmp_path.rglob("*")) == [cwd]
