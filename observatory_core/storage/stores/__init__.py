"""The stores: one module per database, and `store_for`, the one place a dialect name is read.

`storage/__init__.py` imports every store module, so their compiled SQL is registered before
any query is built. See docs/architecture.md, "What differs between stores".
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.url import URL

from observatory_core.storage.stores.base import Store

# Every module of this package but `base` (the interface) and a helper whose name starts with
# `_` (`_turns`, mechanics two stores use) holds one store and registers it on import, so a new
# store is one new module here.
MODULES = tuple(
    m.name
    for m in pkgutil.iter_modules(__path__)
    if m.name != "base" and not m.name.startswith("_") and not m.ispkg
)
_STORES: dict[str, Store] = {}


def register(store: Store) -> Store:
    _STORES[store.name] = store
    return store


def load_all() -> None:
    """Import every store module (their `@compiles` functions and their `Store`)."""
    for module in MODULES:
        import_module(f"{__name__}.{module}")


def _name_of(bind: Engine | Connection | Dialect | URL | str) -> str:
    if isinstance(bind, Dialect):  # first: column types ask once per value
        return bind.name
    if isinstance(bind, str):
        return bind
    if isinstance(bind, URL):
        return bind.get_backend_name()
    return bind.dialect.name  # an Engine or a Connection


def store_for(bind: Engine | Connection | Dialect | URL | str) -> Store:
    """The store behind an engine, a connection, a dialect, a URL or a store's name."""
    name = _name_of(bind)
    store = _STORES.get(name)
    if store is None:
        load_all()
        store = _STORES.get(name)
        if store is None:
            raise LookupError(f"no store for the database {name!r}; known: {', '.join(_STORES)}")
    return store


def all_stores() -> list[Store]:
    """Every store, in the order their modules are named."""
    load_all()
    return list(_STORES.values())


__all__ = ["MODULES", "Store", "all_stores", "load_all", "register", "store_for"]
