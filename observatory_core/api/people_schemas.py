"""The models of the Users and Sessions lists and a session as a conversation (`people.py`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from observatory_core.api.schemas import Meta


class UserRow(BaseModel):
    user_id: str
    request_count: int = Field(description="The user's LLM calls (requests) the filter selects.")
    total_cost_usd: float | None = Field(
        None, description="Cost of those LLM calls; left out for roles without costs:read."
    )
    total_tokens: int = Field(description="Tokens of those LLM calls.")
    error_count: int = Field(description="Those LLM calls that failed.")
    trace_count: int = Field(description="Traces holding one of the user's matching spans.")
    first_seen: datetime
    last_seen: datetime


class GroupPageMeta(BaseModel):
    total: int = Field(description="How many match, over every page.")
    next_offset: int | None = Field(
        description="Pass as offset= for the next page; null on the last."
    )
    meta: Meta


class UserPage(GroupPageMeta):
    data: list[UserRow]


class SessionRow(BaseModel):
    session_id: str
    user_id: str | None = Field(description="Its user (the lowest id when its spans name several).")
    trace_count: int = Field(description="Traces holding one of the session's matching spans.")
    first_seen: datetime = Field(description="The first span start among those traces.")
    last_seen: datetime = Field(description="The last span end among those traces.")
    duration_ms: float
    total_cost_usd: float | None = Field(
        None, description="Over those traces' whole trees; left out without costs:read."
    )
    error_count: int


class SessionPage(GroupPageMeta):
    data: list[SessionRow]


class SessionTurn(BaseModel):
    trace_id: str
    name: str | None = Field(description="The root span's name (null while no root arrived).")
    user_id: str | None
    first_start: datetime
    duration_ms: float
    span_count: int
    error_count: int
    total_tokens: int
    total_cost_usd: float | None = Field(None, description="Left out without costs:read.")
    input_text: str | None = Field(
        None,
        description="The root's input, else the first LLM call's; left out without traces:read.",
    )
    output_text: str | None = Field(
        None,
        description="The root's output, else the last LLM call's; left out without traces:read.",
    )


class SessionOut(BaseModel):
    session_id: str
    trace_count: int = Field(description="Every trace of the session; `turns` holds the first 200.")
    first_seen: datetime
    last_seen: datetime
    duration_ms: float
    total_cost_usd: float | None
    users: list[str]
    turns: list[SessionTurn] = Field(description="Its traces by first start, as a conversation.")


class SessionBody(BaseModel):
    data: SessionOut
    meta: Meta
