"""Column types that differ per database but mean the same thing.

Timestamps are UTC with microseconds. PostgreSQL keeps them as `timestamptz`; SQLite keeps
them as integer microseconds since the epoch, which sorts, compares and buckets with plain
integer arithmetic instead of parsing strings on every row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import JSON, BigInteger, DateTime, Integer
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator

from observatory_core.storage.stores import store_for

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO = timedelta(0)

JsonB = JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid); PostgreSQL wants BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


_MICROS: dict[type, bool] = {}  # dialect class -> Store.timestamps_as_micros


def _micros(dialect) -> bool:
    """`Store.timestamps_as_micros` of the dialect's store, cached by dialect class (asked per
    value)."""
    try:
        return _MICROS[dialect.__class__]
    except KeyError:
        answer = _MICROS[dialect.__class__] = store_for(dialect).timestamps_as_micros
        return answer


def to_micros(value: datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(value))


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    if value.tzinfo is None or value.tzinfo is UTC:
        return value.replace(tzinfo=UTC)
    if value.utcoffset() == _ZERO:  # e.g. zoneinfo's UTC from the driver: relabel, no maths
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UtcDateTime(TypeDecorator):
    """A UTC timestamp: native where the store has one, else integer microseconds
    (`Store.timestamps_as_micros`)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if _micros(dialect):
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        micros = _micros(dialect)
        if isinstance(value, int):
            return value if micros else from_micros(value)
        value = as_utc(value)
        return to_micros(value) if micros else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if _micros(dialect):
            return from_micros(value)
        return as_utc(value)
