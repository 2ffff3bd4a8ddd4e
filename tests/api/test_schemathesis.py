"""Schemathesis against the served OpenAPI document: generated requests to every operation
(with a real key, on each database) never get a 5xx, and every answer matches the schema.

The operations are driven with Hypothesis directly: schemathesis's pytest plugin does not run
under this pytest version."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import PREFIX, auth

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 20


def test_no_server_errors_and_answers_match_the_schema(api):
    schema = schemathesis.openapi.from_asgi(f"{PREFIX}/openapi.json", api["client"].app)
    headers = auth(api)
    operations = [result.ok() for result in schema.get_all_operations()]
    # every route of the issues, /changes, /users, /sessions, /export/schedules, /traces/days,
    # /dashboards (list, create, read, replace, delete)
    assert len(operations) == 25

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case):
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS)

        exercise()
