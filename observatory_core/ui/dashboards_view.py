"""Widgets and charts of the Dashboards page: pick a dashboard (its id in the link), draw its
grid of charts under the sidebar's period and filters, and, for developers and admins, create,
duplicate, edit, import and delete. The charts are Vega-Lite specs built by
`ui.dashboard_charts` (no widgets), so a test reads what the browser is sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.dashboards import store
from observatory_core.dashboards.model import (
    CHART_BUCKETS,
    KINDS,
    MAX_COLUMNS,
    MAX_TOP,
    Dashboard,
    chart_from_dict,
    chart_to_dict,
    filters_to,
    from_dict,
    from_json,
    to_dict,
    to_json,
)
from observatory_core.dashboards.render import ChartData, change, each_chart, total
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import MAX_GROUP_BY, METRICS
from observatory_core.metrics.engine import MetricResult
from observatory_core.ui import dashboard_charts, format, group_choice
from observatory_core.ui import metrics_view as mv
from observatory_core.ui.filters import WINDOWS
from observatory_core.ui.session import engine
from observatory_core.ui.zone import current_zone

PAGE_PARAMS = frozenset({"d", "edit"})
SEEDED = "dash_seeded"  # the dashboard whose own period and filters the link was given
# numbers that are better when they go down: their rise is drawn red
WORSE_UP = ("usd", "ms")


def can_manage(scope: Scope) -> bool:
    return scope.can(Permission.DASHBOARDS_MANAGE)


def _open(dashboard_id: int, board: Dashboard, *, edit: bool = False) -> None:
    """Show `board` with its own period and filters (the link then says so) and rerun."""
    st.session_state[SEEDED] = dashboard_id
    st.query_params.clear()
    st.query_params["d"] = str(dashboard_id)
    for key, value in filters_to(board.filters, time=True).items():  # the period always
        st.query_params[key] = value
    if edit:
        st.query_params["edit"] = "1"
    st.rerun()


def pick(scope: Scope) -> dict | None:
    """The dashboard the link names (`d`), else the first; a picker to switch. Opening one
    without filters in its link applies the dashboard's own period and filters."""
    rows = store.list_dashboards(engine(), scope)
    if not rows:
        return None
    ids = [r["id"] for r in rows]
    names = {r["id"]: r["name"] for r in rows}
    try:
        asked = int(st.query_params.get("d", ids[0]))
    except ValueError:
        asked = ids[0]
    if asked not in ids:
        st.warning(f"Dashboard {asked} is not one of your org's; showing {names[ids[0]]!r}.")
        asked = ids[0]
    chosen = st.selectbox(
        "Dashboard", ids, index=ids.index(asked), format_func=names.get, key=f"dash_pick_{asked}"
    )
    row = store.get_dashboard(engine(), scope, chosen)
    # the sidebar drops a default (24 hours) from the link, so whether the dashboard's own
    # filters were applied is remembered, not read back from the link
    fresh = st.session_state.get(SEEDED) != chosen and not set(st.query_params) - PAGE_PARAMS
    if chosen != asked or fresh:
        _open(chosen, row["dashboard"], edit=st.query_params.get("edit") == "1")
    st.session_state[SEEDED] = chosen
    st.query_params["d"] = str(chosen)  # a shared link's own filters stay as they are
    return row


def toolbar(scope: Scope, row: dict | None) -> None:
    """Export for everyone; new, duplicate, edit, import and delete for managers."""
    manage = can_manage(scope)
    cells = st.columns([1, 1, 1, 1, 1, 1])
    if row is not None:
        cells[0].download_button(
            "Export JSON",
            to_json(row["dashboard"]),
            file_name=f"{row['name']}.json",
            mime="application/json",
            icon=":material/download:",
            help="The definition, to keep in version control; Import (or the API) reads it back.",
        )
    if not manage:
        return
    if cells[1].button("New", icon=":material/add:", key="dash_new"):
        taken = {r["name"] for r in store.list_dashboards(engine(), scope)}
        name = store.free_name("New dashboard", taken)
        made = store.create_dashboard(engine(), scope, Dashboard(name=name))
        _open(made["id"], made["dashboard"], edit=True)
    if row is None:
        _import(scope, cells[5])
        return
    if cells[2].button("Duplicate", icon=":material/content_copy:", key="dash_duplicate"):
        made = store.duplicate_dashboard(engine(), scope, row["id"])
        _open(made["id"], made["dashboard"])
    if cells[3].button("Edit", icon=":material/edit:", key="dash_edit"):
        st.query_params["edit"] = "1"
        st.rerun()
    with cells[4].popover("Delete", icon=":material/delete:"):
        st.write(f"Delete **{row['name']}** for everyone in your org?")
        if st.button("Delete it", type="primary", key="dash_delete"):
            store.delete_dashboard(engine(), scope, row["id"])
            st.query_params.clear()
            st.rerun()
    _import(scope, cells[5])


def _import(scope: Scope, cell) -> None:
    with cell.popover("Import", icon=":material/upload:"):
        text = st.text_area("A dashboard's JSON (an export)", key="dash_import_text", height=200)
        if st.button("Import", key="dash_import"):
            try:
                made = store.create_dashboard(engine(), scope, from_json(text))
            except UserError as exc:
                st.error(str(exc), icon=":material/error:")
                return
            _open(made["id"], made["dashboard"])


# ---- drawing ---------------------------------------------------------------------------


def loaded(scope: Scope, board: Dashboard, spec: FilterSpec) -> Iterator[tuple[int, ChartData]]:
    """Each chart's data through the page's metrics cache, as it is read (`each_chart`); the
    loading threads carry this run's Streamlit context, as the cache needs it."""
    from observatory_core.ui import cached

    def run(query, top: int) -> MetricResult:
        return cached.metrics(scope, query, max_groups=top, spinner=False)

    context = get_script_run_ctx()

    def attach() -> None:
        if context is not None:
            add_script_run_ctx(threading.current_thread(), context)

    return each_chart(run, scope, board, spec, current_zone(), on_thread=attach)


QUICK_PERIODS = ("1h", "24h", "7d", "30d", "90d")


def period_bar(spec: FilterSpec) -> None:
    """The period at the top of the dashboard, for every chart: a click puts it in the link
    (no start or end), and the sidebar, which reads the link, follows."""
    current = spec.relative if spec.relative in QUICK_PERIODS and not spec.start else None
    chosen = st.segmented_control(
        "Period",
        QUICK_PERIODS,
        default=current,
        format_func=lambda w: WINDOWS[w].removeprefix("Last "),
        key=f"dash_period_{current}",
    )
    if chosen and chosen != current:
        st.query_params["relative"] = chosen
        for bound in ("start", "end"):
            if bound in st.query_params:
                del st.query_params[bound]
        st.rerun()


def draw(scope: Scope, board: Dashboard, spec: FilterSpec) -> None:
    """The grid: charts fill rows of `columns` cells in order, each `width` cells wide."""
    if board.description:
        st.caption(board.description)
    if not board.charts:
        st.info(
            "This dashboard has no charts yet. "
            + ("Edit it to add some." if can_manage(scope) else "")
        )
        return
    started = time.perf_counter()
    rows: list[list[int]] = [[]]
    used = 0
    for index, chart in enumerate(board.charts):
        width = min(chart.width, board.columns)
        if used + width > board.columns:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += width
    datas = dict(loaded(scope, board, spec))
    for i, row in enumerate(rows):
        widths = [min(board.charts[index].width, board.columns) for index in row]
        spare = board.columns - sum(widths)
        cells = st.columns(widths + ([spare] if spare else []))
        for j, index in enumerate(row):
            with cells[j].container(border=True):
                _cell(datas[index], key=f"dash_chart_{i}_{j}")
    seconds = time.perf_counter() - started
    count = f"{len(board.charts)} chart{'s' if len(board.charts) != 1 else ''}"
    st.caption(f"{count} · computed in {seconds * 1000:,.0f} ms")


def metrics_link(data: ChartData) -> str | None:
    """The Metrics page's link for the chart's query (a chart is that page's query state):
    the same series, bucket, group-by, top groups and filters, to explore it further."""
    query = data.query
    if query is None:
        return None
    subject = METRICS[data.chart.series.split(".")[0]].subject.value
    params: dict[str, list[str]] = {
        **query.filters.to_query_params(),
        "s": [subject],
        "m": [data.chart.series],
        "b": [query.bucket or "auto"],
        "top": [str(data.chart.top)],
    }
    if query.group_by:
        params["g"] = [",".join(query.group_by)]
    return "/metrics?" + urlencode(params, doseq=True)


def _cell(data: ChartData, key: str) -> None:
    chart = data.chart
    link = None if data.hidden else metrics_link(data)
    title = f"**{chart.title}**" if chart.kind != "number" else ""
    if link:
        title += f" [:material/open_in_new: Metrics]({link})"
    if title:
        st.markdown(title.strip(), help="Open this chart's query on the Metrics page.")
    if data.hidden:
        st.info(data.hidden, icon=":material/lock:")
        return
    if data.problem:
        st.warning(data.problem, icon=":material/tune:")
        return
    result = data.result
    assert result is not None
    if chart.kind == "number":
        unit = METRICS[chart.series.split(".")[0]].unit
        moved = change(data)
        st.metric(
            chart.title,
            format.by_unit(unit, total(result)),
            delta=format.change(None if moved is None else moved * 100),
            delta_color="inverse" if unit in WORSE_UP or "error" in chart.series else "normal",
            help="Against the period of the same length just before.",
        )
        return
    if mv.is_empty(result):
        st.caption("No spans match in this period.")
        return
    if chart.kind == "table":
        shown, columns = mv.shown_table(result)
        st.dataframe(shown, hide_index=True, column_config=columns, width="stretch")
        return
    rows, spec = dashboard_charts.chart_spec(data)
    st.vega_lite_chart(rows, spec, width="stretch", key=key)


# ---- editing ---------------------------------------------------------------------------


def _draft_key(row: dict) -> str:
    return f"dash_draft_{row['id']}_{row['updated_at'].isoformat()}"


def editor(scope: Scope, row: dict, spec: FilterSpec) -> None:
    """Name, grid and charts of a draft kept until Save; a chart is added through the Metrics
    page's choices and checked as it is added; the JSON can be edited whole."""
    key = _draft_key(row)
    draft: dict = st.session_state.setdefault(key, to_dict(row["dashboard"]))
    st.subheader(f"Editing {row['name']}")
    left, mid, right = st.columns([3, 4, 1])
    draft["name"] = left.text_input("Name", draft["name"], max_chars=100, key=f"{key}_name")
    draft["description"] = mid.text_input(
        "Description", draft.get("description", ""), key=f"{key}_description"
    )
    draft["columns"] = int(
        right.number_input("Columns", 1, MAX_COLUMNS, draft.get("columns", 2), key=f"{key}_cols")
    )
    if st.checkbox(
        "Open with the sidebar's period and filters",
        help="Saved as the dashboard's own; a link with filters of its own still wins.",
        key=f"{key}_filters",
    ):
        draft["filters"] = filters_to(spec, time=True)
    for i, chart in enumerate(list(draft["charts"])):
        cells = st.columns([6, 1, 1, 1, 1])
        cells[0].markdown(
            f"{i + 1}. **{chart['title']}** · {KINDS[chart['kind']]} of {mv.series_label(chart['series'])}"
            + (f" by {', '.join(chart['group_by'])}" if chart.get("group_by") else "")
        )
        if cells[1].button("Edit", key=f"{key}_edit_{i}"):
            _into_form(key, i, chart)
            st.rerun()
        if cells[2].button("Up", key=f"{key}_up_{i}", disabled=i == 0):
            charts = draft["charts"]
            charts[i - 1], charts[i] = charts[i], charts[i - 1]
            st.rerun()
        if cells[3].button("Down", key=f"{key}_down_{i}", disabled=i == len(draft["charts"]) - 1):
            charts = draft["charts"]
            charts[i + 1], charts[i] = charts[i], charts[i + 1]
            st.rerun()
        if cells[4].button("Remove", key=f"{key}_remove_{i}"):
            draft["charts"].pop(i)
            st.session_state.pop(f"{key}_editing", None)
            st.rerun()
    _add_chart(scope, draft, key)
    with st.expander("Edit as JSON"):
        text = st.text_area(
            "Definition", json.dumps(draft, indent=2), height=300, key=f"{key}_json"
        )
        if st.button("Apply JSON", key=f"{key}_apply"):
            try:
                st.session_state[key] = to_dict(from_json(text))
            except UserError as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.rerun()
    save, cancel, _ = st.columns([1, 1, 6])
    if save.button("Save", type="primary", key=f"{key}_save"):
        try:
            saved = store.update_dashboard(engine(), scope, row["id"], from_dict(draft))
        except UserError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        st.session_state.pop(key, None)
        _open(saved["id"], saved["dashboard"])
    if cancel.button("Cancel", key=f"{key}_cancel"):
        st.session_state.pop(key, None)
        del st.query_params["edit"]
        st.rerun()


FORM = ("title", "kind", "series", "bucket", "group", "top", "width")


def _into_form(key: str, index: int, chart: dict) -> None:
    """Put a chart's settings into the chart form, to change and update it in place."""
    state = st.session_state
    state[f"{key}_editing"] = index
    for name, value in (
        ("title", chart["title"]),
        ("kind", chart["kind"]),
        ("series", chart["series"]),
        ("bucket", chart["bucket"]),
        ("group", list(chart.get("group_by", []))),
        ("top", chart.get("top", 5)),
        ("width", chart.get("width", 1)),
    ):
        state[f"{key}_new_{name}"] = value


def _add_chart(scope: Scope, draft: dict, key: str) -> None:
    """The chart form: a new chart, or the one whose Edit was clicked (its own filters are
    kept; Edit as JSON changes them)."""
    editing = st.session_state.get(f"{key}_editing")
    label = "Add a chart" if editing is None else f"Change chart {editing + 1}"
    with st.expander(label, expanded=not draft["charts"] or editing is not None):
        top = st.columns([3, 2, 3])
        title = top[0].text_input("Title", key=f"{key}_new_title")
        kinds = list(KINDS)
        kind = top[1].selectbox("Kind", kinds, format_func=KINDS.get, key=f"{key}_new_kind")
        options = mv.series_options(scope)
        series = top[2].selectbox(
            "Metric", options, format_func=mv.series_label, key=f"{key}_new_series"
        )
        low = st.columns([2, 4, 1, 1])
        bucket = low[0].selectbox("Bucket", CHART_BUCKETS, key=f"{key}_new_bucket")
        chosen = low[1].multiselect(
            "Group by",
            group_choice.options(st.session_state.get(f"{key}_new_group") or []),
            max_selections=MAX_GROUP_BY,
            accept_new_options=True,
            key=f"{key}_new_group",
            help=group_choice.KEY_HELP,
        )
        group_by, problem = group_choice.valid(chosen)
        limit = low[2].number_input("Top groups", 1, MAX_TOP, 5, key=f"{key}_new_top")
        width = low[3].number_input("Width", 1, MAX_COLUMNS, 1, key=f"{key}_new_width")
        verb = "Add chart" if editing is None else "Update chart"
        if st.button(verb, icon=":material/add_chart:", key=f"{key}_add"):
            if problem:
                st.error(problem, icon=":material/error:")
                return
            data = {
                "title": title or mv.series_label(series),
                "kind": kind,
                "series": series,
                "bucket": bucket,
                "group_by": group_by,
                "top": int(limit),
                "width": int(width),
            }
            at = len(draft["charts"]) if editing is None else editing
            if editing is not None and draft["charts"][editing].get("filters"):
                data["filters"] = draft["charts"][editing]["filters"]
            try:
                chart = chart_to_dict(chart_from_dict(data, at))
            except UserError as exc:
                st.error(str(exc), icon=":material/error:")
                return
            if editing is None:
                draft["charts"].append(chart)
            else:
                draft["charts"][editing] = chart
            for name in FORM:  # an empty form for the next chart
                st.session_state.pop(f"{key}_new_{name}", None)
            st.session_state.pop(f"{key}_editing", None)
            st.rerun()
