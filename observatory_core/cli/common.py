"""What several commands need: DATABASE_URL's engine, checked, and a `--since` date."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from observatory_core.base.errors import UserError


def open_engine() -> Engine:
    """DATABASE_URL's engine, its connection tried first so a command fails in one sentence."""
    from observatory_core.base.settings import get_settings
    from observatory_core.storage.engine import check_connection, get_engine

    engine = get_engine(get_settings().database_url)
    check_connection(engine)
    return engine


def parse_since(raw: str | None) -> datetime | None:
    """A `--since` date; one without a zone is UTC."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise UserError(
            f"--since {raw!r} is not a date; write it as 2026-11-01 or 2026-11-01T00:00:00+00:00."
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
