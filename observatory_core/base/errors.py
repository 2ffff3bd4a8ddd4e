"""Errors a person can act on.

Anything raised as `UserError` carries one sentence that says what is wrong and what to do;
the UI, the CLI and the HTTP routes show it as it is, never a traceback.
"""


class UserError(Exception):
    """A problem the user or operator can fix; the message says how."""


class ConfigError(UserError):
    """Settings are missing or wrong."""


class DatabaseUnavailable(UserError):
    """The database cannot be reached or opened."""


class PermissionDenied(UserError):
    """The caller's role does not allow this."""


class QueryTooSlow(UserError):
    """A read ran past its time budget and was stopped; the message says how to narrow it."""


class QueryTooLarge(UserError):
    """A read needed more memory than one read may hold and was stopped; the message says how
    to narrow it (a retry as it is would be refused again)."""
