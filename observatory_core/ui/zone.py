"""The reader's time zone, found once per session and passed to every query and every time
shown (docs/metrics.md, "Time zones"): the zone they chose (stored per user), else their
browser's (`st.context.timezone`), else UTC. Pages never work it out for themselves."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import streamlit as st

from observatory_core.accounts.preferences import set_user_zone, user_zone
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.base.zones import UTC_ZONE, Zone, zone_names
from observatory_core.ui.session import engine

_KEY = "_zone"
_BROWSER = "(my browser's)"


def browser_zone() -> Zone | None:
    """The browser's zone, when it says one this machine knows."""
    name = getattr(st.context, "timezone", None)
    try:
        return Zone(name) if name else None
    except UserError:
        return None


def current_zone() -> Zone:
    """The zone of the person reading this page (one value for every query and label)."""
    zone = st.session_state.get(_KEY)
    if zone is None:
        scope = st.session_state.get("scope")
        chosen = user_zone(engine(), scope) if scope is not None else None
        zone = chosen or browser_zone()
        if zone is None:
            # Not kept: the browser may say its zone on the next run (before login, or on a
            # session's first run), and a session held at UTC would show every time off.
            return UTC_ZONE
        if scope is not None:
            st.session_state[_KEY] = zone
    return zone


def zone_picker(scope: Scope) -> None:
    """The sidebar's time zone choice; stored for the user, in effect from this run on."""
    chosen = user_zone(engine(), scope)
    names = [_BROWSER, *zone_names()]
    index = names.index(chosen.name) if chosen and chosen.name in names else 0
    browser = browser_zone()
    st.sidebar.selectbox(
        "Time zone",
        names,
        index=index,
        key="zone_picker",
        on_change=_store,
        args=(scope,),
        help="Days, weeks, months and every time shown follow this zone. "
        f"Your browser's is {browser.name if browser else 'unknown (UTC is used)'}.",
    )


def _store(scope: Scope) -> None:
    picked = st.session_state.get("zone_picker")
    set_user_zone(engine(), scope, None if picked in (None, _BROWSER) else picked)
    st.session_state.pop(_KEY, None)


def local(t: datetime, zone: Zone | None = None) -> datetime:
    """A UTC instant as a wall-clock time of the zone (naive: charts draw it as written)."""
    zone = zone or current_zone()
    return zone.local(t if t.tzinfo else t.replace(tzinfo=UTC)).replace(tzinfo=None)


def local_series(values: pl.Series, zone: Zone | None = None) -> list[datetime]:
    """A column of UTC instants as the zone's wall-clock times, for a chart's axis."""
    zone = zone or current_zone()
    column = values.cast(pl.Datetime("us", "UTC")).dt.convert_time_zone(zone.name)
    return column.dt.replace_time_zone(None).to_list()


def as_instant(text, zone: Zone | None = None) -> datetime:
    """A chart's axis value (the zone's wall clock, as drawn) back to a UTC instant."""
    zone = zone or current_zone()
    t = datetime.fromisoformat(str(text).replace(" ", "T"))
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=zone.info).astimezone(UTC)


def time_label(t: datetime | None, zone: Zone | None = None, *, seconds: bool = False) -> str:
    """ "2026-03-08 00:00 EST": a time as the reader's clock says it, with the zone's name."""
    if t is None:
        return "—"
    zone = zone or current_zone()
    shown = zone.local(t if t.tzinfo else t.replace(tzinfo=UTC))
    return shown.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def zoom_text(zoom: str) -> str:
    """A zoom kept in the URL ("start~end", ISO instants) as the reader's clock says it."""
    try:
        start, end = (datetime.fromisoformat(t) for t in zoom.split("~"))
    except ValueError:
        return zoom
    return f"{time_label(start)} to {time_label(end)}"


def range_text(start: datetime, end: datetime, zone: Zone | None = None) -> str:
    """A period as the reader's clock says it: "2026-12-01 00:00 to 2026-12-08 00:00 Asia/Kolkata"."""
    zone = zone or current_zone()
    return f"{local(start, zone):%Y-%m-%d %H:%M} to {local(end, zone):%Y-%m-%d %H:%M} {zone.name}"


def column_label(label: str, zone: Zone | None = None) -> str:
    """A time column's header naming the reader's zone: "First seen (Asia/Kathmandu)"."""
    return f"{label} ({(zone or current_zone()).name})"


def time_column(label: str, zone: Zone | None = None, *, fmt: str = "YYYY-MM-DD HH:mm:ss"):
    """A table column of times already on the reader's clock (`local_frame`, `local_rows`),
    its header naming the zone."""
    return st.column_config.DatetimeColumn(column_label(label, zone), format=fmt)


def local_frame(frame: pl.DataFrame, *names: str, zone: Zone | None = None) -> pl.DataFrame:
    """The named columns of UTC instants as the zone's wall-clock times (naive: a table shows
    them as written, under a header naming the zone)."""
    zone = zone or current_zone()
    present = [n for n in names if n in frame.columns and isinstance(frame.schema[n], pl.Datetime)]
    return frame.with_columns(
        pl.col(n)
        .pipe(lambda c, n=n: c if frame.schema[n].time_zone else c.dt.replace_time_zone("UTC"))
        .dt.convert_time_zone(zone.name)
        .dt.replace_time_zone(None)
        for n in present
    )


def local_rows(rows: list[dict], *names: str, zone: Zone | None = None) -> list[dict]:
    """Rows (dicts) with the named times on the zone's wall clock, for a table."""
    zone = zone or current_zone()
    return [
        {k: local(v, zone) if k in names and isinstance(v, datetime) else v for k, v in r.items()}
        for r in rows
    ]


def clock(t: datetime, zone: Zone | None = None) -> str:
    """A time of day on the reader's clock with the zone's abbreviation ("14:05:09 +0545"),
    for feeds and turns where the date is plain from the context."""
    zone = zone or current_zone()
    return zone.local(t if t.tzinfo else t.replace(tzinfo=UTC)).strftime("%H:%M:%S %Z")
