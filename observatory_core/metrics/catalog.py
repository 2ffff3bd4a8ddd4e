"""The metrics and aggregations (README "Metrics"), and which combinations make sense."""

from __future__ import annotations

from observatory_core.semantic.field_lookups import (  # noqa: F401 (re-exported: declared with the fields)
    DIMENSION_FIELDS,
    DIMENSIONS,
    ROLLUP_GROUPS,
)

# The metrics themselves are declared once in `semantic/metrics.py`; re-exported here for the
# modules that import them from the engine's catalog.
from observatory_core.semantic.metrics import (  # noqa: F401
    METRICS,
    PERCENTILES,
    ZERO_WHEN_EMPTY,
    Agg,
    Kind,
    Metric,
    Partials,
    Subject,
)

# Group-by dimensions (DIMENSIONS), the span field each groups by (DIMENSION_FIELDS) and the
# ones rollups carry (ROLLUP_GROUPS) are declared with the fields (`semantic.fields`).
MAX_GROUP_BY = 5

# Days and weeks (ISO, from Monday) are the query's time zone's; so are hours where its offset
# is not whole hours (docs/metrics.md, "Time zones").
BUCKETS = {"1min": 60, "5min": 300, "1hour": 3600, "1day": 86400, "1week": 604800}
# The longest range each bucket size may chart (keeps a series to at most ~1,500 points).
MAX_RANGE_DAYS = {"1min": 1, "5min": 5, "1hour": 62, "1day": 1100, "1week": 3660}
# "auto": the smallest bucket whose range fits in this many points.
AUTO_POINTS = 750
