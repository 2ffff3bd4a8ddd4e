"""Bad API keys per client address: slowed down, then refused for a while (HTTP 429).

The count lives in the database (throttle.KEY), so it holds across server processes; the
block it leads to is also remembered in memory, so a refused address costs this process no
database work until the block ends. A valid key is never counted and costs nothing here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from observatory_core.accounts import throttle

MAX_REMEMBERED = 10_000


def _now() -> datetime:
    return datetime.now(UTC)


class KeyGuard:
    def __init__(self, clock: Callable[[], datetime] = _now) -> None:
        self.clock = clock
        self._blocks: dict[tuple[str, str], throttle.Block] = {}
        self._lock = threading.Lock()

    def blocked(self, engine: Engine, address: str | None) -> throttle.Block | None:
        """The block on `address` this process knows of, if it still holds."""
        if not address:
            return None
        with self._lock:
            block = self._blocks.get((str(engine.url), address))
            if block is not None and block.until <= self.clock():
                del self._blocks[(str(engine.url), address)]
                return None
        return block

    def failed(self, engine: Engine, address: str | None) -> throttle.Block | None:
        """Count a bad key from `address`; the block it leads to, if any."""
        if not address:
            return None
        with engine.begin() as conn:
            block = throttle.fail(conn, throttle.KEY, address, self.clock())
        if block is not None:
            with self._lock:
                if len(self._blocks) > MAX_REMEMBERED:
                    self._blocks.clear()
                self._blocks[(str(engine.url), address)] = block
        return block

    def message(self, block: throttle.Block) -> str:
        seconds = block.seconds(self.clock())
        if block.locked:
            return (
                f"Too many bad API keys from your address ({throttle.KEY.lock_after} in a row); "
                f"refused for {seconds} s. Check the key you send."
            )
        return f"Too many bad API keys from your address; retry in {seconds} s with a valid key."


# The one guard of this process, shared by the HTTP API and the OTLP route.
guard = KeyGuard()
