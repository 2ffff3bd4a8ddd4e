"""Getting spans in: OTLP/HTTP, file import, API keys (README "Sending spans"; docs/architecture.md)."""
