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


def first_line(exc: BaseException) -> str:
    """A driver's or engine's error as one line for a sentence (their text runs to pages of
    SQL and stack), the error's kind when it says nothing."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
