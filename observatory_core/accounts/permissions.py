"""Roles and what each may do (README "Users and roles"). Pages and core functions ask here.

What each role may *see* is declared with each span field (`semantic.fields`, its `needs`).
Every path a field can appear on (list columns, sorts, filters and search, metrics and
group-bys, exports, the trace detail, the live feed, the HTTP API, the pages) asks
`observatory_core.accounts.visibility`, which reads those declarations, so a field is hidden
everywhere or nowhere.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"
    BILLING = "billing"


class Permission(StrEnum):
    TRACES_READ = "traces:read"
    METRICS_READ = "metrics:read"
    COSTS_READ = "costs:read"
    EXPORTS_CREATE = "exports:create"
    EXPORTS_CANCEL = "exports:cancel"
    EXPORTS_READ = "exports:read"
    EXPORTS_DOWNLOAD = "exports:download"
    ALERTS_READ = "alerts:read"
    ALERTS_MANAGE = "alerts:manage"
    DASHBOARDS_MANAGE = "dashboards:manage"  # create, edit, duplicate, delete (all may read)
    ADMIN = "admin"


_P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.DEVELOPER: frozenset(Permission) - {_P.ADMIN},
    Role.VIEWER: frozenset(
        {_P.TRACES_READ, _P.METRICS_READ, _P.EXPORTS_READ, _P.EXPORTS_DOWNLOAD, _P.ALERTS_READ}
    ),
    Role.BILLING: frozenset(
        {
            _P.METRICS_READ,
            _P.COSTS_READ,
            _P.EXPORTS_CREATE,
            _P.EXPORTS_CANCEL,
            _P.EXPORTS_READ,
            _P.EXPORTS_DOWNLOAD,
            _P.ALERTS_READ,
        }
    ),
}


# What a person calls the data behind each permission, for messages.
SEES = {_P.COSTS_READ: "costs", _P.TRACES_READ: "prompt and answer text"}


def parse_role(raw: str) -> Role:
    try:
        return Role(raw.strip().lower())
    except ValueError:
        from observatory_core.base.errors import UserError

        names = ", ".join(r.value for r in Role)
        raise UserError(f"Unknown role {raw!r}; choose one of {names}.") from None
