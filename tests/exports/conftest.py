"""Export tests share a small demo data set per database and a worker config in tmp."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.exports.worker import WorkerConfig
from tests.helpers import LoadedRows, load_small_demo

_LOADED: dict[str, LoadedRows] = {}  # database url -> its demo rows, loaded once a session


@pytest.fixture
def data(engine, tmp_path_factory):
    """The demo's 1,500 spans over 2 days in `engine`: loaded by the first test of the session
    on each database, and copied back (the same rows) into the emptied database after."""
    url = engine.url.render_as_string(hide_password=False)
    if url not in _LOADED:
        load_small_demo(engine, spans_count=1500, days=2, seed=5)
        _LOADED[url] = LoadedRows(engine, tmp_path_factory.mktemp("exports_rows"))
        return engine
    return _LOADED[url].restore(engine)


@pytest.fixture
def orgs(data) -> dict[str, int]:
    from sqlalchemy import select

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
    from sqlalchemy import select

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
