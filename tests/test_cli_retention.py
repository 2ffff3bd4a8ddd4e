"""`python -m observatory_core retention`: show and set an org's retention (bad values get a
message), run the deletion now, and switch an old SQLite file to handing space back."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from observatory_core.__main__ import main
from observatory_core.accounts.retention import Retention, get_retention
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.stores import store_for
from tests.helpers import admin_scope, make_org, span, write
from tests.test_cli import cli_db  # noqa: F401 (a fixture)


def test_set_show_and_run(cli_db, capsys):  # noqa: F811
    engine, _ = cli_db
    upgrade(engine)
    org, (main_, long_) = make_org(engine, "acme", projects=("main", "long"))
    old = datetime.now(UTC) - timedelta(days=50)
    write(engine, [span(org, main_, old), span(org, long_, old)])
    assert main(["retention", "set", "--org", "acme", "--spans-days", "30"]) == 0
    assert main(["retention", "set", "--org", "acme", "--project", "long=90"]) == 0
    assert get_retention(engine, admin_scope(org)) == Retention(30, None, {long_: 90})
    out = capsys.readouterr().out
    assert "acme: spans 30 days, rollups forever" in out
    assert "project long: spans 90 days" in out
    assert main(["retention", "set", "--org", "acme", "--rollups-days", "7"]) == 2
    assert "at least as long as spans" in capsys.readouterr().err
    assert main(["retention", "set", "--org", "acme", "--project", "nope=3"]) == 2
    assert "No project 'nope'" in capsys.readouterr().err
    assert main(["retention", "run"]) == 0
    assert "Deleted 1 spans" in capsys.readouterr().out
    assert main(["retention", "set", "--org", "acme", "--spans-days", "forever"]) == 0
    assert get_retention(engine, admin_scope(org)).span_days is None


def test_vacuum_switches_an_old_sqlite_file_to_incremental(cli_db, capsys):  # noqa: F811
    engine, tmp = cli_db
    raw = sqlite3.connect(tmp / "cli.db")  # a file made before auto_vacuum was asked for
    raw.execute("CREATE TABLE older (x)")
    raw.close()
    upgrade(engine)
    store = store_for(engine)
    assert "retention vacuum" in store.space_reclaim_status(engine)
    assert main(["retention", "vacuum"]) == 0
    assert "Vacuumed" in capsys.readouterr().out
    assert store.space_reclaim_status(engine) is None
    assert main(["retention", "vacuum"]) == 0
    assert "Nothing to do" in capsys.readouterr().out
