"""The mergeable latency sketch kept in rollup rows (log-spaced bins, DDSketch-style).

Bins are fixed, so merging sketches is adding counts column by column, which SQL does with SUM.
Any percentile read back is within `RELATIVE_BOUND` of the exact one (or within
`ABSOLUTE_FLOOR_MS / 2` for latencies under `ABSOLUTE_FLOOR_MS`).
"""

from __future__ import annotations

import math

GAMMA = 1.25  # each bin spans a factor of 1.25
BINS = 64  # bin 0 holds [0, 1 ms]; the last everything above LAST_EDGE_MS (about 17 minutes)
ABSOLUTE_FLOOR_MS = 1.0
RELATIVE_BOUND = (GAMMA - 1) / (GAMMA + 1)
_LN_GAMMA = math.log(GAMMA)
LAST_EDGE_MS = ABSOLUTE_FLOOR_MS * GAMMA ** (BINS - 2)


def bin_of(duration_ms: float) -> int:
    """The bin holding a latency: 0 for <= 1 ms, then (GAMMA^(i-1), GAMMA^i] ms."""
    if duration_ms <= ABSOLUTE_FLOOR_MS:
        return 0
    index = math.ceil(math.log(duration_ms / ABSOLUTE_FLOOR_MS) / _LN_GAMMA - 1e-12)
    return min(max(index, 1), BINS - 1)


def upper_edge(index: int) -> float:
    """The largest latency bin `index` holds (the last bin has no upper edge)."""
    return ABSOLUTE_FLOOR_MS * GAMMA**index if index < BINS - 1 else math.inf


def representative(index: int) -> float:
    """The value standing for a bin: within RELATIVE_BOUND of any latency in it."""
    if index == 0:
        return ABSOLUTE_FLOOR_MS / 2
    return ABSOLUTE_FLOOR_MS * 2 * GAMMA**index / (GAMMA + 1)


def bound_text() -> str:
    return (
        f"within ±{RELATIVE_BOUND:.1%} of the exact value for latencies between "
        f"{ABSOLUTE_FLOOR_MS:g} ms and {LAST_EDGE_MS / 60_000:.0f} minutes "
        f"(±{ABSOLUTE_FLOOR_MS / 2:g} ms below)"
    )
