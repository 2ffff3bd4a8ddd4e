"""The one server process: the Streamlit UI (app.py), the HTTP routes and, in the embedded
mode, the background worker as a thread (set OBSERVATORY_EMBEDDED_WORKER=0 to run workers
as separate `python -m observatory_core worker` processes)."""

import asyncio
import gc
from contextlib import asynccontextmanager

import streamlit as st
from streamlit import config

from observatory_core.api.mount import routes
from observatory_core.base.settings import get_settings
from observatory_core.runtime.allocator import keep_freed_memory
from observatory_core.runtime.background import send_small_writes_at_once, start_background


@asynccontextmanager
async def lifespan(_app):
    port = int(config.get_option("server.port"))
    keep_freed_memory()
    send_small_writes_at_once(port)
    background = await asyncio.to_thread(start_background, get_settings(), port)
    # What start-up built (modules, Streamlit, the schema, price tables) lives as long as the
    # process: out of the collector's sight, a full collection walks only newer objects
    # (under API load, full collections over everything paused requests for 120-160 ms).
    gc.collect()
    gc.freeze()
    yield
    await asyncio.to_thread(background.stop)


app = st.App("app.py", routes=routes(), lifespan=lifespan)
