"""The HTTP API (/api/v1): thin FastAPI adapters over the same core functions the pages use."""
