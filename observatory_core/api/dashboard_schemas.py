"""The models of saved dashboards (`dashboards.py`): the JSON form POST and PUT take and GET
answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from observatory_core.api.schemas import Meta


class DashboardIn(BaseModel):
    """A dashboard's definition: the JSON an export downloads (GET /dashboards/{id} answers it
    under `data.dashboard`), so a file kept in version control is posted back as it is."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(1, description="The definition's format; this server reads 1.")
    name: str = Field(description="Unique within the org, at most 100 characters.")
    description: str = ""
    filters: dict[str, Any] = Field(
        default_factory=dict,
        description='The period and filters it opens with, as in links: {"relative": "7d", '
        '"models": ["gpt-4o"]}. The page\'s period and filters apply to every chart.',
    )
    columns: int = Field(2, description="Grid columns, 1 to 4.")
    charts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Each: title, kind (line, area, bar, table, number, pie), series "
        "(metric.aggregation, as /metrics takes), bucket (auto, 1min, 5min, 1hour, 1day, 1week, "
        "none), group_by (list), top (1-10 groups), filters (its own, no time window), width "
        "(grid columns it spans).",
    )


class DashboardOut(BaseModel):
    id: int
    name: str
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    dashboard: dict[str, Any] = Field(description="The definition, as POST and PUT take it.")


class DashboardBody(BaseModel):
    data: DashboardOut
    meta: Meta


class DashboardSummary(BaseModel):
    id: int
    name: str
    description: str
    charts: int = Field(description="How many charts it holds.")
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class DashboardList(BaseModel):
    data: list[DashboardSummary]
    meta: Meta
