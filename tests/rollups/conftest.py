"""The rollup tests share the metrics data set (written batch by batch, one batch re-sent)."""

from tests.metrics.conftest import (  # noqa: F401
    metrics_data,
    metrics_store,
    pytest_generate_tests,
)
