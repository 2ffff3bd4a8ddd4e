"""The mergeable latency sketch kept in rollup rows (log-spaced bins, DDSketch-style).

Bins are fixed, so merging sketches is adding counts bin by bin (storage/packed_sketch.py says
how a row stores them). Between `ABSOLUTE_FLOOR_MS` (0.1 ms) and `LAST_EDGE_MS` (1 hour) each bin
spans a factor of `GAMMA`, so any percentile read back is within `RELATIVE_BOUND` (under 1%) of
the exact one. Outside that range the bins are clamped and still count: every latency at or
under 0.1 ms falls in bin 0 and reads back as 0.05 ms (within ±0.05 ms); every latency over
1 hour falls in the last bin and reads back as 1 hour (a lower bound). See docs/metrics.md.
"""

from __future__ import annotations

import math

ABSOLUTE_FLOOR_MS = 0.1
LAST_EDGE_MS = 3_600_000.0  # one hour
_STEPS = 870  # bins between the floor and the last edge: the fewest that keep the bound <= 1%
GAMMA = (LAST_EDGE_MS / ABSOLUTE_FLOOR_MS) ** (1 / _STEPS)  # each bin spans a factor ~1.0202
BINS = _STEPS + 2  # bin 0 holds [0, 0.1 ms]; the last everything above one hour
RELATIVE_BOUND = (GAMMA - 1) / (GAMMA + 1)  # 0.99991%
_LN_GAMMA = math.log(GAMMA)


def bin_of(duration_ms: float) -> int:
    """The bin holding a latency: 0 for <= 0.1 ms, then (floor*GAMMA^(i-1), floor*GAMMA^i] ms,
    the last bin for everything above one hour."""
    if duration_ms <= ABSOLUTE_FLOOR_MS:
        return 0
    if duration_ms > LAST_EDGE_MS:
        return BINS - 1
    index = math.ceil(math.log(duration_ms / ABSOLUTE_FLOOR_MS) / _LN_GAMMA - 1e-12)
    return min(max(index, 1), BINS - 2)


def upper_edge(index: int) -> float:
    """The largest latency bin `index` holds (the last bin has no upper edge)."""
    return ABSOLUTE_FLOOR_MS * GAMMA**index if index < BINS - 1 else math.inf


def representative(index: int) -> float:
    """The value standing for a bin: within RELATIVE_BOUND of any latency in it (the clamped
    bins: half the floor, and one hour)."""
    if index == 0:
        return ABSOLUTE_FLOOR_MS / 2
    if index >= BINS - 1:
        return LAST_EDGE_MS
    return ABSOLUTE_FLOOR_MS * 2 * GAMMA**index / (GAMMA + 1)


def bound_text() -> str:
    return (
        f"within ±{RELATIVE_BOUND:.1%} of the exact value for latencies between "
        f"{ABSOLUTE_FLOOR_MS:g} ms and {LAST_EDGE_MS / 3_600_000:.0f} hour "
        f"(±{ABSOLUTE_FLOOR_MS / 2:g} ms below; above, read as 1 hour)"
    )
