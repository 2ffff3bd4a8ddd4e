"""Where the span store's statements put and find things, on one node or on a cluster, and the
settings a cluster's statements need (docs/scale.md, "A cluster").

On one node every table is `<database>.<name>`. On a cluster (`?cluster=NAME` on the
`clickhouse://` URL, `target.py`) each table that holds rows is `<name>_local` on every node,
replicated, and a Distributed `<name>` over the shards takes its place: readers and writers
name `<name>` either way (`Naming.read`), while schema changes and mutations go `ON CLUSTER` to
the `_local` tables (`Naming.stored`, `Naming.on`).

The settings are empty on one node, so its statements are sent exactly as they were before a
cluster was possible.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from observatory_core.base.errors import ConfigError, DatabaseUnavailable, first_line
from observatory_core.storage.clickhouse.target import IDENTIFIER

# A schema change sent ON CLUSTER waits for every node to run it and fails when one did not
# (`throw`: a node's error raised, not only listed in the table of the nodes' statuses the
# statement answers), so a version is recorded only once every node has it; a node that does
# not answer in `distributed_ddl_task_timeout` fails the open, and the next open runs the
# version again.
# The wait is kept under the client's own (`connect.py`, 60 s), so a slow node is said by the
# server, not by a dropped connection; the statement still runs on that node later.
DDL_SETTINGS: dict[str, Any] = {
    "distributed_ddl_output_mode": "throw",
    "distributed_ddl_task_timeout": 50,
}
# A statement sent ON CLUSTER that returns once it is in the cluster's queue, waiting for no
# node (`distributed_ddl_task_timeout = 0`): the re-stamp's mutation (`restamp.py`), sent
# while an org's settings row is held, which must not wait on a slow node. Each node runs the
# queue in its order, so two re-stamps of an org reach every node in the order sent.
QUEUED_SETTINGS: dict[str, Any] = {**DDL_SETTINGS, "distributed_ddl_task_timeout": 0}
# The writer's check for stored spans and its insert go to the same replica of each shard (the
# first that answers, in the cluster's order), not one picked at random that replication may
# not have reached yet (`writes.py`); and not the node's own replica of its shard first
# (`prefer_localhost_replica`, on by default), which would make the pick depend on the node a
# statement reaches (behind a load balancer, another node for each).
SAME_REPLICA: dict[str, Any] = {"load_balancing": "in_order", "prefer_localhost_replica": 0}
# An insert into a Distributed table returns once each shard has stored its rows (by default
# it is queued and forwarded in the background, and the next batch's check for stored spans
# could miss them). ClickHouse releases before 23.10 know the setting only as
# `insert_distributed_sync`: a cluster on one is refused at open (`check_server`).
FOREGROUND_INSERT = "distributed_foreground_insert"
WRITE_SETTINGS: dict[str, Any] = {FOREGROUND_INSERT: 1, **SAME_REPLICA}
# A read of a Distributed table whose IN or JOIN holds a subquery over another one (the query
# builders' `trace_id IN` the traces with a matching span, a user's or a session's) is refused by default;
# `global` runs the subquery once over every shard and sends its result to each. (The look-ups
# answer trace ids and a trace lies on one shard, so `local` would find the same traces;
# `global` is the mode the tests run: docs/scale.md, "A cluster", "Reads".)
READ_SETTINGS: dict[str, Any] = {"distributed_product_mode": "global"}


@dataclass(frozen=True)
class Naming:
    """Where the statements put things: a database, on one node or `ON CLUSTER cluster`."""

    database: str
    cluster: str | None = None

    def __post_init__(self) -> None:
        for what, name in (("database", self.database), ("cluster", self.cluster)):
            if name is not None and not IDENTIFIER.match(name):
                raise ConfigError(
                    f"The {what} name {name!r} must be letters, digits and '_' (not first a digit)."
                )

    @property
    def on(self) -> str:
        return f" ON CLUSTER {self.cluster}" if self.cluster else ""

    def stored(self, name: str) -> str:
        """The table that holds the rows: `<name>_local` on each node of a cluster."""
        return f"{self.database}.{name}_local" if self.cluster else f"{self.database}.{name}"

    def read(self, name: str) -> str:
        """The table readers and writers name: the Distributed one on a cluster."""
        return f"{self.database}.{name}"

    def engine(self, kind: str, name: str, args: str = "", *, sharded: bool = True) -> str:
        """`kind` (a MergeTree family engine), replicated on a cluster: its keeper path names the
        shard (or, for a table every node keeps whole, no shard) and the table."""
        if not self.cluster:
            return f"{kind}({args})"
        shard = "{shard}" if sharded else "all"
        local = f"{name}_local" if sharded else name
        path = f"'/clickhouse/tables/{shard}/{self.database}/{local}', '{{replica}}'"
        return f"Replicated{kind}({path}{', ' + args if args else ''})"

    def every_node(self, system_table: str) -> str:
        """A system table as seen on every node of the cluster (every replica of every shard),
        or this node's alone."""
        if not self.cluster:
            return f"system.{system_table}"
        return f"clusterAllReplicas({self.cluster}, system.{system_table})"

    def settings(self, kind: dict[str, Any]) -> dict[str, Any]:
        """`kind` (`DDL_SETTINGS`, `WRITE_SETTINGS`, ...) on a cluster, else none."""
        return dict(kind) if self.cluster else {}


# How long a lightweight DELETE keeps its caller (0: not at all, 1: until this replica has
# applied it, 2: every replica). The setting is ClickHouse 24.4's; a release before it refuses
# a statement that sends it, and takes `mutations_sync` with the same values instead.
LIGHTWEIGHT_SYNC = "lightweight_deletes_sync"


def delete_sync(store: Any, level: int) -> dict[str, int]:
    """The setting that makes a lightweight DELETE wait `level` (0, 1, 2) on `store`'s
    server: `LIGHTWEIGHT_SYNC` where it knows it (`SpanStore.knows`), else `mutations_sync`."""
    name = LIGHTWEIGHT_SYNC if store.knows(LIGHTWEIGHT_SYNC) else "mutations_sync"
    return {name: level}


def check_server(client: Any, naming: Naming) -> None:
    """On a cluster, a `ConfigError` when the server does not know the writes' settings (a
    release before 23.10: the setting, named `insert_distributed_sync` there, would be refused
    at the first write). Read from the settings the driver fetched as it connected; none known
    (a driver that fetched none): not checked."""
    known = getattr(client, "server_settings", None) or {}
    if not naming.cluster or not known or FOREGROUND_INSERT in known:
        return
    version = getattr(client, "server_version", None) or "unknown"
    raise ConfigError(
        f"The span store on the cluster {naming.cluster} needs ClickHouse 23.10 or later (the "
        f"server answering is version {version}: it has no {FOREGROUND_INSERT} setting, which "
        "the writes need). Upgrade the cluster (docs/scale.md, 'A cluster')."
    )


@contextmanager
def schema_errors(naming: Naming) -> Iterator[None]:
    """On a cluster, a schema change the nodes refuse or do not finish said in one sentence with
    what to check (the cluster, its macros and Keeper are the node's configuration): a
    `DatabaseUnavailable` for what a retry may cure (a node too slow or down), else a
    `ConfigError`. On one node, failures pass through as they always have."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from observatory_core.storage.clickhouse.writes import retryable

    try:
        yield
    except ClickHouseError as exc:
        if not naming.cluster:
            raise
        first = first_line(exc)
        what = f"The span store's schema was not applied on the cluster {naming.cluster} ({first})"
        if retryable(exc):
            raise DatabaseUnavailable(
                f"{what}: a node did not finish in time or is down; the next open applies it again."
            ) from exc
        raise ConfigError(
            f"{what}. Check that every node defines the cluster {naming.cluster}, the {{shard}} "
            "and {replica} macros and ClickHouse Keeper (docs/scale.md, 'A cluster')."
        ) from exc
