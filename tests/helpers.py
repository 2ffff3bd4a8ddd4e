"""Small builders shared by tests, and the polars reference reader."""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import polars as pl
from sqlalchemy import func, literal, select, text, union_all
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.tenancy import ensure_org, ensure_project
from observatory_core.demo.load import ensure_demo_tenants, load_demo
from observatory_core.ingest.persist import write_spans
from observatory_core.ingest.spanrows import complete_row
from observatory_core.storage.schema import metadata, spans, users

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


def empty_database(db_url: str):
    """The migrated database at `db_url` with every row removed (schema kept)."""
    from observatory_core.storage.engine import get_engine
    from observatory_core.storage.schema import metadata

    engine = get_engine(db_url)
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    return engine


def make_org(engine, slug: str, projects=("main",)) -> tuple[int, list[int]]:
    with engine.begin() as conn:
        org_id = ensure_org(conn, slug, slug.title())
        return org_id, [ensure_project(conn, org_id, p, p.title()) for p in projects]


def span(org_id: int, project_id: int, start: datetime, **fields) -> dict:
    n = next(_ids)
    row = {
        "org_id": org_id,
        "project_id": project_id,
        "trace_id": fields.pop("trace_id", f"{n:032x}"),
        "span_id": fields.pop("span_id", f"{n:016x}"),
        "start_time": start,
        "end_time": start + timedelta(milliseconds=fields.get("duration_ms", 100.0)),
        "name": "chat test",
        "operation": "chat",
        "status": "ok",
        "cost_source": "computed",
        **fields,
    }
    return complete_row(row, 16_000)


def child_of(parent: dict, start: datetime, **fields) -> dict:
    """A span below `parent`, in its trace, org and project."""
    return span(
        parent["org_id"],
        parent["project_id"],
        start,
        trace_id=parent["trace_id"],
        parent_span_id=parent["span_id"],
        **fields,
    )


def write(engine, rows) -> int:
    return write_spans(engine, rows)


def load_small_demo(engine, spans_count: int = 3000, days: float = 3, seed: int = 11):
    ensure_demo_tenants(engine)
    return load_demo(engine, spans=spans_count, days=days, seed=seed, end=END)


def all_spans(engine) -> pl.DataFrame:
    """Raw rows as polars: the independent reference the tests compare the core against."""
    with engine.connect() as conn:
        rows = conn.execute(select(spans)).mappings().all()
    return pl.DataFrame([dict(r) for r in rows], infer_schema_length=None)


def admin_scope(org_id: int, role: Role = Role.ADMIN, **kw) -> Scope:
    return Scope(org_id=org_id, role=role, **kw)


def rollup_rows(engine, grain: str) -> pl.DataFrame:
    """A rollup table's rows: the latency sketch as stored (compacted bytes, so equal sketches
    are equal bytes) and `sketch_spans`, how many spans it counts."""
    from observatory_core.storage.packed_sketch import dense
    from observatory_core.storage.schema import ROLLUP_DIMENSIONS, ROLLUPS

    table = ROLLUPS[grain]
    with engine.connect() as conn:
        rows = conn.execute(select(table)).mappings().all()
    sketches = [bytes(r["latency_sketch"]) for r in rows]
    frame = pl.DataFrame(
        [dict(r) | {"latency_sketch": s} for r, s in zip(rows, sketches, strict=True)],
        infer_schema_length=None,
    ).with_columns(
        pl.Series("sketch_spans", dense(sketches).sum(axis=1) if rows else [], dtype=pl.Int64)
    )
    keys = ["org_id", "bucket_start", *ROLLUP_DIMENSIONS]
    return frame.sort(keys)


def assert_rollups_match_rebuild(engine) -> None:
    """Rollups kept batch by batch must equal rollups recomputed from the stored spans."""
    from observatory_core.rollups.maintain import rebuild
    from observatory_core.storage.schema import ROLLUPS

    before = {g: rollup_rows(engine, g) for g in ROLLUPS}
    counts = rebuild(engine)
    for grain, frame in before.items():
        after = rollup_rows(engine, grain)
        assert counts[grain] == after.height == frame.height, grain
        for column in frame.columns:
            a, b = frame[column], after[column]
            if a.dtype.is_float():
                assert ((a - b).abs().fill_null(0) < 1e-6).all(), (grain, column)
            else:
                assert a.to_list() == b.to_list(), (grain, column)


def open_session(engine, username: str) -> str:
    """A server-side log-in session for `username` (what a password log-in opens)."""
    from observatory_core.accounts import sessions
    from observatory_core.storage.schema import users

    with engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.username == username)).scalar_one()
        return sessions.start(conn, user_id, datetime.now(UTC))


def login_cookie(engine, username: str, cookie_key: str) -> str:
    """A login cookie naming a fresh session of `username`, valid for an hour."""
    from observatory_core.accounts.login_cookie import make_cookie

    expires = datetime.now(UTC) + timedelta(hours=1)
    return make_cookie(username, open_session(engine, username), cookie_key, expires)


# A statement that runs for ~20 s on each store: what a time budget must stop.
SLOW_SQL = {
    "postgresql": "SELECT pg_sleep(20)",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000000) "
    "SELECT count(*) FROM c",
}


def authenticator_credentials(engine: Engine) -> dict:
    """Each enabled user's stored row, keyed like streamlit-authenticator's credentials dict."""
    with engine.connect() as conn:
        rows = conn.execute(select(users).where(users.c.disabled.is_(False))).mappings().all()
    return {
        "usernames": {
            r["username"]: {
                "email": r["email"],
                "first_name": r["name"],
                "last_name": "",
                "password": r["password_hash"],
                "roles": [r["role"]],
            }
            for r in rows
        }
    }


def run_coroutine(coro):
    """`asyncio.run` on a thread of its own: a worker that ran the browser tests keeps
    Playwright's event loop running on its main thread for the rest of the session."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def table_counts(conn, tables=None) -> dict[str, int]:
    """Rows per table (every table of the schema by default), in one statement."""
    parts = [
        select(literal(t.name).label("t"), func.count().label("n")).select_from(t)
        for t in (tables if tables is not None else metadata.sorted_tables)
    ]
    return dict(conn.execute(union_all(*parts)).all())


class LoadedRows:
    """Every row of a loaded database, taken once and put back into an emptied database of the
    same schema: a test that needs the same demo data each time pays its load (seconds of
    generation, rollups and writes) once per session, and its rows' copy (milliseconds) after.

    SQLite: a copy of the file (`VACUUM INTO`), its tables' rows inserted back from it (the
    search index's triggers fire as on a load). PostgreSQL: each table's rows in COPY's binary
    format, copied back in, then each id sequence moved past the ids copied."""

    def __init__(self, engine: Engine, folder) -> None:
        from pathlib import Path

        self.kind = engine.dialect.name
        with engine.connect() as conn:
            counts = table_counts(conn)
        self.tables = [t for t in metadata.sorted_tables if counts[t.name]]
        if self.kind == "sqlite":
            self.path = Path(folder) / f"rows-{next(_ids)}.db"
            raw = engine.raw_connection()
            try:
                raw.driver_connection.execute("VACUUM INTO ?", (str(self.path),))
            finally:
                raw.close()
            return
        self.copies: list[tuple[str, bytes]] = []
        self.sequences: list[tuple[str, str, str]] = []
        with engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()
            for table in self.tables:
                with cursor.copy(
                    f'COPY (SELECT * FROM "{table.name}") TO STDOUT (FORMAT binary)'
                ) as copy:
                    self.copies.append((table.name, b"".join(bytes(b) for b in copy)))
                for column in table.primary_key.columns:
                    sequence = conn.execute(
                        text("SELECT pg_get_serial_sequence(:t, :c)"),
                        {"t": f'"{table.name}"', "c": column.name},
                    ).scalar()
                    if sequence is not None:
                        self.sequences.append((table.name, column.name, sequence))

    def restore(self, engine: Engine) -> Engine:
        """Put the rows back into `engine`'s database, which must be empty."""
        raw = engine.raw_connection()
        try:
            dbapi = raw.driver_connection
            if self.kind == "sqlite":
                dbapi.execute("ATTACH DATABASE ? AS loaded", (str(self.path),))
                try:
                    with dbapi:
                        for table in self.tables:
                            dbapi.execute(
                                f'INSERT INTO main."{table.name}" SELECT * FROM loaded."{table.name}"'
                            )
                finally:
                    dbapi.execute("DETACH DATABASE loaded")
            else:
                with dbapi.transaction(), dbapi.cursor() as cursor:
                    for name, data in self.copies:
                        with cursor.copy(f'COPY "{name}" FROM STDIN (FORMAT binary)') as copy:
                            copy.write(data)
                    for table, column, sequence in self.sequences:
                        cursor.execute(
                            f'SELECT setval(%s, GREATEST((SELECT max("{column}") FROM '
                            f'"{table}"), (SELECT last_value FROM {sequence})))',
                            (sequence,),
                        )
        finally:
            raw.close()
        return engine
