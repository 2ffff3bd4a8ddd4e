"""Which pages a role sees. A page is listed only when it works and the role may use it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

import streamlit as st

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    icon: str
    needs: Permission


PAGES = (
    PageSpec("pages/home.py", "Home", ":material/home:", Permission.METRICS_READ),
    PageSpec("pages/overview.py", "Overview", ":material/insights:", Permission.METRICS_READ),
    PageSpec("pages/metrics.py", "Metrics", ":material/monitoring:", Permission.METRICS_READ),
    PageSpec("pages/dashboards.py", "Dashboards", ":material/dashboard:", Permission.METRICS_READ),
    PageSpec(
        "pages/what_changed.py",
        "What changed",
        ":material/waterfall_chart:",
        Permission.METRICS_READ,
    ),
    PageSpec(
        "pages/attribution.py", "Cost attribution", ":material/pie_chart:", Permission.METRICS_READ
    ),
    PageSpec("pages/traces.py", "Traces", ":material/account_tree:", Permission.TRACES_READ),
    PageSpec("pages/users.py", "Users", ":material/group:", Permission.METRICS_READ),
    PageSpec("pages/sessions.py", "Sessions", ":material/forum:", Permission.METRICS_READ),
    PageSpec("pages/exports.py", "Exports", ":material/download:", Permission.EXPORTS_READ),
    PageSpec("pages/alerts.py", "Alerts", ":material/notifications:", Permission.ALERTS_READ),
    PageSpec("pages/live.py", "Live", ":material/stream:", Permission.ALERTS_READ),
    PageSpec("pages/admin.py", "Admin", ":material/admin_panel_settings:", Permission.ADMIN),
)


def pages_for(scope: Scope) -> list[st.Page]:
    allowed = [p for p in PAGES if scope.can(p.needs)]
    return [
        st.Page(p.path, title=p.title, icon=p.icon, default=i == 0) for i, p in enumerate(allowed)
    ]


def hold_link() -> None:
    """While logged out on a deep link, register every page (hidden) before the login form.

    Streamlit resets a path it cannot route, so without this a shared link would lose its
    page and filters at the login screen. On the plain root URL there is nothing to keep,
    and registering pages there would move the session's first run to another page and
    lose the first login click, so it is skipped.
    """
    path = urlparse(st.context.url or "").path.strip("/")
    if path or len(st.query_params):
        st.navigation([st.Page(p.path, title=p.title) for p in PAGES], position="hidden")


def sidebar_user(scope: Scope) -> None:
    with st.sidebar:
        st.markdown(f"**{scope.username}** · {scope.role.value}")
