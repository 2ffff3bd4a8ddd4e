"""Export jobs (README "Exports"; docs/architecture.md): launch, stream to a file, watch, cancel, download, expire."""
