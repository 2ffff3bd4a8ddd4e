"""An app database with demo data and one user per role, wired through the environment."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st

from observatory_core.accounts.users import add_user
from observatory_core.base.settings import get_settings
from observatory_core.demo.load import load_demo
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("admin", "developer", "viewer", "billing")


@pytest.fixture(scope="session")
def app_db_pristine(tmp_path_factory):
    """Demo data ending a minute ago, so the home page's last 24 hours are full: loaded once
    per worker and never written to."""
    path = tmp_path_factory.mktemp("app") / "app.db"
    engine = get_engine(f"sqlite:///{path}")
    upgrade(engine)
    load_demo(engine, spans=6000, days=3, seed=21, end=datetime.now(UTC) - timedelta(minutes=1))
    passwords = {role: add_user(engine, "acme", f"{role}-user", role) for role in ROLES}
    passwords["other-org"] = add_user(engine, "globex", "globex-admin", "admin")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path, passwords


@pytest.fixture(scope="module")
def app_db(app_db_pristine, tmp_path_factory):
    """A copy of the app database per test module: what one module writes (jobs, rules, audit
    entries, retention runs) no other module sees, whichever worker runs it after which."""
    pristine, passwords = app_db_pristine
    path = tmp_path_factory.mktemp("app_copy") / "app.db"
    shutil.copyfile(pristine, path)
    return f"sqlite:///{path}", passwords


@pytest.fixture
def app_env(app_db, monkeypatch, tmp_path):
    url, passwords = app_db
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("OBSERVATORY_COOKIE_KEY", "test-cookie-key-0123456789-abcdefghijklmnop")
    monkeypatch.setattr("observatory_core.base.settings.SECRETS_FILE", tmp_path / "none.toml")
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
    yield get_engine(url), passwords
    get_settings.cache_clear()
