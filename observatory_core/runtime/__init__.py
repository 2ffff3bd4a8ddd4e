"""The processes: first-run set-up, the background worker (one entry point: `worker.run`),
what runs beside the web server, and the server's memory allocator settings."""
