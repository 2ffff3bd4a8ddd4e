"""The command line for access: roles, disabling, unlocking, and reading the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime

from observatory_core.__main__ import main
from observatory_core.accounts import throttle
from observatory_core.accounts.login import log_in
from observatory_core.accounts.users import add_user, scope_for
from observatory_core.storage.migrate import upgrade
from tests.helpers import make_org
from tests.test_cli import cli_db  # noqa: F401 - the fixture


def test_role_disable_unlock_and_audit(cli_db, capsys):  # noqa: F811
    engine, _ = cli_db
    upgrade(engine)
    make_org(engine, "acme")
    add_user(engine, "acme", "dana", "developer", password="dana-password-1")
    assert main(["user", "role", "dana", "viewer"]) == 0
    assert scope_for(engine, "dana").role.value == "viewer"
    with engine.begin() as conn:
        for _ in range(5):
            throttle.fail(conn, throttle.USER, "dana", datetime.now(UTC))
    assert not log_in(engine, "dana", "dana-password-1").ok
    assert main(["user", "unlock", "dana"]) == 0
    assert "unlocked" in capsys.readouterr().out
    assert log_in(engine, "dana", "dana-password-1").ok
    assert main(["user", "disable", "dana"]) == 0
    assert not log_in(engine, "dana", "dana-password-1").ok
    assert main(["user", "role", "ghost", "viewer"]) == 2
    assert "No user 'ghost'" in capsys.readouterr().err
    assert main(["audit", "--org", "acme"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[5] for line in out] == [
        "login.failed",
        "user.disable",
        "login",
        "user.unlock",
        "login.failed",
        "user.role",
        "user.create",
    ]
    role_line = next(line for line in out if "user.role" in line)
    assert '{"role": "developer"} -> {"role": "viewer"}' in role_line
