"""The rollup tests share the metrics data set (written batch by batch, one batch re-sent)."""

from tests.metrics.conftest import metrics_data  # noqa: F401
