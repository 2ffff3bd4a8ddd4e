"""The lowest floor above `base`: schema, engines, the dialect-neutral SQL constructs, and one
module per store (storage/stores/) for everything that differs between databases."""

from observatory_core.storage import stores as _stores

_stores.load_all()  # register every store's compiled SQL before any query is built
