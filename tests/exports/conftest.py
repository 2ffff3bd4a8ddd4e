"""Export tests share a small demo data set per database and a worker config in tmp."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.exports.worker import WorkerConfig
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import metadata
from tests.conftest import PG_ADMIN_URL, pg_admin
from tests.helpers import LoadedRows, empty_database, load_small_demo, table_counts


class DemoDatabase:
    """A database of its own per store holding the demo's 1,500 spans over 2 days, loaded once
    a session: the export tests read the spans and write only jobs and their audit, so each
    test gets it back with every table the load left empty emptied again (and, should a test
    have added or removed rows of a loaded table, the load's rows copied back)."""

    def __init__(self, url: str, folder) -> None:
        self.url = url
        self.engine = get_engine(url)
        upgrade(self.engine)
        load_small_demo(self.engine, spans_count=1500, days=2, seed=5)
        self.rows = LoadedRows(self.engine, folder)
        self.counts = self._counts()

    def _counts(self) -> dict[str, int]:
        """Rows per loaded table: a changed count means a test wrote to the loaded rows."""
        with self.engine.connect() as conn:
            return table_counts(conn, self.rows.tables)

    def reset(self):
        """The engine, its tables as the load left them: the jobs' tables emptied (cheap), or
        the whole load copied back when a test touched the loaded rows."""
        loaded = {t.name for t in self.rows.tables}
        if self._counts() != self.counts:
            empty_database(self.url)
            return self.rows.restore(self.engine)
        with self.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                if table.name not in loaded:
                    conn.execute(table.delete())
        return self.engine


@pytest.fixture(scope="session")
def demo_databases(tmp_path_factory):
    """kind -> its `DemoDatabase`, made on first use; PostgreSQL's dropped at the end."""
    made: dict[str, DemoDatabase] = {}
    yield made
    for database in made.values():
        database.engine.dispose()
        if database.engine.dialect.name == "postgresql":
            pg_admin(f'DROP DATABASE IF EXISTS "{database.engine.url.database}" WITH (FORCE)')


@pytest.fixture
def data(db_url, demo_databases, tmp_path_factory):
    """The demo's 1,500 spans over 2 days, in a database of the store of `db_url`."""
    kind = make_url(db_url).get_backend_name()
    if kind not in demo_databases:
        folder = tmp_path_factory.mktemp("exports_demo")
        if kind == "sqlite":
            url = f"sqlite:///{folder / 'demo.db'}"
        else:
            name = f"obs_exports_{uuid.uuid4().hex[:10]}"
            pg_admin(f'CREATE DATABASE "{name}"')
            url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        demo_databases[kind] = DemoDatabase(url, folder)
    return demo_databases[kind].reset()


@pytest.fixture
def orgs(data) -> dict[str, int]:

    from observatory_core.storage.schema import orgs as orgs_table

    with data.connect() as conn:
        return dict(conn.execute(select(orgs_table.c.slug, orgs_table.c.id)).all())


@pytest.fixture
def scope(orgs):
    return Scope(org_id=orgs["acme"], role=Role.DEVELOPER, username="dana")


@pytest.fixture
def config(tmp_path):
    return WorkerConfig(
        export_dir=tmp_path / "exports",
        heartbeat_timeout=timedelta(seconds=30),
        page_size=200,
        copy_page_size=200,
    )


@pytest.fixture
def orgs_of():
    """A developer scope in the demo org 'acme' of whatever database is given."""

    from observatory_core.storage.schema import orgs as orgs_table

    def build(engine) -> Scope:
        with engine.connect() as conn:
            acme = conn.execute(
                select(orgs_table.c.id).where(orgs_table.c.slug == "acme")
            ).scalar_one()
        return Scope(org_id=acme, role=Role.DEVELOPER, username="dana")

    return build


@pytest.fixture
def on_store(routed, monkeypatch):
    """The setting names the module's span store (`routed`, each span store module's own,
    already open: the process's one)."""
    from observatory_core.base.settings import get_settings
    from observatory_core.storage.clickhouse import current

    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", routed["url"])
    get_settings.cache_clear()
    monkeypatch.setitem(current._OPEN, routed["url"], routed["store"])
    yield routed
    get_settings.cache_clear()
