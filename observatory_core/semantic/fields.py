"""Every span field, declared once: what it is called, how to read it, how it may be filtered
and grouped, whether the rollups carry it, how the API and the sidebar offer it, and who may
see it. `FilterSpec`, the SQL compilation, the API's models, the sidebar, the group-by
choices, rollup eligibility, list and export columns and the tests' reference all read
`FIELDS` (docs/architecture.md, "Add a span field").

A field registered at run time (`FIELDS[name] = Field(...)`) is seen everywhere: the names
derived from `FIELDS` (`field_lookups.py`) are computed at each use, never copied at import.
What a declaration holds is `field_declaration.py`'s `Field`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import case, func, literal_column, null, true

from observatory_core.accounts.permissions import Permission
from observatory_core.semantic.field_declaration import Field, FilterKind, KeyKind, Widget

OPERATIONS = (
    "chat",
    "completion",
    "embeddings",
    "execute_tool",
    "retrieval",
    "invoke_agent",
    "other",
)
STATUSES = ("ok", "error", "unset")
# The operations that call a model: a span of one of these is an LLM call (a request).
LLM_OPERATIONS = ("chat", "completion", "embeddings")
# How the `llm_call` flag reads as a filter and a group (docs/metrics.md, "Subjects").
LLM_CALL_CHOICES = ("yes", "no")


# Issue 19: the slots an org's declared dimensions live in (one key each, up to this many;
# `storage.schema.org_dimensions`), columns of the spans and of every rollup table.
DIMENSION_SLOTS = tuple(f"dim_{n}" for n in range(1, 11))


SLOT_MARK = "="  # a slot holds "=" + the value ("=" alone: the empty value), '' for none
SLOT_CHARS = 199  # the value's characters a slot keeps (a String(200) with its mark)


def _slot_text(slot: str) -> Callable[[Any], Any]:
    """A slot's value: '' (a span without one) reads as no value, else the text after the
    mark. Constants are written into the SQL, so SELECT and GROUP BY match (`_llm_call_text`)."""
    return lambda c: case(
        (c[slot] == literal_column("''"), null()),
        else_=func.substr(c[slot], literal_column("2")),
    )


def _llm_call_text(c: Any) -> Any:
    """The stored flag as "yes"/"no", the same SQL over spans and rollup rows (constants
    written into the SQL: bound, SELECT and GROUP BY would number them apart)."""
    return case((c.llm_call == true(), literal_column("'yes'")), else_=literal_column("'no'"))


_P = Permission
_HEX = r"[0-9a-f]{%d}"


def _f(*args: Any, **kwargs: Any) -> Field:
    return Field(*args, **kwargs)


# Declared in the order the sidebar, the filters and the group-by choices list them.
FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        _f(
            "provider",
            "Provider",
            "text",
            filter=FilterKind.IN_LIST,
            key="providers",
            group="provider",
            rollup=True,
            widget=Widget.SEEN,
        ),
        _f(
            "model",
            "Model",
            "text",
            filter=FilterKind.IN_LIST,
            key="models",
            group="model",
            rollup=True,
            widget=Widget.SEEN,
        ),
        _f(
            "environment",
            "Environment",
            "text",
            filter=FilterKind.IN_LIST,
            key="environments",
            group="environment",
            rollup=True,
            widget=Widget.SEEN,
        ),
        _f(
            "operation",
            "Operation",
            "text",
            filter=FilterKind.IN_LIST,
            key="operations",
            choices=OPERATIONS,
            group="operation",
            rollup=True,
            widget=Widget.CHOICES,
        ),
        _f(
            "status",
            "Status",
            "text",
            filter=FilterKind.IN_LIST,
            key="statuses",
            choices=STATUSES,
            group="status",
            rollup=True,
            widget=Widget.STATUS,
        ),
        _f(
            "llm_call",
            "LLM call",
            "text",
            column=_llm_call_text,
            filter=FilterKind.IN_LIST,
            key="llm_call",
            choices=LLM_CALL_CHOICES,
            group="llm_call",
            rollup=True,
            description='"yes": LLM calls only (requests); "no": every other span',
            widget=Widget.CHOICES,
            widget_label="LLM calls only",
            value=lambda row: "yes" if row["llm_call"] else "no",
        ),
        _f(
            "user_id",
            "User id",
            "text",
            filter=FilterKind.IN_LIST,
            key="user_ids",
            group="user_id",
            widget=Widget.TEXT_LIST,
            widget_label="User ids (comma-separated)",
        ),
        _f(
            "project_id",
            "Project",
            "int",
            filter=FilterKind.IN_LIST,
            key="project_ids",
            group="project",
            rollup=True,
            description="Project ids (whole numbers)",
            widget=Widget.PROJECT,
        ),
        _f(
            "session_id",
            "Session id",
            "text",
            filter=FilterKind.IN_LIST,
            key="session_ids",
            widget=Widget.TEXT_LIST,
            widget_label="Session ids",
        ),
        _f(
            "trace_id",
            "Trace id",
            "text",
            filter=FilterKind.IN_LIST,
            key="trace_ids",
            pattern=_HEX % 32,
            pattern_hint="32 lowercase hex digits",
            widget=Widget.TEXT_LIST,
            widget_label="Trace ids",
        ),
        _f(
            "span_id",
            "Span id",
            "text",
            filter=FilterKind.IN_LIST,
            key="span_ids",
            pattern=_HEX % 16,
            pattern_hint="16 lowercase hex digits",
        ),
        _f(
            "tags",
            "Tags",
            "json",
            filter=FilterKind.TAGS,
            widget=Widget.TEXT_LIST,
            keyed="tag",
            key_kind=KeyKind.TAG,
        ),
        _f(
            "metadata",
            "Metadata",
            "json",
            filter=FilterKind.METADATA,
            description='key=value pairs as JSON lists, e.g. ["region","eu"]',
            widget=Widget.METADATA,
            widget_label="Metadata key=value",
            keyed="metadata",
            key_kind=KeyKind.OBJECT,
        ),
        _f(
            "duration_ms",
            "Duration (ms)",
            "float",
            filter=FilterKind.RANGE,
            widget=Widget.RANGE,
            widget_label="Duration ms",
        ),
        _f(
            "total_cost_usd",
            "Cost (USD)",
            "float",
            filter=FilterKind.RANGE,
            key="cost_usd",
            widget=Widget.RANGE,
            widget_label="Cost USD",
            needs=_P.COSTS_READ,
        ),
        _f(
            "total_tokens",
            "Total tokens",
            "int",
            filter=FilterKind.RANGE,
            widget=Widget.RANGE,
            widget_label="Total tokens",
        ),
        _f(
            "input_text",
            "Prompt",
            "text",
            filter=FilterKind.SEARCH,
            key="search",
            reads=("input_text", "output_text"),
            description="Full-text search of prompts and answers (3+ characters)",
            widget=Widget.SEARCH,
            widget_label="Search prompts and answers",
            needs=_P.TRACES_READ,
        ),
        _f("output_text", "Answer", "text", needs=_P.TRACES_READ),
        _f("text_truncated", "Text truncated", "bool", needs=_P.TRACES_READ),
        _f("input_cost_usd", "Input cost (USD)", "float", needs=_P.COSTS_READ),
        _f("output_cost_usd", "Output cost (USD)", "float", needs=_P.COSTS_READ),
        _f("cost_source", "Cost source", "text", needs=_P.COSTS_READ),
        _f("id", "Id", "int"),
        _f("parent_span_id", "Parent span id", "text"),
        _f("start_time", "Start", "time"),
        _f("end_time", "End", "time"),
        _f("ttft_ms", "Time to first token (ms)", "float"),
        _f("name", "Name", "text", group="name"),
        _f("service_name", "Service", "text"),
        _f("error_type", "Error type", "text"),
        _f("error_message", "Error message", "text"),
        _f("finish_reason", "Finish reason", "text"),
        _f("input_tokens", "Input tokens", "int"),
        _f("output_tokens", "Output tokens", "int"),
        _f("attributes", "Attributes", "json"),
        _f("quality_score", "Quality score", "float"),
        _f("scope_name", "Instrumentation scope", "text"),
        # set on a span set aside as the twin of another (docs/ingestion.md)
        _f("duplicate_of", "Duplicate of", "text"),
        _f("duplicate_trace_id", "Duplicate of (trace)", "text"),
        # the declared dimensions' slots: the engine groups by one in place of the key an org
        # declared (`rollups/dimensions.py`); never offered to a person
        *(
            _f(
                slot,
                f"Dimension slot {slot}",
                "text",
                column=_slot_text(slot),
                group=slot,
                rollup=True,
                listed=False,
                slot=True,
                value=lambda row, slot=slot: (row.get(slot) or None) and row[slot][1:],
            )
            for slot in DIMENSION_SLOTS
        ),
    )
}
