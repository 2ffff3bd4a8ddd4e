"""Alerts page widgets: what fires now (refreshing itself, with a toast for each new alert)
and the history of every state change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import streamlit as st

from observatory_core.accounts.scope import Scope
from observatory_core.alerts.history import active_alerts, events, last_event_id
from observatory_core.metrics.catalog import METRICS
from observatory_core.ui import format
from observatory_core.ui.session import engine, guarded
from observatory_core.ui.zone import local_rows, time_column, time_label

REFRESH_S = 5
HISTORY_DAYS = 30
STATE_BADGE = {
    "firing": "● firing",
    "pending": "◐ pending",
    "resolved": "○ resolved",
    "ok": "○ ok",
}


def _value(v, row: dict | None = None) -> str:
    """A rule's value in its series' unit (a p95 in s, an error rate in %, a cost in $)."""
    if row is not None and row.get("values_hidden"):
        return "hidden for your role"
    if v is None:
        return "no data"
    return format.by_unit(_unit(row), v)


def _unit(row: dict | None) -> str | None:
    metric = ((row or {}).get("series") or "").split(".")[0]
    return METRICS[metric].unit if metric in METRICS else None


def _condition(row: dict) -> str:
    """ "> 2.5 s"; for an anomaly rule "above usual (1.1 s)" (its event's usual value; an alert
    firing now shows the rule's settings)."""
    if row.get("kind") == "anomaly":
        usual = row.get("threshold") if "from_state" in row else None
        seen = "" if usual is None and not row.get("values_hidden") else f" ({_value(usual, row)})"
        return f"{row['direction']} usual{seen}, {row['sensitivity']:g} dev., {row['baseline_weeks']} wk"
    return f"{row['comparator']} {_value(row['threshold'], row)}"


def _in_group(row: dict) -> str:
    return f" for {row['group_by']}={row['group_key']}" if row.get("group_by") else ""


def _muted(until: datetime | None) -> str:
    """ "until 15:30:00 +0545" on the reader's clock while a rule is muted, else empty."""
    return f"until {time_label(until, seconds=True)}" if until and until > datetime.now(UTC) else ""


def _where(row: dict) -> str:
    return f"{row['group_by']}={row['group_key']}" if row.get("group_by") else "—"


@st.fragment(run_every=REFRESH_S)
@guarded
def live_status(scope: Scope) -> None:
    """Refreshes by itself every few seconds; a toast for each alert that fired since the last look."""
    state = st.session_state
    last_seen = state.get("alerts_last_event_id")
    if last_seen is None:  # first look: only what fires from now on is news
        state["alerts_last_event_id"] = last_event_id(engine(), scope)
    else:
        fired = events(engine(), scope, after_id=last_seen, to_states=("firing",), limit=10)
        for event in reversed(fired):
            st.toast(
                f"**{event['name']}** is firing{_in_group(event)}: {_value(event['value'], event)} "
                f"{_condition(event)}",
                icon=":material/notifications_active:",
            )
        state["alerts_last_event_id"] = max([last_seen, *(e["id"] for e in fired)])
    active = active_alerts(engine(), scope)
    firing = [a for a in active if a["state"] == "firing"]
    cols = st.columns(3)
    cols[0].metric("Firing", len(firing))
    cols[1].metric("Pending", len(active) - len(firing))
    resolved = events(
        engine(),
        scope,
        since=datetime.now(UTC) - timedelta(hours=24),
        to_states=("resolved",),
        limit=50,
    )
    cols[2].metric("Resolved (24 h)", len(resolved))
    st.subheader("Firing now")
    if not active:
        st.success("Nothing is firing.", icon=":material/check_circle:")
    else:
        st.dataframe(
            local_rows(
                [
                    {
                        "state": STATE_BADGE[a["state"]],
                        "rule": a["name"],
                        "where": _where(a),
                        "value": _value(a["last_value"], a),
                        "condition": _condition(a),
                        "since": a["since"],
                        "muted": _muted(a["muted_until"]),
                    }
                    for a in active
                ],
                "since",
            ),
            hide_index=True,
            column_config={"since": time_column("Since")},
        )
    st.subheader("Resolved recently")
    if resolved:
        st.dataframe(
            local_rows(
                [
                    {
                        "rule": e["name"],
                        "where": _where(e),
                        "resolved at": e["at"],
                        "last value": _value(e["value"], e),
                    }
                    for e in resolved
                ],
                "resolved at",
            ),
            hide_index=True,
            column_config={"resolved at": time_column("Resolved at")},
        )
    else:
        st.caption("Nothing resolved in the last 24 hours.")
    st.caption(
        f"Updated {time_label(datetime.now(UTC), seconds=True)}; refreshes every {REFRESH_S} s."
    )


@st.fragment(run_every=REFRESH_S * 2)
@guarded
def history(scope: Scope) -> None:
    rows = events(
        engine(), scope, since=datetime.now(UTC) - timedelta(days=HISTORY_DAYS), limit=500
    )
    if not rows:
        st.info(
            f"No alert has changed state in the last {HISTORY_DAYS} days.",
            icon=":material/history:",
        )
        return
    st.caption(f"State changes of the last {HISTORY_DAYS} days, newest first (at most 500).")
    frame = pl.DataFrame(
        local_rows(
            [
                {
                    "at": e["at"],
                    "rule": e["name"],
                    "where": _where(e),
                    "from": e["from_state"],
                    "to": e["to_state"],
                    "value": _value(e["value"], e),
                    "threshold": _condition(e),
                }
                for e in rows
            ],
            "at",
        )
    )
    st.dataframe(frame, hide_index=True, column_config={"at": time_column("At")})
