"""`OBSERVATORY_SPAN_STORE`, read and checked: where the ClickHouse span store lives.

Two forms (docs/scale.md): `chdb:///ABSOLUTE/PATH` runs the engine in this process with its
data under PATH; `clickhouse://USER:PASS@HOST:8123/DB` (`clickhouses://` for HTTPS) talks to a
server, and `?cluster=NAME` on it says the database was made for that cluster (docs/scale.md,
"A cluster"). A URL that is neither gets one sentence saying what to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from observatory_core.base.errors import ConfigError

SETTING = "OBSERVATORY_SPAN_STORE"
DEFAULT_DATABASE = "observatory"
# A name written into DDL as an identifier (the database, a cluster): a plain one only.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_FORMS = (
    "chdb:///ABSOLUTE/PATH (the in-process engine) or "
    "clickhouse://USER:PASS@HOST:8123/DB (a server; clickhouses:// for HTTPS, "
    "?cluster=NAME for a cluster)"
)


@dataclass(frozen=True)
class SpanStoreTarget:
    """Where the span store is: `path` for chDB, `host`/`port`/... for a server."""

    kind: str  # "chdb" | "server"
    database: str
    path: str | None = None
    host: str | None = None
    port: int | None = None
    username: str = "default"
    password: str = field(default="", repr=False)  # never in a repr, a log or a failure
    secure: bool = False
    cluster: str | None = None  # a server's cluster: schema changes and mutations ON CLUSTER

    @property
    def in_process(self) -> bool:
        return self.kind == "chdb"

    def describe(self) -> str:
        """The target without its password, for messages and logs."""
        if self.in_process:
            return f"chdb://{self.path} (database {self.database})"
        scheme = "clickhouses" if self.secure else "clickhouse"
        where = f"?cluster={self.cluster}" if self.cluster else ""
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.database}{where}"


def _shown(url: str) -> str:
    """The URL as a person wrote it, with any password masked."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def _problem(url: str, what: str) -> ConfigError:
    return ConfigError(f"{SETTING}={_shown(url)!r}: {what}. Write {_FORMS}.")


def _database(url: str, name: str | None) -> str:
    name = name or DEFAULT_DATABASE
    if not IDENTIFIER.match(name):
        raise _problem(
            url, f"the database name {name!r} must be letters, digits and '_' (not first a digit)"
        )
    return name


def _cluster(url: str, name: str | None) -> str | None:
    if name is not None and not IDENTIFIER.match(name):
        raise _problem(
            url, f"the cluster name {name!r} must be letters, digits and '_' (not first a digit)"
        )
    return name


def parse_target(url: str) -> SpanStoreTarget:
    """The target `url` names, or a `ConfigError` saying what to write instead."""
    url = (url or "").strip()
    if not url:
        raise ConfigError(
            f"{SETTING} is empty: unset it to keep spans in DATABASE_URL, or write {_FORMS}."
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _problem(url, f"it cannot be read as a URL ({exc})") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "chdb":
        if parts.netloc:
            raise _problem(url, "a chDB path must be absolute, with three slashes after chdb:")
        if not parts.path or parts.path == "/":
            raise _problem(url, "it names no folder for the chDB data")
        if "cluster" in query:
            raise _problem(url, "chDB runs on one node: cluster= is for a clickhouse:// server")
        return SpanStoreTarget("chdb", _database(url, query.get("database")), path=parts.path)
    if parts.scheme in ("clickhouse", "clickhouses"):
        if not parts.hostname:
            raise _problem(url, "it names no server host")
        secure = parts.scheme == "clickhouses"
        name = unquote(parts.path.lstrip("/")) if parts.path.strip("/") else None
        if name and "/" in name:
            raise _problem(url, "the path after the host must be one database name")
        return SpanStoreTarget(
            "server",
            _database(url, name),
            host=parts.hostname,
            port=port or (8443 if secure else 8123),
            username=unquote(parts.username) if parts.username else "default",
            password=unquote(parts.password) if parts.password else "",
            secure=secure,
            cluster=_cluster(url, query.get("cluster")),
        )
    if not parts.scheme:
        raise _problem(url, "it has no scheme")
    raise _problem(url, f"the scheme {parts.scheme!r} is not a span store")
