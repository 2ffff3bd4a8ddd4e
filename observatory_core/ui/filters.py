"""The filter sidebar: widgets <-> FilterSpec <-> URL query parameters.

The URL is the source of truth: a pasted link fills the widgets, and every change the user
makes is written back, so the address bar always reproduces the view.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import filter_allowed
from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.field_declaration import Field, FilterKind, Widget
from observatory_core.semantic.field_lookups import filtered
from observatory_core.ui import cached, format
from observatory_core.ui.zone import current_zone, time_label

WINDOWS = {
    "15m": "Last 15 minutes",
    "1h": "Last hour",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "365d": "Last 365 days",
    "all": "All time",
    "custom": "Custom range",
}


_CHOICES = (Widget.SEEN, Widget.CHOICES, Widget.STATUS, Widget.PROJECT)


def _widgets() -> list[tuple[str, Field, str]]:
    """(filter key, field, label) of every sidebar widget, in declaration order: each field
    declares its widget kind (`semantic.fields`)."""
    out = []
    for field in filtered():
        label = field.widget_label or field.label
        if field.widget is Widget.NONE:
            continue
        if field.filter is FilterKind.TAGS:
            any_key, all_key = field.filter_keys()
            out += [(any_key, field, f"{label}: any of"), (all_key, field, f"{label}: all of")]
        elif field.filter is FilterKind.RANGE:
            out.append((field.filter_keys()[0][4:], field, label))  # the stem of min_/max_
        else:
            out.append((field.filter_keys()[0], field, label))
    return out


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def url_params() -> dict[str, list[str]]:
    return {k: st.query_params.get_all(k) for k in st.query_params}


def _defaults(spec: FilterSpec) -> dict:
    """The widget values a spec stands for (on first load or a new link)."""
    window = spec.relative or ("custom" if spec.start or spec.end else "all")
    now = datetime.now(UTC)
    values: dict = {
        "window": window if window in WINDOWS else "custom",
        "from": current_zone().local(spec.start or now - timedelta(days=1)).date(),
        # the last day the range covers: an end at midnight is the day before's end
        "to": current_zone()
        .local(spec.end - timedelta(microseconds=1) if spec.end else now)
        .date(),
    }
    for name, field, _ in _widgets():
        match field.widget:
            case Widget.STATUS:
                values[name] = format.status_choices(getattr(spec, name))
            case Widget.SEEN | Widget.CHOICES | Widget.PROJECT:
                values[name] = list(getattr(spec, name))
            case Widget.TEXT_LIST:
                values[name] = ", ".join(getattr(spec, name))
            case Widget.METADATA:
                values[name] = ", ".join(f"{key}={value}" for key, value in getattr(spec, name))
            case Widget.SEARCH:
                values[name] = getattr(spec, name) or ""
            case Widget.RANGE:
                values["min_" + name] = getattr(spec, "min_" + name)
                values["max_" + name] = getattr(spec, "max_" + name)
    return values


def _spec_from_widgets(k) -> FilterSpec:
    s = st.session_state
    window = s[k("window")]
    values: dict = {"relative": None if window in ("all", "custom") else window}
    if window == "custom":
        # whole days of the reader's calendar (a 23- or 25-hour day when the clocks change)
        zone = current_zone()
        values["start"] = zone.midnight(s[k("from")])
        values["end"] = zone.midnight(s[k("to")] + timedelta(days=1))
    # a widget not drawn (a filter the role may not use) leaves its filter unset
    for name, field, _ in _widgets():
        match field.widget:
            case Widget.STATUS:
                # "ok" is what a user calls a call without an error: stored as ok or unset
                values[name] = format.status_filter(s.get(k(name), []))
            case Widget.SEEN | Widget.CHOICES | Widget.PROJECT:
                values[name] = tuple(s.get(k(name), ()))
            case Widget.TEXT_LIST:
                values[name] = _csv(s.get(k(name), ""))
            case Widget.METADATA:
                pairs = [p.split("=", 1) for p in _csv(s.get(k(name), ""))]
                if any(len(p) != 2 for p in pairs):
                    raise UserError(f"Filter '{name}': write key=value, separated by commas.")
                values[name] = tuple((key.strip(), value.strip()) for key, value in pairs)
            case Widget.SEARCH:
                values[name] = s.get(k(name)) or None
            case Widget.RANGE:
                values["min_" + name] = s.get(k("min_" + name))
                values["max_" + name] = s.get(k("max_" + name))
    return FilterSpec(**values)


def describe(spec: FilterSpec) -> str:
    """One line a person reads: `last 7 days · models: gpt-4o · search: "refund"`."""
    parts = [WINDOWS.get(spec.relative, spec.relative) if spec.relative else None]
    if spec.start or spec.end:
        parts[0] = (
            f"{time_label(spec.start)} to {time_label(spec.end)}"
            if spec.start and spec.end
            else "open range"
        )
    elif spec.relative is None:
        parts[0] = "all time"
    for key, values in spec.to_query_params().items():
        if key not in ("relative", "start", "end"):
            parts.append(f"{key.replace('_', ' ')}: {', '.join(values)}")
    return " · ".join(p for p in parts if p)


def _choice(k, d: dict, label: str, name: str, options, format_func=str) -> None:
    """A multiselect whose options always include what a pasted link selected."""
    options = list(dict.fromkeys([*options, *d[name]]))
    st.multiselect(label, options, default=d[name], format_func=format_func, key=k(name))


def _allowed(scope: Scope, widget: tuple[str, Field, str]) -> bool:
    name, field, _ = widget
    return filter_allowed(scope, "min_" + name if field.filter is FilterKind.RANGE else name)


def _choice_widget(scope: Scope, k, d: dict, name: str, field: Field, label: str) -> None:
    match field.widget:
        case Widget.SEEN:
            _choice(k, d, label, name, cached.values(scope, field.name))
        case Widget.CHOICES:
            _choice(k, d, label, name, field.choices or ())
        case Widget.STATUS:
            _choice(k, d, label, name, format.status_choices(field.choices or ()))
        case Widget.PROJECT:
            projects = cached.projects(scope)
            _choice(k, d, label, name, list(projects), lambda p: projects.get(p, f"#{p}"))


def _hidden_in_link(scope: Scope, params: dict[str, list[str]]) -> list[str]:
    """Filters of a pasted link this role may not use: they are dropped, and the page says so."""
    return [name for name in params if not filter_allowed(scope, name)]


def _from_url_or_default(scope: Scope, params: dict[str, list[str]]) -> FilterSpec:
    try:
        allowed = {k: v for k, v in params.items() if filter_allowed(scope, k)}
        return FilterSpec.from_query_params(allowed)
    except UserError:
        return FilterSpec()


def sidebar(scope: Scope, page_params: frozenset[str], page: str) -> FilterSpec:
    """Draw the filter widgets and return the spec they describe."""
    params = url_params()
    filter_params = {k: v for k, v in params.items() if k not in page_params}

    state = st.session_state
    generation = f"flt_{page}_generation"

    def k(name: str) -> str:  # e.g. "flt_traces_3_models": per page and per seeding
        return f"flt_{page}_{state.get(generation, 0)}_{name}"

    # Seed from the URL when it changed from outside (a pasted link, a page switch) or this
    # page's widgets are new. Seeding uses fresh keys: a widget id the browser has seen
    # before can come back with its old value and override what the link says.
    if state.get(f"flt_{page}_seen") != filter_params or k("window") not in state:
        state[generation] = state.get(generation, 0) + 1
        try:
            state[f"flt_{page}_defaults"] = _defaults(FilterSpec.from_query_params(filter_params))
        except UserError as exc:
            st.sidebar.error(f"The link's filters were not applied: {exc}")
            state[f"flt_{page}_defaults"] = _defaults(FilterSpec())
        state[f"flt_{page}_seen"] = filter_params
    # Widgets take the link's values as their own defaults, under keys never used before.
    d = state[f"flt_{page}_defaults"]
    dropped = _hidden_in_link(scope, filter_params)
    with st.sidebar:
        st.header("Filters")
        windows = list(WINDOWS)
        window = st.selectbox(
            "Time",
            windows,
            index=windows.index(d["window"]),
            format_func=WINDOWS.get,
            key=k("window"),
        )
        if window == "custom":
            left, right = st.columns(2)
            left.date_input("From", value=d["from"], key=k("from"))
            right.date_input("To (inclusive)", value=d["to"], key=k("to"))
        if dropped:
            st.warning(
                f"Not applied: {', '.join(dropped)}; your role cannot see the fields "
                "they filter on.",
                icon=":material/visibility_off:",
            )
        widgets = [w for w in _widgets() if _allowed(scope, w)]
        for name, _, label in (w for w in widgets if w[1].widget is Widget.SEARCH):
            st.text_input(label, value=d[name], key=k(name), placeholder="3+ characters")
        for name, field, label in (w for w in widgets if w[1].widget in _CHOICES):
            _choice_widget(scope, k, d, name, field, label)
        with st.expander("Ids, tags, metadata"):
            for name, field, label in widgets:
                if field.widget is Widget.TEXT_LIST:
                    st.text_input(label, value=d[name], key=k(name))
                elif field.widget is Widget.METADATA:
                    st.text_input(label, value=d[name], key=k(name), placeholder="region=eu-west-1")
        with st.expander("Duration, cost, tokens"):
            for name, _, label in (w for w in widgets if w[1].widget is Widget.RANGE):
                low, high = st.columns(2)
                low.number_input(
                    f"{label} min", min_value=0.0, value=d["min_" + name], key=k("min_" + name)
                )
                high.number_input(
                    f"{label} max", min_value=0.0, value=d["max_" + name], key=k("max_" + name)
                )
    try:
        spec = _spec_from_widgets(k)
    except UserError as exc:
        st.sidebar.error(str(exc))
        spec = _from_url_or_default(scope, filter_params)
    wanted = spec.to_query_params()
    if wanted != filter_params:
        kept = {k: v for k, v in params.items() if k in page_params}
        st.query_params.from_dict({**wanted, **kept})
        state[f"flt_{page}_seen"] = wanted
    return spec
