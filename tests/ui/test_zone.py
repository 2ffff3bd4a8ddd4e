"""The reader's zone is not fixed at UTC for a whole session because the browser had not said
its zone yet on the first run (the e2e export schedule in New York once showed a UTC clock)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from observatory_core.base.zones import Zone
from observatory_core.ui import zone


def _script() -> None:
    import streamlit as st

    from observatory_core.ui.zone import current_zone

    st.write(current_zone().name)


def test_a_zone_the_browser_says_later_is_used_from_that_run_on(monkeypatch):
    said: list[Zone | None] = [None]
    monkeypatch.setattr(zone, "browser_zone", lambda: said[0])
    at = AppTest.from_function(_script).run()
    assert [m.value for m in at.markdown] == ["UTC"]
    said[0] = Zone("America/New_York")
    at.run()
    assert [m.value for m in at.markdown] == ["America/New_York"]


def test_a_logged_in_readers_browser_zone_is_kept_for_the_session(monkeypatch, tmp_path):
    said: list[Zone | None] = [Zone("Asia/Kathmandu")]
    monkeypatch.setattr(zone, "browser_zone", lambda: said[0])
    monkeypatch.setattr(zone, "user_zone", lambda engine, scope: None)
    monkeypatch.setattr(zone, "engine", lambda: None)
    at = AppTest.from_function(_script)
    at.session_state["scope"] = object()
    at.run()
    said[0] = None  # one run without the browser's word keeps the zone found before
    at.run()
    assert [m.value for m in at.markdown] == ["Asia/Kathmandu"]
