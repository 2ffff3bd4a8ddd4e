"""The command line: first-run bootstrap, users, demo data, and one-line errors."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from observatory_core.__main__ import main
from observatory_core.accounts.users import verify_password
from observatory_core.base.settings import get_settings
from observatory_core.demo.load import load_demo
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import spans
from tests.helpers import authenticator_credentials


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setattr("observatory_core.base.settings.SECRETS_FILE", tmp_path / "secrets.toml")
    get_settings.cache_clear()
    yield get_engine(url), tmp_path
    get_settings.cache_clear()


def _count(engine):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(spans)).scalar()


def test_bootstrap_creates_secret_data_and_an_admin_shown_once(cli_db, capsys):
    engine, tmp = cli_db
    assert main(["bootstrap", "--demo-spans", "2000", "--days", "2"]) == 0
    out = capsys.readouterr().out
    password = re.search(r"user: admin\s+password: (\S+)", out).group(1)
    stored = authenticator_credentials(engine)["usernames"]["admin"]["password"]
    assert verify_password(password, stored)
    assert 'cookie_key = "' in (tmp / "secrets.toml").read_text()
    assert _count(engine) >= 2000
    assert main(["bootstrap", "--demo-spans", "2000", "--days", "2"]) == 0
    again = capsys.readouterr().out
    assert "password" not in again
    assert _count(engine) < 2200  # no second load: the data is current


def test_bootstrap_tops_up_stale_demo_data_to_now(cli_db, capsys):
    engine, _ = cli_db
    upgrade(engine)
    load_demo(engine, spans=1500, days=2, seed=3, end=datetime.now(UTC) - timedelta(hours=5))
    before = _count(engine)
    assert main(["bootstrap", "--demo-spans", "3000", "--days", "2"]) == 0
    assert "adding traffic up to now" in capsys.readouterr().out
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(spans.c.start_time))).scalar()
    assert _count(engine) > before
    assert datetime.now(UTC) - newest < timedelta(hours=1)


def test_user_add_and_errors_are_one_line(cli_db, capsys):
    main(["bootstrap", "--demo-spans", "0"])
    capsys.readouterr()
    assert main(["user", "add", "sam", "--org", "default", "--role", "viewer"]) == 0
    assert re.search(r"Password \(shown once\): \S{10,}", capsys.readouterr().out)
    assert main(["user", "add", "sam", "--org", "default", "--role", "viewer"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: User 'sam' exists already; pick another username."
    assert main(["user", "add", "kim", "--org", "nowhere", "--role", "viewer"]) == 2
    assert "No org 'nowhere'" in capsys.readouterr().err
    assert main(["user", "list"]) == 0
    assert "sam" in capsys.readouterr().out


def test_unreachable_database_is_reported_without_traceback(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/x")
    get_settings.cache_clear()
    try:
        assert main(["migrate"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot reach PostgreSQL") and "Traceback" not in err


def test_rollups_rebuild_says_where_the_span_stores_rollups_are(cli_db, monkeypatch, capsys):
    """With the spans in a span store, a rebuild from DATABASE_URL's (empty) spans would say
    "rebuilt" and change nothing there: it is refused with the commands that apply."""
    engine, tmp = cli_db
    upgrade(engine)
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", f"chdb://{tmp / 'spans'}")
    get_settings.cache_clear()
    assert main(["rollups", "rebuild"]) == 2
    err = capsys.readouterr().err
    assert "span store" in err and "remap" in err and "clickhouse-rebuild-rollups" in err
    assert "Traceback" not in err


def test_rollups_rebuild_and_budget_commands(cli_db, capsys):
    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.scope import Scope
    from observatory_core.reports.overview import get_budget
    from observatory_core.storage.schema import ROLLUPS

    engine, _ = cli_db
    upgrade(engine)
    load_demo(engine, spans=1500, days=1, seed=3, end=datetime(2026, 11, 20, tzinfo=UTC))
    with engine.begin() as conn:
        conn.execute(ROLLUPS["1hour"].delete())
    assert main(["rollups", "rebuild"]) == 0
    assert "Rollups rebuilt" in capsys.readouterr().out
    with engine.connect() as conn:
        total = conn.execute(select(func.sum(ROLLUPS["1hour"].c.span_count))).scalar()
    assert total == _count(engine)
    assert main(["budget", "--org", "acme", "--usd", "2500"]) == 0
    with engine.connect() as conn:
        from observatory_core.accounts.tenancy import org_id_by_slug

        acme = org_id_by_slug(conn, "acme")
    assert get_budget(engine, Scope(org_id=acme, role=Role.ADMIN)) == 2500
    assert main(["budget", "--org", "nope", "--usd", "1"]) == 2
    assert "No org 'nope'" in capsys.readouterr().err
    assert main(["budget", "--org", "acme", "--usd", "-3"]) == 2
    assert "positive number" in capsys.readouterr().err


def test_a_reader_that_stops_early_gets_no_traceback(cli_db):
    """`keys create ... | head -1` (as the README shows): the key line, then nothing on stderr."""
    import subprocess
    import sys

    from observatory_core.base.settings import PROJECT_ROOT
    from observatory_core.ingest.apikeys import verify_key
    from tests.helpers import make_org

    engine, tmp = cli_db
    upgrade(engine)
    make_org(engine, "acme")
    command = (
        f"{sys.executable} -m observatory_core keys create --org acme --name nb --scopes read "
        "| head -c 0; "  # a reader that reads nothing at all
        f"{sys.executable} -m observatory_core keys create --org acme --name nb2 --scopes read "
        "| head -1"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "DATABASE_URL": str(engine.url)},
    )
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("obs_") and "\n" not in key
    assert verify_key(engine, key, "read").scope().org_id is not None


def test_an_orgs_own_price_set_by_the_cli_prices_spans_stored_after_it(cli_db, capsys):
    import polars as pl

    from tests.helpers import make_org

    engine, _ = cli_db
    upgrade(engine)
    make_org(engine, "acme")
    assert main(["prices", "list", "--org", "acme"]) == 0
    assert "No custom prices in acme" in capsys.readouterr().out
    args = ["prices", "set", "--org", "acme", "--provider", "OpenAI", "--model", "gpt-4o"]
    assert main([*args, "--input", "1000", "--output", "0", "--since", "2026-01-01"]) == 0
    assert "spans already stored keep their cost" in capsys.readouterr().out
    assert main([*args, "--input", "5"]) == 2
    assert "`prices set` needs --output" in capsys.readouterr().err
    assert main([*args, "--input", "-1", "--output", "1"]) == 2
    assert "cannot be negative" in capsys.readouterr().err
    assert main(["prices", "list", "--org", "acme"]) == 0
    assert "openai/gpt-4o  input $1000  output $0 per million tokens" in capsys.readouterr().out

    load_demo(engine, spans=1500, days=1, seed=3, end=datetime(2026, 11, 20, tzinfo=UTC))
    with engine.connect() as conn:
        from observatory_core.accounts.tenancy import org_id_by_slug

        acme = org_id_by_slug(conn, "acme")
        rows = pl.DataFrame(
            [
                dict(r._mapping)
                for r in conn.execute(
                    select(spans.c.org_id, spans.c.input_tokens, spans.c.total_cost_usd).where(
                        spans.c.model == "gpt-4o", spans.c.cost_source == "computed"
                    )
                )
            ]
        )
    mine = rows.filter(pl.col("org_id") == acme)
    assert mine.height > 0
    assert mine["total_cost_usd"].sum() == pytest.approx(mine["input_tokens"].sum() * 1000 / 1e6)
    others = rows.filter(pl.col("org_id") != acme)  # other orgs keep the table's price
    assert others.height == 0 or others["total_cost_usd"].sum() < others["input_tokens"].sum() / 1e3
