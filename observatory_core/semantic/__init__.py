"""The semantic layer: each span field and each metric declared once (`fields.py`,
`metrics.py`). Filters, SQL, rollups, the API's models, the sidebar's widgets, exports and the
tests' reference all read these declarations (docs/architecture.md, "Add a span field").

Declarations only: this floor imports `base`, `accounts.permissions` (a leaf) and SQLAlchemy's
expression language, never `storage` or anything above it.
"""
