"""The models of what changed between two periods (`changes.py`): each value's part of the
change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from observatory_core.api.schemas import Meta


class ContributionOut(BaseModel):
    value: Any = Field(
        description='The group\'s value; null: rows without one; "(other)": the rest.'
    )
    groups: int = Field(description="How many values the row stands for (more for (other)).")
    before: float | None = Field(description="The value's own figure before (null: not seen).")
    after: float | None
    weight_before: float | None = Field(
        description="Its share of the rows a ratio or an average is over (null for sums)."
    )
    weight_after: float | None
    change: float = Field(description="Its part of the total change (mix + rate).")
    mix: float | None = Field(description="Part from its share of the rows moving (null for sums).")
    rate: float | None = Field(description="Part from its own figure moving (null for sums).")
    z: float | None = Field(description="The noise test on its own figure; |z| >= 1.96 is marked.")
    significant: bool


class ChangeOut(BaseModel):
    series: str
    label: str
    unit: str
    dimension: str
    method: str = Field(description="difference (sums) or shift-share (ratios and averages)")
    before_start: datetime
    before_end: datetime
    after_start: datetime
    after_end: datetime
    before_start_local: str | None = Field(None, description="With tz: before_start in tz")
    before_end_local: str | None = Field(None, description="With tz: before_end in tz")
    after_start_local: str | None = Field(None, description="With tz: after_start in tz")
    after_end_local: str | None = Field(None, description="With tz: after_end in tz")
    before: float | None
    after: float | None
    change: float | None
    groups: int = Field(
        description="Values seen in either period; past `top` they fold into (other)."
    )
    source: str
    contributions: list[ContributionOut]


class ChangeBody(BaseModel):
    data: ChangeOut
    meta: Meta
