"""A refusal for a restricted field says why, in the API's JSON envelope (the role matrix's
world; see matrix.py)."""

from __future__ import annotations

import pytest

from observatory_core.accounts.permissions import Role


@pytest.mark.parametrize(
    ("url", "role", "status", "message"),
    [
        ("/traces?sort=total_cost_usd", Role.VIEWER, 403, "sort by total_cost_usd"),
        ("/traces?min_cost_usd=0.05", Role.VIEWER, 403, "'min_cost_usd' reads total_cost_usd"),
        ("/metrics?series=request_count.count&min_cost_usd=0.05", Role.VIEWER, 403, "costs"),
        ("/metrics?series=request_count.count&search=refactor", Role.BILLING, 403, "text"),
        ("/traces?sort=cost", Role.VIEWER, 422, "sort"),
    ],
)
def test_refusals_say_why_in_the_json_envelope(world, url, role, status, message):
    got = world["client"].get(url, headers={"authorization": f"Bearer {world['keys'][role]}"})
    assert got.status_code == status and got.headers["content-type"] == "application/json"
    body = got.json()
    assert body["error"]["code"] == ("forbidden" if status == 403 else "bad_request")
    assert message in body["error"]["message"]
