"""The one filter spec (README "Traces"): what spans a list, chart, export or alert means."""

from observatory_core.filters.spec import FilterError, FilterSpec

__all__ = ["FilterError", "FilterSpec"]
