"""Overview: this period against the previous one, who spends, what fails, the month's budget."""

import streamlit as st

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.visibility import metric_visible
from observatory_core.reports.overview import TOP_BY, set_budget
from observatory_core.ui import cached
from observatory_core.ui import overview_view as ov
from observatory_core.ui import whatchanged_view as wc
from observatory_core.ui.group_choice import group_by_select
from observatory_core.ui.session import current_scope, engine
from observatory_core.ui.zone import current_zone, time_label

scope = current_scope()
costs = metric_visible(scope, "total_cost")
st.title("Overview")
zone = current_zone()
now = cached.minute()
spec = ov.period_spec(ov.period(), zone, now)
view = cached.overview(scope, spec.to_json(), now, zone.name)
st.caption(
    f"{time_label(view.start, zone)} to {time_label(view.end, zone)} against the "
    f"period of equal length before. {view.source}"
)
ov.kpi_tiles(view)
with st.expander("What drove each change (by model)", expanded=True):
    wc.headline_contributors(
        cached.headlines(scope, spec.to_json(), view.start, view.end, now), scope
    )

st.subheader("Top")
ranks = [b for b in TOP_BY if metric_visible(scope, TOP_BY[b].split(".")[0])]
by = st.segmented_control("Rank by", ranks, default=ranks[0], key="ov_by") or ranks[0]
tabs = st.tabs(["Models", "Users", "Projects", "By any key"])
for tab, dimension in zip(tabs, ["model", "user_id", "project", None], strict=True):
    with tab:
        if dimension is None:  # a tag or metadata key, or any other group-by
            dimension = group_by_select(st, "Group by", "tag:customer", key="ov_key")
        result = cached.ranking(scope, spec.to_json(), dimension, by, now)
        ov.ranking(result.frame, dimension, TOP_BY[by], by)

st.subheader("Most common errors")
st.caption("Failed spans of every kind (LLM calls, tools, retrievals...) by error type.")
errors = cached.errors(scope, spec.to_json(), now)
if errors.is_empty():
    st.success("No errors in this period.", icon=":material/check_circle:")
else:
    st.dataframe(
        errors.with_columns(  # on the reader's clock
            errors["last_seen"].dt.convert_time_zone(zone.name).dt.replace_time_zone(None)
        ),
        hide_index=True,
        column_config={
            "error_type": st.column_config.TextColumn("Error type"),
            "count": st.column_config.NumberColumn("Failed spans", format="%,d"),
            "sample_message": st.column_config.TextColumn("Sample message", width="large"),
            "last_seen": st.column_config.DatetimeColumn(
                f"Last seen ({zone.name})", format="YYYY-MM-DD HH:mm"
            ),
        },
        width="stretch",
    )

if costs:
    st.subheader("Cost per day by model")
    daily = cached.daily_cost(scope, spec.to_json(), now, zone.name)
    st.plotly_chart(ov.cost_per_day(daily.frame, daily.partial_buckets, zone), width="stretch")
    st.subheader("Budget this month")
    ov.budget(cached.burn(scope, now, zone.name))
    if scope.can(Permission.ADMIN):
        with st.popover("Set the monthly budget", icon=":material/savings:"):
            amount = st.number_input("USD per month", min_value=1.0, value=1000.0, step=100.0)
            if st.button("Save budget"):
                set_budget(engine(), scope, amount)
                cached.burn.clear()
                st.rerun()
