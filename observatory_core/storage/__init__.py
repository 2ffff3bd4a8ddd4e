"""Storage: schema, engines, dialect helpers and migrations. Knows no feature."""
