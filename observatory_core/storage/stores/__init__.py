"""The stores: one module per database, and `store_for`, the one place a dialect name is read.

`storage/__init__.py` imports every store module, so their compiled SQL is registered before
any query is built. See docs/architecture.md, "What differs between stores".
"""

from __future__ import annotations

from importlib import import_module

from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.url import URL

from observatory_core.storage.stores.base import Store

# dialect name -> the module holding its store (each module registers itself on import)
MODULES = {"sqlite": "sqlite", "postgresql": "postgres"}
_STORES: dict[str, Store] = {}


def register(store: Store) -> Store:
    _STORES[store.name] = store
    return store


def load_all() -> None:
    """Import every store module (their `@compiles` functions and their `Store`)."""
    for module in MODULES.values():
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
        if name not in MODULES:
            raise LookupError(f"no store for the database {name!r}; known: {', '.join(MODULES)}")
        load_all()
        store = _STORES[name]
    return store


def all_stores() -> list[Store]:
    load_all()
    return [_STORES[name] for name in MODULES]


__all__ = ["MODULES", "Store", "all_stores", "load_all", "register", "store_for"]
