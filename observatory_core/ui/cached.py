"""Streamlit caches over core reads. Recent data changes fast, so TTLs here are short."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from observatory_core.scope import Scope
from observatory_core.summary import HomeSummary, home_summary
from observatory_core.ui.session import engine


@st.cache_data(ttl=30, show_spinner="Counting the last 24 hours…")
def _home(scope: Scope, minute: str) -> HomeSummary:
    now = datetime.fromisoformat(minute)
    return home_summary(engine(), scope, now=now)


def home(scope: Scope) -> HomeSummary:
    """Cached per minute: the numbers move with the clock but a rerun costs nothing."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
    return _home(scope, minute)
