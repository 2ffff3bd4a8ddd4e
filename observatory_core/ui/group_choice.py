"""Group-by choices on every page that groups: the declared dimensions plus any tag or
metadata key ("tag:customer", "metadata:customer"), typed by the user (`semantic.field_lookups`,
`keyed_fields`). One widget, so the Metrics page, the Overview's top items, alert rules and
Cost attribution offer the same choices."""

from __future__ import annotations

import streamlit as st

from observatory_core.semantic.field_lookups import DIMENSIONS, dimension_problem, keyed_fields

KEY_HELP = (
    "Pick a field, or type a tag or metadata key as "
    + " or ".join(f"{p}:<key>" for p in keyed_fields())
    + ' (e.g. "tag:customer" reads tags like "customer:acme"; "metadata:customer" reads '
    "the metadata key). Spans without a value for the key are their own group."
)


def options(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The declared dimensions, then keyed group-bys already in use (the URL's, a rule's)."""
    keyed = [e for e in extra if e not in DIMENSIONS and dimension_problem(e) is None]
    return [*DIMENSIONS, *dict.fromkeys(keyed)]


def valid(chosen: list[str]) -> tuple[list[str], str | None]:
    """The choices that are group-bys, and what to fix about the first that is not."""
    problems = [p for p in map(dimension_problem, chosen) if p]
    return [c for c in chosen if dimension_problem(c) is None], (problems[0] if problems else None)


def group_by_multiselect(
    container, label: str, default: list[str], *, key: str, max_selections: int
) -> tuple[list[str], str | None]:
    """A multiselect of group-bys that accepts a typed "tag:<key>" or "metadata:<key>"."""
    chosen = container.multiselect(
        label,
        options(default),
        default=default,
        max_selections=max_selections,
        accept_new_options=True,
        key=key,
        help=KEY_HELP,
    )
    return valid(chosen)


def group_by_select(container, label: str, default: str | None, *, key: str) -> str:
    """One group-by (a selectbox that accepts a typed key); a bad key is shown and refused."""
    choices = options([default] if default else [])
    chosen = container.selectbox(
        label,
        choices,
        index=choices.index(default) if default in choices else 0,
        accept_new_options=True,
        key=key,
        help=KEY_HELP,
    )
    if problem := dimension_problem(chosen):
        st.warning(problem, icon=":material/tune:")
        st.stop()
    return chosen
