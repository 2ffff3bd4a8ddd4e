"""The setting: which URLs name a span store, and what a person is told about one that does not."""

from __future__ import annotations

import pytest

from observatory_core.base import settings
from observatory_core.base.errors import ConfigError, DatabaseUnavailable
from observatory_core.base.settings import load_settings
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.clickhouse.target import parse_target


def test_chdb_url_names_a_folder_and_the_default_database():
    target = parse_target("chdb:///var/lib/observatory/spans")
    assert (target.kind, target.path, target.database) == (
        "chdb",
        "/var/lib/observatory/spans",
        "observatory",
    )
    assert parse_target("chdb:///srv/ch?database=obs").database == "obs"


def test_server_url_names_host_port_user_and_database():
    target = parse_target("clickhouse://writer:s%40cret@ch.internal:8123/spans")
    assert (target.host, target.port, target.username, target.password, target.database) == (
        "ch.internal",
        8123,
        "writer",
        "s@cret",
        "spans",
    )
    assert not target.secure
    https = parse_target("clickhouses://u:p@ch.example.com/obs")
    assert (https.secure, https.port) == (True, 8443)
    assert "p@" not in https.describe() and "u@ch.example.com:8443/obs" in https.describe()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://u@h/db", "the scheme 'postgresql' is not a span store"),
        ("chdb://relative/path", "must be absolute"),
        ("chdb://", "names no folder"),
        ("clickhouse:///obs", "names no server host"),
        ("clickhouse://u:p@h:8123/my-db", "must be letters, digits and '_'"),
        ("clickhouse://u:p@h:notaport/db", "cannot be read as a URL"),
        ("just-a-path", "has no scheme"),
        ("  ", "is empty"),
    ],
)
def test_a_bad_url_says_what_to_write(url, says):
    with pytest.raises(ConfigError) as caught:
        parse_target(url)
    message = str(caught.value)
    assert "OBSERVATORY_SPAN_STORE" in message and says in message
    assert "chdb:///ABSOLUTE/PATH" in message or "unset it" in message


def test_a_password_is_never_shown():
    with pytest.raises(ConfigError) as caught:
        parse_target("clickhouse://writer:hunter2@h:8123/bad-name")
    assert "hunter2" not in str(caught.value) and "writer:***@" in str(caught.value)


def test_a_server_that_does_not_answer_gets_one_sentence():
    # nothing listens on port 9 of this machine: refused at once
    with pytest.raises(DatabaseUnavailable) as caught:
        open_span_store("clickhouse://default:pw@127.0.0.1:9/obs")
    message = str(caught.value)
    assert message.startswith(
        "Cannot reach the ClickHouse span store at clickhouse://default@127.0.0.1:9/obs"
    )
    assert "pw" not in message.replace("password", "") and "OBSERVATORY_SPAN_STORE" in message


def test_the_setting_is_read_and_unset_keeps_todays_store(tmp_path, monkeypatch):
    secrets = tmp_path / "none.toml"
    assert load_settings({}, secrets).span_store is None
    chosen = load_settings({"OBSERVATORY_SPAN_STORE": " chdb:///data/spans "}, secrets)
    assert chosen.span_store == "chdb:///data/spans"
    monkeypatch.setattr(settings, "get_settings", lambda: load_settings({}, secrets))
    with pytest.raises(ConfigError, match="OBSERVATORY_SPAN_STORE is not set"):
        open_span_store()


def test_a_chdb_folder_open_in_another_process_is_explained(chdb_session):
    """chDB opens a folder in one process at a time: the second is told what to do (this
    process holds the session's folder; another process asks for it)."""
    import subprocess
    import sys

    url = chdb_session.url("elsewhere")
    script = (
        "from observatory_core.base.errors import DatabaseUnavailable\n"
        "from observatory_core.storage.clickhouse.connect import open_span_store\n"
        "try:\n"
        f"    open_span_store({url!r})\n"
        "except DatabaseUnavailable as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert f"Cannot open the chDB span store at {chdb_session.folder}" in done.stdout
    assert "stop the other process using it" in done.stdout
    assert "Traceback" not in done.stderr
