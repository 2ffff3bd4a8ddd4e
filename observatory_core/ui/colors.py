"""One colour per value of a dimension (a model, a provider, a user) on every chart.

A value's colour comes from a hash of its text, so `gpt-4o` has the same colour on the
Overview and the Metrics page, today and after a restart. Within one chart no two series may
share a colour: when two values want the same one, the later (by name, so the outcome does
not depend on the order the series arrive in) takes the next free colour. The folded long tail
"(other)" and series without a value are grey. Charts draw at most `MAX_SERIES` values, the
rest fold into "(other)".
"""

from __future__ import annotations

import hashlib

from observatory_core.metrics.folding import OTHER

MAX_SERIES = 10
GREY = "#9D9DA3"
NO_VALUE_GREY = "#C7C7CC"
# Tableau 20 without its two greys: 18 colours a reader can tell apart.
PALETTE = (
    "#4E79A7",
    "#F28E2B",
    "#E15759",
    "#76B7B2",
    "#59A14F",
    "#EDC948",
    "#B07AA1",
    "#FF9DA7",
    "#9C755F",
    "#A0CBE8",
    "#FFBE7D",
    "#FF9D9A",
    "#8CD17D",
    "#B6992D",
    "#F1CE63",
    "#499894",
    "#D37295",
    "#D4A6C8",
)
NO_VALUE = {"—", "", "(none)"}


def preferred(value: str) -> int:
    """The palette slot a value asks for, the same in every process."""
    digest = hashlib.blake2s(value.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % len(PALETTE)


def assign(values: list[str]) -> dict[str, str]:
    """A colour for each of one chart's series, never two the same (up to the palette's size)."""
    colours: dict[str, str] = {}
    taken: set[int] = set()
    for value in sorted(dict.fromkeys(values)):
        if value == OTHER or value.startswith(OTHER):
            colours[value] = GREY
            continue
        if value in NO_VALUE or value.startswith("(no "):
            colours[value] = NO_VALUE_GREY
            continue
        slot = preferred(value)
        for step in range(len(PALETTE)):
            candidate = (slot + step) % len(PALETTE)
            if candidate not in taken:
                slot = candidate
                break
        taken.add(slot)
        colours[value] = PALETTE[slot]
    return colours
