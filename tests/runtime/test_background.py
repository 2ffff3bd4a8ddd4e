"""A server's shutdown closes the span store it opened: chDB holds its folder until closed, so a
process started after it (a restart, a tool) could not open the folder."""

from __future__ import annotations

from observatory_core.ingest import service
from observatory_core.runtime.background import Background
from observatory_core.storage.clickhouse import current


class _Store:
    closed = 0

    def close(self) -> None:
        self.closed += 1


def test_stopping_the_background_closes_the_span_store(monkeypatch):
    monkeypatch.setattr(service, "_pair", None)
    monkeypatch.setattr(service, "_stopped", False)  # stop() refuses later ingest: undone here
    store = _Store()
    opened = {"chdb:///tmp/nowhere": store}  # the module's own, other tests' stores untouched
    monkeypatch.setattr(current, "_OPEN", opened)
    Background().stop()
    assert store.closed == 1
    assert opened == {}
