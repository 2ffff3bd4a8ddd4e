"""A revoked key, a disabled user: refused on the next request by another server process.

Two real servers (`streamlit run server.py`, as `make run` starts it) share one database;
each has already accepted the key or the login, so each remembers it. The change is made
through the CLI, then the next request to the other process is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from observatory_core.accounts.users import add_user
from observatory_core.exports.links import sign_download
from observatory_core.ingest.apikeys import create_key, list_keys
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.conftest import PG_ADMIN_URL, pg_admin
from tests.helpers import admin_scope, login_cookie, make_org
from tests.live_server import COOKIE_KEY, ROOT, running_servers


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _cli(url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "observatory_core", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "OBSERVATORY_COOKIE_KEY": COOKIE_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_servers(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"revoke-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'revoke.db'}"
    else:
        request.getfixturevalue("pg_url")  # fails loudly, with the fix, if PostgreSQL is down
        name = "obs_revoke_" + tmp.name.replace("-", "_").lower()[-20:]
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    org_id, _ = make_org(engine, "acme")
    add_user(engine, "acme", "dana", "developer", password="dana-password-1")
    key = create_key(engine, admin_scope(org_id), "script", scopes=("read",))
    env = {"OBSERVATORY_EMBEDDED_WORKER": "0"}
    with running_servers([url, url], tmp, **env) as (first, second):
        yield {"url": url, "engine": engine, "org_id": org_id, "key": key, "bases": (first, second)}
    engine.dispose()


def test_a_revoked_key_is_refused_by_the_other_process_on_its_next_request(two_servers):
    first, second = two_servers["bases"]
    auth = {"Authorization": f"Bearer {two_servers['key']}"}
    for base in (first, second, first, second):  # both processes now remember the key
        assert _get(f"{base}/api/v1/export/jobs", auth)[0] == 200
    scope = admin_scope(two_servers["org_id"])
    key_id = next(k["id"] for k in list_keys(two_servers["engine"], scope))
    assert "revoked" in _cli(
        two_servers["url"], "keys", "revoke", "--org", "acme", "--id", str(key_id)
    )
    status, body = _get(f"{second}/api/v1/export/jobs", auth)
    assert status == 401 and "revoked" in body["error"]["message"]
    assert _get(f"{first}/api/v1/export/jobs", auth)[0] == 401


def test_a_disabled_user_is_refused_by_the_other_process_on_their_next_request(two_servers):
    first, second = two_servers["bases"]
    cookie = {
        "Cookie": f"observatory_auth={login_cookie(two_servers['engine'], 'dana', COOKIE_KEY)}"
    }
    link = "/exports/download/" + sign_download(COOKIE_KEY, 4242, two_servers["org_id"])
    for base in (first, second):  # logged in: the link is checked and names no export
        status, body = _get(base + link, cookie)
        assert status == 404 and "No export 4242" in body["error"]["message"]
    _cli(two_servers["url"], "user", "disable", "dana")
    status, body = _get(second + link, cookie)
    assert status == 401 and body["error"]["code"] == "login_required"
    assert _get(first + link, cookie)[0] == 401
