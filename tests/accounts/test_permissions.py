"""The role table is exactly the README's "Users and roles"."""

import pytest

from observatory_core.accounts.permissions import Permission, Role, parse_role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import PermissionDenied, UserError

# permission -> (admin, developer, viewer, billing), as the README's "Users and roles" states
DESIGN_TABLE = {
    "traces:read": (1, 1, 1, 0),
    "metrics:read": (1, 1, 1, 1),
    "costs:read": (1, 1, 0, 1),
    "exports:create": (1, 1, 0, 1),
    "exports:cancel": (1, 1, 0, 1),
    "exports:read": (1, 1, 1, 1),
    "exports:download": (1, 1, 1, 1),
    "alerts:read": (1, 1, 1, 1),
    "alerts:manage": (1, 1, 0, 0),
    "dashboards:manage": (1, 1, 0, 0),
    "admin": (1, 0, 0, 0),
}
ROLES = (Role.ADMIN, Role.DEVELOPER, Role.VIEWER, Role.BILLING)


@pytest.mark.parametrize("permission", sorted(DESIGN_TABLE))
def test_role_table_matches_design(permission):
    for role, allowed in zip(ROLES, DESIGN_TABLE[permission], strict=True):
        assert Scope(org_id=1, role=role).can(Permission(permission)) == bool(allowed), role


def test_require_names_the_role_and_permission():
    with pytest.raises(PermissionDenied, match=r"billing.*traces:read"):
        Scope(org_id=1, role=Role.BILLING).require(Permission.TRACES_READ)


def test_unknown_role_lists_the_choices():
    assert parse_role(" Viewer ") is Role.VIEWER
    with pytest.raises(UserError, match="admin, developer, viewer, billing"):
        parse_role("root")


def test_navigation_lists_only_permitted_pages():
    from observatory_core.ui.nav import PAGES

    titles = {
        role: [p.title for p in PAGES if Scope(org_id=1, role=role).can(p.needs)] for role in ROLES
    }
    assert titles[Role.BILLING] == [
        "Home",
        "Overview",
        "Metrics",
        "Dashboards",
        "What changed",
        "Cost attribution",
        "Users",
        "Sessions",
        "Exports",
        "Alerts",
        "Live",
    ]
    # viewers see Cost attribution without costs (requests, tokens, errors)
    assert titles[Role.VIEWER] == [
        "Home",
        "Overview",
        "Metrics",
        "Dashboards",
        "What changed",
        "Cost attribution",
        "Traces",
        "Users",
        "Sessions",
        "Exports",
        "Alerts",
        "Live",
    ]
    assert titles[Role.DEVELOPER] == titles[Role.VIEWER]
    assert titles[Role.ADMIN] == [*titles[Role.VIEWER], "Admin"]
