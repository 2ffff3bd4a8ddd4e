"""The one server process: the Streamlit UI (app.py), the HTTP routes and, in the embedded
mode, the background worker as a thread (set OBSERVATORY_EMBEDDED_WORKER=0 to run workers
as separate `python -m observatory_core worker` processes)."""

import asyncio
from contextlib import asynccontextmanager

import streamlit as st

from observatory_core.http.routes import routes


@asynccontextmanager
async def lifespan(_app):
    from observatory_core.settings import get_settings
    from observatory_core.storage.engine import get_engine

    settings = get_settings()
    worker = None
    if settings.embedded_worker:
        from observatory_core.worker import start_thread

        worker = start_thread(get_engine(settings.database_url), settings)
    traffic = None
    if settings.demo_traffic_per_s > 0:
        from streamlit import config

        from observatory_core.demo.traffic import start_demo_traffic

        traffic = await asyncio.to_thread(
            start_demo_traffic,
            get_engine(settings.database_url),
            settings.demo_traffic_per_s,
            int(config.get_option("server.port")),
        )
    yield
    if traffic:
        await asyncio.to_thread(traffic.stop)
    from observatory_core.ingest.service import stop_ingest

    await asyncio.to_thread(stop_ingest)
    if worker:
        thread, stop = worker
        stop.set()
        await asyncio.to_thread(thread.join, 30)


app = st.App("app.py", routes=routes(), lifespan=lifespan)
