"""Export job rules: validation, quotas, states, org isolation, audit."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.exports.jobs import (
    NEW_PER_USER_PER_HOUR,
    Conflict,
    NotFound,
    cancel_export,
    create_export,
    download_target,
    get_export,
    list_exports,
)
from observatory_core.exports.worker import work_once
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.schema import audit_log
from tests.helpers import END


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "xlsx"}, "Format 'xlsx' is not offered"),
        (
            {"compression": "zip"},
            "Compression .zip. is not offered; choose gzip, zstd, snappy, none",
        ),
        ({"row_limit": 0}, "from 1 to 1,000,000"),
        ({"row_limit": 1_000_001}, "from 1 to 1,000,000"),
        ({"row_limit": "10"}, "from 1 to 1,000,000"),
        ({"fields": ["password_hash"]}, "Unknown field"),
        (
            {"spec": FilterSpec(relative=None, start=END - timedelta(days=400), end=END)},
            "at most 365 days",
        ),
    ],
)
def test_bad_requests_are_refused_with_the_fix(data, scope, kwargs, message):
    kwargs = dict(kwargs)  # parameters are shared by both databases
    spec = kwargs.pop("spec", FilterSpec())
    with pytest.raises(UserError, match=message):
        create_export(data, scope, spec, **kwargs)


def test_open_time_range_is_allowed_and_the_filter_is_pinned(data, scope):
    job = create_export(data, scope, FilterSpec(relative=None, models=("gpt-4o",)), now=END)
    assert FilterSpec.from_json(job["filter_json"]) == FilterSpec(relative=None, models=("gpt-4o",))
    relative = create_export(data, scope, FilterSpec(relative="24h"), now=END)
    assert FilterSpec.from_json(relative["filter_json"]).window(END) == (
        END - timedelta(hours=24),
        END,
    )
    assert relative["status"] == "pending" and relative["snapshot_max_id"] > 0


def test_roles(data, orgs):
    with pytest.raises(PermissionDenied, match="exports:create"):
        create_export(data, Scope(org_id=orgs["acme"], role=Role.VIEWER), FilterSpec())
    bill = Scope(org_id=orgs["acme"], role=Role.BILLING, username="bill")
    with pytest.raises(PermissionDenied, match=r"export input_text.*traces:read"):
        create_export(data, bill, FilterSpec(), fields=["start_time", "input_text"])
    with pytest.raises(PermissionDenied, match=r"'search'.*traces:read"):
        create_export(data, bill, FilterSpec(search="refund"))
    billing = create_export(data, bill, FilterSpec(), fields=["start_time", "total_cost_usd"])
    assert billing["fields"] == ["start_time", "total_cost_usd"]
    default = create_export(data, bill, FilterSpec())
    assert "total_cost_usd" in default["fields"]
    assert not {"input_text", "output_text"} & set(default["fields"])  # never prompt text
    viewer = Scope(org_id=orgs["acme"], role=Role.VIEWER)
    assert [j["id"] for j in list_exports(data, viewer)] == [default["id"], billing["id"]]
    with pytest.raises(PermissionDenied):
        cancel_export(data, viewer, billing["id"])


def test_hourly_quota_per_user(data, scope, orgs):
    for _ in range(NEW_PER_USER_PER_HOUR):
        create_export(data, scope, FilterSpec(), now=END)
    with pytest.raises(UserError, match=f"limit is {NEW_PER_USER_PER_HOUR}"):
        create_export(data, scope, FilterSpec(), now=END + timedelta(minutes=5))
    other = Scope(org_id=orgs["acme"], role=Role.DEVELOPER, username="sam")
    assert create_export(data, other, FilterSpec(), now=END)["status"] == "pending"
    assert create_export(data, scope, FilterSpec(), now=END + timedelta(hours=1, seconds=1))


def test_state_rules_and_messages(data, scope, config):
    job = create_export(data, scope, FilterSpec(relative=None))
    with pytest.raises(Conflict, match="is pending; only completed exports can be downloaded"):
        download_target(data, scope, job["id"], config.export_dir)
    assert cancel_export(data, scope, job["id"])["status"] == "cancelled"
    with pytest.raises(
        Conflict, match="is cancelled; only pending or processing exports can be cancelled"
    ):
        cancel_export(data, scope, job["id"])
    done = create_export(data, scope, FilterSpec(relative=None))
    assert work_once(data, config) == "completed"
    path, name = download_target(data, scope, done["id"], config.export_dir)
    assert path.is_file() and name.endswith(".csv")
    with pytest.raises(Conflict, match="is completed; only pending or processing"):
        cancel_export(data, scope, done["id"])
    later = get_export(data, scope, done["id"])["expires_at"] + timedelta(seconds=1)
    with pytest.raises(Conflict, match="is expired"):
        download_target(data, scope, done["id"], config.export_dir, now=later)


def test_other_org_cannot_see_cancel_or_download(data, scope, config, orgs):
    job = create_export(data, scope, FilterSpec(relative=None))
    stranger = Scope(org_id=orgs["globex"], role=Role.ADMIN, username="eve")
    assert list_exports(data, stranger) == []
    for action in (
        lambda: get_export(data, stranger, job["id"]),
        lambda: cancel_export(data, stranger, job["id"]),
        lambda: download_target(data, stranger, job["id"], config.export_dir),
    ):
        with pytest.raises(NotFound, match=f"No export {job['id']} in your org"):
            action()
    assert get_export(data, scope, job["id"])["status"] == "pending"


def test_create_cancel_download_are_audited(data, scope, config):
    first = create_export(data, scope, FilterSpec(relative=None))
    cancel_export(data, scope, first["id"])
    second = create_export(data, scope, FilterSpec(relative=None))
    work_once(data, config)
    download_target(data, scope, second["id"], config.export_dir)
    with data.connect() as conn:
        rows = conn.execute(
            select(audit_log.c.action, audit_log.c.subject, audit_log.c.username)
        ).all()
    assert sorted(rows) == sorted(
        [
            ("export.create", str(first["id"]), "dana"),
            ("export.cancel", str(first["id"]), "dana"),
            ("export.create", str(second["id"]), "dana"),
            ("export.download", str(second["id"]), "dana"),
        ]
    )
