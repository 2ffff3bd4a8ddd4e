"""The process's span store (`storage/clickhouse/current.py`): a store that cannot be opened is
answered at once for a few seconds (not opened again by every request), and no request waits
on another's open past its own budget."""

from __future__ import annotations

import pytest

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.base.settings import get_settings
from observatory_core.storage import budget
from observatory_core.storage.clickhouse import current

URL = "clickhouse://reader@span-store.invalid:8123/observatory"


@pytest.fixture
def setting(monkeypatch):
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", URL)
    get_settings.cache_clear()
    monkeypatch.setattr(current, "_FAILED", {})
    yield
    get_settings.cache_clear()


def test_a_failed_open_is_answered_at_once_until_its_retry(setting, monkeypatch):
    tries: list[str] = []

    def down(url):
        tries.append(url)
        raise DatabaseUnavailable("Cannot reach the ClickHouse span store.")

    monkeypatch.setattr(current, "open_span_store", down)
    for _ in range(3):
        with pytest.raises(DatabaseUnavailable, match="Cannot reach"):
            current.span_store()
    assert tries == [URL]  # opened once; the next two were answered from the failure
    monkeypatch.setattr(current, "RETRY_S", 0.0)
    with pytest.raises(DatabaseUnavailable):
        current.span_store()
    assert tries == [URL, URL]


def test_a_request_waits_on_anothers_open_no_longer_than_its_budget(setting, monkeypatch):
    monkeypatch.setattr(current, "open_span_store", lambda url: pytest.fail("not its turn"))
    assert current._LOCK.acquire(timeout=5)  # another request is opening the store
    try:
        with budget.time_budget(0.2), pytest.raises(DatabaseUnavailable, match="being opened"):
            current.span_store()
    finally:
        current._LOCK.release()
