"""Which spans count: a span set aside as the twin of another (one call sent by two
instrumentations, docs/ingestion.md "A call instrumented twice") is kept and shown, but left
out of every figure. Declared once here; every aggregate over spans adds `counted`."""

from __future__ import annotations

from typing import Any


def counted(c: Any) -> Any:
    """The condition over a span column collection (`spans.c`, a temporary copy's `.c`)."""
    return c.duplicate_of.is_(None)


def counted_row(row: dict) -> bool:
    """The same, for a raw span row (the tests' reference)."""
    return row.get("duplicate_of") is None
