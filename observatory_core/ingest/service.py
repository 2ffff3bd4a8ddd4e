"""The receiver and its writer, one pair per server process, stopped with the server."""

from __future__ import annotations

import threading

from observatory_core.base.settings import Settings
from observatory_core.ingest.receiver import Receiver
from observatory_core.ingest.writer import BatchWriter, ShuttingDown
from observatory_core.storage.engine import get_engine

_lock = threading.Lock()
_pair: tuple[Receiver, BatchWriter] | None = None
_stopped = False


def get_ingest(settings: Settings) -> tuple[Receiver, BatchWriter]:
    global _pair
    with _lock:
        if _stopped:
            raise ShuttingDown
        if _pair is None:
            engine = get_engine(settings.database_url)
            receiver = Receiver(
                engine,
                max_body_bytes=settings.ingest_max_body_mb * 2**20,
                max_inflated_bytes=4 * settings.ingest_max_body_mb * 2**20,
                text_max_chars=settings.text_max_chars,
            )
            _pair = (receiver, BatchWriter(engine, max_pending=settings.ingest_max_pending_spans))
        return _pair


def stop_ingest() -> None:
    """Write everything already accepted, then refuse more (called on server shutdown)."""
    global _pair, _stopped
    with _lock:
        pair, _pair, _stopped = _pair, None, True
    if pair is not None:
        pair[1].stop()
