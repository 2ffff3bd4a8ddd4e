"""Database fixtures: every storage test runs on SQLite and on the real PostgreSQL server.

PostgreSQL is never skipped: if it cannot be reached the run fails with how to start it.
Passwords are hashed at bcrypt's cheapest cost here (see `TEST_BCRYPT_ROUNDS`).
"""

from __future__ import annotations

import os
import uuid

import bcrypt
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade

# the session's chDB folder and the span stores in it (`chdb_session`, `chdb_store`)
pytest_plugins = ["tests.chdb_store"]

# bcrypt at its default cost (12) takes ~0.3-0.4 s per hash or check on the 2-core CI machine,
# and the suite logs in and adds users hundreds of times: at cost 4 each takes ~1 ms. Hashes keep
# their cost, so checks follow. Set before any test module imports accounts.login (its dummy hash
# for unknown users is made at import). tests/accounts/test_users.py checks the app's own cost.
TEST_BCRYPT_ROUNDS = 4
PRODUCTION_GENSALT = bcrypt.gensalt


def _test_gensalt(rounds: int = TEST_BCRYPT_ROUNDS, prefix: bytes = b"2b") -> bytes:
    return PRODUCTION_GENSALT(rounds, prefix)


bcrypt.gensalt = _test_gensalt


@pytest.fixture(autouse=True)
def _settings_read_again():
    """The settings are cached (`get_settings`) and read from the environment: a test that
    set `OBSERVATORY_SPAN_STORE` by monkeypatch and did not clear the cache left the next
    tests of its worker reading (and writing) spans in its store, so which test failed
    depended on how the suite was spread over the workers (the browser walk's alert history
    replayed over an empty store; a migration test's spans written there). Cleared after
    every test, whatever it did."""
    from observatory_core.base.settings import get_settings

    yield
    get_settings.cache_clear()


PG_ADMIN_URL = os.environ.get(
    "OBSERVATORY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pg_admin(*statements: str) -> None:
    """Run statements (CREATE/DROP DATABASE) on the PostgreSQL server, outside a transaction."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"obs_test_{uuid.uuid4().hex[:10]}"
    try:
        pg_admin(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc.orig}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set "
            "OBSERVATORY_TEST_PG_URL.",
            pytrace=False,
        )
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    get_engine(url).dispose()
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request, tmp_path_factory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'observatory.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    upgrade(get_engine(url))
    return url


@pytest.fixture
def engine(db_url):
    """A migrated, empty database of each kind."""
    from tests.helpers import empty_database

    return empty_database(db_url)


@pytest.fixture
def sqlite_engine(tmp_path):
    db = get_engine(f"sqlite:///{tmp_path / 'observatory.db'}")
    upgrade(db)
    return db


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def demo_store(request, tmp_path_factory):
    """Demo data (20,000 spans over 3 days, every operation) in a database of its own per
    store, loaded once per session and only read: figures against polars over the raw rows."""
    from tests.helpers import all_spans, load_small_demo

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
        name = None
    else:
        request.getfixturevalue("pg_url")  # fails loudly, with the fix, if PostgreSQL is down
        name = f"obs_demo_{uuid.uuid4().hex[:10]}"
        pg_admin(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    load_small_demo(engine, spans_count=20_000, days=3, seed=24)
    yield {"engine": engine, "df": all_spans(engine)}
    engine.dispose()
    if name is not None:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# `make test` runs three workers with `--dist loadscope` (a module's tests stay together, so its
# fixtures load once). These folders are one unit each: they share a session fixture that is
# costly to start (the browser tests' server and Chromium, the instrumented clients), which
# would otherwise start on several workers and run browsers against servers side by side.
WHOLE_FOLDERS = ("tests/e2e/", "tests/conformance/")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    if config.getoption("dist") != "loadscope":
        return None

    class FolderScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            for folder in WHOLE_FOLDERS:
                if nodeid.startswith(folder):
                    return folder
            return super()._split_scope(nodeid)

        def _assign_work_unit(self, node) -> None:
            # The folders first: each is one unit of minutes (the browser folder some 8 at three
            # workers), which xdist would order among the modules by their count of tests:
            # started late, it could run on alone after the other workers had finished
            for folder in reversed(WHOLE_FOLDERS):
                if folder in self.workqueue:
                    self.workqueue.move_to_end(folder, last=False)
            super()._assign_work_unit(node)

    return FolderScopes(config, log)
