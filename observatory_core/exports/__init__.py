"""Export jobs (DESIGN.md section 4): launch, stream to a file, watch, cancel, download, expire."""
