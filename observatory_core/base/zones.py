"""Time zones: the one `Zone` value a user's frame travels as, and bucket edges in a zone.

Every day, week and hour bucket is a period of the reader's wall clock (docs/metrics.md,
"Time zones"): a New York day is 23 or 25 hours on the days the clocks change, and an hour in
Asia/Kolkata starts at half past a UTC hour. The edges of those buckets are computed here, in
Python (zoneinfo), for the range a query reads; stores that know zones may compute the same
edges themselves, stores that do not (SQLite) bucket by these edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from observatory_core.base.errors import UserError

DAY = 86_400
WEEK = 7 * DAY
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class ZoneError(UserError):
    """A time zone name that is not an IANA zone; the message says what to send."""


@dataclass(frozen=True)
class Zone:
    """An IANA time zone by name ("UTC", "America/New_York", "Asia/Kolkata"), checked on
    construction so a bad name never reaches a query."""

    name: str = "UTC"

    def __post_init__(self) -> None:
        name = str(self.name or "").strip()
        if not name or name != self.name:
            object.__setattr__(self, "name", name or "UTC")
        try:
            ZoneInfo(self.name)
        except (ZoneInfoNotFoundError, ValueError, IsADirectoryError):
            raise ZoneError(
                f"Unknown time zone {self.name!r}; send an IANA name such as UTC, "
                "America/New_York, Europe/Berlin or Asia/Kolkata."
            ) from None

    @cached_property
    def info(self) -> ZoneInfo:
        return ZoneInfo(self.name)

    @property
    def is_utc(self) -> bool:
        return self.name in ("UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu")

    def local(self, t: datetime) -> datetime:
        """`t` on this zone's wall clock (offset-aware)."""
        return t.astimezone(self.info)

    def midnight(self, day: date) -> datetime:
        """The UTC instant a local day starts (a day whose midnight the clocks skip starts when
        they land)."""
        return _instant(datetime.combine(day, time(), tzinfo=self.info))

    def today(self, now: datetime) -> date:
        return self.local(now).date()

    def iso(self, t: datetime) -> str:
        """`t` as local time with its offset ("2026-03-08T00:00:00-05:00"): one column a
        spreadsheet and a person read alike, next to the UTC one."""
        return self.local(t).isoformat()


UTC_ZONE = Zone("UTC")

# Calendar periods of the reader's clock (the Overview's "today", "yesterday", "this month").
CALENDAR_PERIODS = {"today": "Today", "yesterday": "Yesterday", "month": "This month"}


def month_start(zone: Zone, now: datetime) -> datetime:
    """The UTC instant this month of `zone`'s calendar began."""
    return zone.midnight(zone.today(now).replace(day=1))


def next_month_start(zone: Zone, now: datetime) -> datetime:
    first = zone.today(now).replace(day=1)
    return zone.midnight((first + timedelta(days=32)).replace(day=1))


def calendar_period(name: str, zone: Zone, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of a calendar period on `zone`'s clock: today (a 23- or 25-hour day when
    the clocks change), yesterday, or this month (to its last day)."""
    today = zone.today(now)
    if name == "today":
        return zone.midnight(today), zone.midnight(today + timedelta(days=1))
    if name == "yesterday":
        return zone.midnight(today - timedelta(days=1)), zone.midnight(today)
    if name == "month":
        return month_start(zone, now), next_month_start(zone, now)
    raise UserError(f"Unknown period {name!r}; choose {', '.join(CALENDAR_PERIODS)}.")


def zone_names() -> list[str]:
    """Every IANA zone this machine knows, sorted (for pickers)."""
    return sorted(n for n in available_timezones() if "/" in n or n == "UTC")


def parse_zone(name: str | None) -> Zone:
    """A zone from a name (UTC when empty), refusing unknown names with what to send."""
    return Zone(name or "UTC")


def _instant(local: datetime) -> datetime:
    """A wall-clock time to UTC; a time the clocks skip maps to the instant they land on."""
    utc = local.astimezone(UTC)
    back = utc.astimezone(local.tzinfo)
    if back.replace(tzinfo=None) != local.replace(tzinfo=None):  # in a gap: where it lands
        utc = max(local.replace(fold=f).astimezone(UTC) for f in (0, 1))
    return utc


def _us(t: datetime) -> int:
    return (t - _EPOCH) // _US


def floor(t: datetime, seconds: int, zone: Zone) -> datetime:
    """Start (UTC) of the `seconds`-wide bucket of `zone`'s wall clock holding `t`: a local
    day or ISO week (Monday) for 1 day and 1 week, else a slot of the local clock."""
    t = t.astimezone(UTC)
    if seconds >= DAY:
        day = zone.local(t).date()
        if seconds == WEEK:
            day -= timedelta(days=day.weekday())
        elif seconds != DAY:
            raise ValueError("zoned buckets are 1 day, 1 week or under a day")
        start = zone.midnight(day)
        return start if start <= t else floor(start - _US, seconds, zone)
    offset = zone.local(t).utcoffset() or timedelta()
    width = seconds * 1_000_000
    local_us = _us(t) + offset // _US
    return t - timedelta(microseconds=local_us % width)


def _next(edge: datetime, seconds: int, zone: Zone) -> datetime:
    if seconds >= DAY:
        day = zone.local(edge).date() + timedelta(days=seconds // DAY)
        return zone.midnight(day)
    step = edge + timedelta(seconds=seconds)
    following = floor(step, seconds, zone)
    return following if following > edge else step


def bucket_edges(start: datetime, end: datetime, seconds: int, zone: Zone) -> tuple[datetime, ...]:
    """The starts of the buckets overlapping [start, end), then the end of the last one."""
    edge = floor(start, seconds, zone)
    edges = [edge]
    while edge < end:
        edge = _next(edge, seconds, zone)
        edges.append(edge)
    return tuple(edges)


@dataclass(frozen=True)
class Bucketing:
    """How a query's range [start, end) is cut into buckets of `seconds` on `zone`'s clock:
    `edges` (UTC, microseconds since the epoch) are the buckets' starts and the last one's end.

    `uniform` when the edges are the UTC grid of that width (every bucket in UTC; hours and
    minutes in a whole-hour zone): stores then bucket by arithmetic, as before zones."""

    seconds: int
    zone: Zone = UTC_ZONE
    edges: tuple[int, ...] = field(default=(), compare=True)

    @classmethod
    def over(cls, start: datetime, end: datetime, seconds: int, zone: Zone) -> Bucketing:
        if zone.is_utc and seconds <= DAY:  # UTC's grid: arithmetic, as `bucket_edges` finds
            width = seconds * 1_000_000
            first, last = _us(start), _us(end)
            first -= first % width
            count = max(0, -(-(last - first) // width))  # buckets from `first` to past `end`
            return cls(seconds, zone, tuple(range(first, first + (count + 1) * width, width)))
        edges = tuple(_us(e) for e in bucket_edges(start, end, seconds, zone))
        return cls(seconds, zone, edges)

    @property
    def uniform(self) -> bool:
        width = self.seconds * 1_000_000
        return all(e % width == 0 for e in self.edges)

    @property
    def starts(self) -> list[datetime]:
        """Each bucket's start, in UTC."""
        return [_EPOCH + timedelta(microseconds=e) for e in self.edges[:-1]]

    def aligned_to(self, seconds: int) -> bool:
        """Whether every bucket is a whole number of `seconds`-wide UTC slots (so rollup rows
        of that grain each fall wholly inside one bucket)."""
        width = seconds * 1_000_000
        return seconds <= self.seconds and all(e % width == 0 for e in self.edges)

    @property
    def interior_edges(self) -> tuple[int, ...]:
        """The edges that separate buckets (what a store bucketing by edges compares with)."""
        return self.edges[1:-1]

    @property
    def sql_key(self) -> tuple:
        """What a compiled statement depends on: the width alone when uniform."""
        return (self.seconds,) if self.uniform else (self.seconds, self.zone.name, self.edges)
