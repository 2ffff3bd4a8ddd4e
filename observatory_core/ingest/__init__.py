"""Getting spans in: OTLP/HTTP, file import, API keys (DESIGN.md sections 1 and 7)."""
