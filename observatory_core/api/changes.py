"""GET /changes: what changed between two periods, split by a group-by (the What changed page)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from observatory_core.accounts.scope import Scope
from observatory_core.api.change_schemas import ChangeBody
from observatory_core.api.common import (
    FILTER_PARAMETERS,
    TZ_DESCRIPTION,
    cache,
    errors,
    filter_spec,
    with_local_times,
    zone_of,
)
from observatory_core.api.context import caller, meta, span_engine
from observatory_core.reports.whatchanged import (
    DEFAULT_TOP,
    MAX_TOP,
    PARAMS,
    Change,
    Periods,
    what_changed,
)

router = APIRouter(tags=["metrics"])
PERIOD_TIMES = ("before_start", "before_end", "after_start", "after_end")


def change_data(change: Change) -> dict:
    """A `Change` as the API's (and the page's download's) plain values."""
    p = change.periods
    return {
        "series": change.series,
        "label": change.label,
        "unit": change.unit,
        "dimension": change.dimension,
        "method": change.method,
        "before_start": p.before_start,
        "before_end": p.before_end,
        "after_start": p.after_start,
        "after_end": p.after_end,
        "before": change.before,
        "after": change.after,
        "change": change.change,
        "groups": change.groups,
        "source": change.source,
        "contributions": [
            {
                "value": c.value,
                "groups": c.groups,
                "before": c.before,
                "after": c.after,
                "weight_before": c.weight_before,
                "weight_after": c.weight_after,
                "change": c.change,
                "mix": c.mix,
                "rate": c.rate,
                "z": c.verdict.z,
                "significant": c.verdict.significant,
            }
            for c in change.contributions
        ],
    }


@router.get(
    "/changes",
    response_model=ChangeBody,
    responses=errors(400, 403),
    openapi_extra=FILTER_PARAMETERS,
)
def changes(
    request: Request,
    scope: Annotated[Scope, Depends(caller)],
    series: Annotated[
        str,
        Query(
            description="A sum, count, ratio or average, e.g. total_cost.sum, error_rate.avg, "
            "duration_ms.avg; percentiles cannot be split and are refused"
        ),
    ],
    dimension: Annotated[str, Query(description="A group-by, e.g. model or project")],
    top: Annotated[
        int, Query(ge=1, le=MAX_TOP, description="Values kept; the rest fold into (other)")
    ] = DEFAULT_TOP,
    before_start: Annotated[
        str | None, Query(description="The baseline's start (ISO 8601); default: the period before")
    ] = None,
    before_end: Annotated[str | None, Query(description="The baseline's end, exclusive")] = None,
    tz: Annotated[str | None, Query(max_length=64, description=TZ_DESCRIPTION)] = None,
) -> dict:
    """The change of `series` from the baseline to the filter's period, each value of
    `dimension` with its part (mix and rate for ratios and averages) and the noise test."""
    spec = filter_spec(request, frozenset((*PARAMS, "tz")))
    zone = zone_of(tz) if tz is not None else None
    now = datetime.now(UTC)
    periods = Periods.of(spec, now, before_start, before_end)
    pinned = spec.pinned(now)
    key = cache.key(
        scope, "changes", series, dimension, top, before_start, before_end, spec.to_json()
    )
    data, hit = cache.get_or_compute(
        key,
        lambda: change_data(
            what_changed(span_engine(), scope, series, dimension, pinned, periods, top=top, now=now)
        ),
    )
    (data,) = with_local_times([dict(data)], zone, PERIOD_TIMES)
    return {"data": data, "meta": meta(request, cached=hit)}
