"""The span store's commands (`clickhouse-ddl`, `migrate-spans`, `clickhouse-rebuild-rollups`,
`clickhouse-fold-copies`; docs/scale.md), kept out of `__main__` so the command line stays a list of short commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sqlalchemy.engine import Engine

from observatory_core.base.errors import UserError


def cmd_clickhouse_ddl(args) -> None:
    """Print the span store's DDL (docs/scale.md): one node, or a cluster with --cluster."""
    from observatory_core.base.settings import get_settings
    from observatory_core.storage.clickhouse.ddl import ddl_text
    from observatory_core.storage.clickhouse.target import DEFAULT_DATABASE, parse_target

    # what the command does not name is the setting's (its database, its ?cluster=)
    url = get_settings().span_store
    target = parse_target(url) if url and (args.database is None or args.cluster is None) else None
    database = args.database or (target.database if target else DEFAULT_DATABASE)
    cluster = args.cluster or (target.cluster if target else None)
    print(ddl_text(database, cluster), end="")


def _span_store_for(url: str | None):
    """The span store `--to` names (default: OBSERVATORY_SPAN_STORE), its schema brought up to
    date; a bad URL is explained in terms of `--to` when that is where it came from."""
    import logging

    from observatory_core.base.errors import ConfigError, DatabaseUnavailable
    from observatory_core.base.settings import get_settings
    from observatory_core.storage.clickhouse.connect import open_span_store

    # the driver logs a server it cannot reach before raising; the one sentence below says it
    logging.getLogger("clickhouse_connect").addHandler(logging.NullHandler())
    from observatory_core.storage.clickhouse.target import SETTING

    if not url:
        url = get_settings().span_store
        if not url:
            raise UserError(
                "Name the ClickHouse span store to copy into: --to chdb:///ABSOLUTE/PATH or "
                f"--to clickhouse://USER:PASS@HOST:8123/DB, or set {SETTING} (docs/scale.md)."
            )
        return open_span_store(url)
    try:
        return open_span_store(url)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(f"{SETTING}=", "--to ", 1)) from None
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(
            str(exc).replace(f"that {SETTING} has", "that --to has")
        ) from None


def cmd_migrate_spans(args, engine_factory: Callable[[], Engine]) -> int:
    """Copy DATABASE_URL's spans into the ClickHouse span store, or compare both (--check)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError
    from tqdm import tqdm

    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.storage.clickhouse import migrate_spans as mig
    from observatory_core.storage.migrate import current_revision, head_revision

    engine = engine_factory()
    if current_revision(engine) != head_revision():
        raise UserError(
            "DATABASE_URL's schema is not current: run `python -m observatory_core migrate` "
            "first, then copy its spans."
        )
    org_id = None
    if args.org:
        with engine.connect() as conn:
            org_id = org_id_by_slug(conn, args.org)
    orgs = mig.source_orgs(engine, org_id)
    whose = f" of {args.org}" if args.org else ""
    store = _span_store_for(args.to)
    target = store.target.describe()
    try:
        if args.check:
            checks = mig.check(engine, store, orgs)
            print(f"DATABASE_URL against {target}:")
            print("\n".join(mig.check_lines(checks)))
            bad = [c.slug for c in checks if not c.ok]
            if bad:
                print(f"Mismatch in {', '.join(bad)}: run migrate-spans again, then check again.")
                return 1
            print("Every org matches.")
            return 0
        if not mig.has_spans(engine, list(orgs)):
            raise UserError(f"DATABASE_URL holds no spans{whose}: there is nothing to copy.")
        total = mig.remaining(engine, store, list(orgs), from_start=args.from_start)
        bar = tqdm(total=total, unit="span", unit_scale=True, desc=f"Copying spans{whose}")
        try:
            report = mig.migrate_spans(
                engine,
                store,
                org_ids=list(orgs),
                batch=mig.BATCH if args.batch is None else args.batch,
                from_start=args.from_start,
                on_batch=lambda read, _written: bar.update(read),
            )
        except KeyboardInterrupt:
            bar.close()
            print(
                f"Stopped after {bar.n:,} spans read; what was copied is kept. Run the same "
                "command again to go on from where it stopped."
            )
            return 130
        except ClickHouseError as exc:
            bar.close()
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise UserError(
                f"The span store at {target} failed during the copy ({detail}); what was "
                "copied is kept: check the server, then run the same command again."
            ) from None
        bar.close()
        print(
            f"Copied {report.copied:,} spans to {target}, {report.skipped:,} skipped as already "
            f"there, in {report.seconds:.1f} s ({report.rate:,.0f} spans/s read)."
            + (
                f" {report.expired:,} not copied: past their org's or project's span retention."
                if report.expired
                else ""
            )
        )
        return 0
    finally:
        store.close()


def cmd_rebuild_rollups(args, engine_factory: Callable[[], Engine]) -> int:
    """Fill the span store's hourly users and sessions again from its spans (schema version 5),
    and give the rollup rows written before schema version 3 their latency bins (resumable: a
    stopped run goes on where rows still lack them; docs/scale.md), each org's day under that
    org's write turn in DATABASE_URL, as ingest takes it."""
    from observatory_core.storage.clickhouse.org_turns import org_turns
    from observatory_core.storage.clickhouse.rebuild import (
        days_missing_bins,
        rebuild_actors,
        rebuild_bins,
    )

    turn = org_turns(engine_factory())
    store = _span_store_for(args.to)
    target = store.target.describe()
    try:
        read = rebuild_actors(store, turn=turn)  # a set: refilling it changes no count
        print(f"Filled the hourly users and sessions of {target} again ({read:,} org-days).")
        days = len(days_missing_bins(store))
        if not days:
            print(f"Every rollup row of {target} has its latency bins: nothing to rebuild.")
            return 0
        print(f"{days:,} org-days of {target} have rollup rows without latency bins.")
        try:
            report = rebuild_bins(
                store, on_day=lambda org, day: print(f"  org {org}, {day}"), turn=turn
            )
        except KeyboardInterrupt:
            print("Stopped; what was rebuilt is kept. Run the same command again to go on.")
            return 130
        print(f"Rebuilt the latency bins of {report.days:,} org-days.")
        if report.left:
            print(
                f"{report.left:,} org-days keep rows whose spans do not match their counts "
                "(counted twice, or deleted since): their percentiles stay empty in the metrics."
            )
            return 1
        return 0
    finally:
        store.close()


def cmd_fold_copies(args) -> int:
    """Delete every span's older copies in the span store (fold_copies.py): what schema version
    7 does at open, for a cluster whose replica failed between a batch's check and its insert."""
    from observatory_core.storage.clickhouse.fold_copies import fold_copies

    store = _span_store_for(args.to)  # its open applies version 7, which folds once
    target = store.target.describe()
    try:
        print(f"Looking for spans stored more than once in {target} ...", flush=True)
        folded = fold_copies(store)
        deleted = sum(folded.deleted.values())
        print(
            f"Deleted {deleted:,} older copies of spans in {target}"
            + (f" ({len(folded.deleted):,} orgs)." if deleted else ": each span is stored once.")
        )
        if folded.tied:
            print(
                f"{folded.tied:,} spans keep two copies of the same version (written in the "
                "same microsecond by two writers): they cannot be told apart, and are listed twice."
            )
            return 1
        return 0
    finally:
        store.close()


def add_commands(sub: argparse._SubParsersAction, engine_factory: Callable[[], Engine]) -> None:
    """Add the span store's commands; `engine_factory` opens DATABASE_URL, checked."""
    ch_ddl = sub.add_parser(
        "clickhouse-ddl", help="print the ClickHouse span store's DDL (docs/scale.md)"
    )
    ch_ddl.add_argument(
        "--cluster",
        help="a cluster's name: replicated tables ON CLUSTER, Distributed over them "
        "(default: OBSERVATORY_SPAN_STORE's ?cluster=, else one node)",
    )
    ch_ddl.add_argument(
        "--database", help="default: OBSERVATORY_SPAN_STORE's database, else observatory"
    )
    ch_ddl.set_defaults(func=cmd_clickhouse_ddl)
    move = sub.add_parser(
        "migrate-spans",
        help="copy DATABASE_URL's spans into the ClickHouse span store (resumable; docs/scale.md)",
    )
    move.add_argument(
        "--to",
        help="chdb:///ABSOLUTE/PATH or clickhouse://USER:PASS@HOST:8123/DB; "
        "default: OBSERVATORY_SPAN_STORE",
    )
    move.add_argument("--org", help="only this org (slug); default: every org")
    move.add_argument("--batch", type=int, help="spans per page (default 20,000)")
    move.add_argument(
        "--from-start",
        action="store_true",
        help="read every span again, not only past the checkpoints (spans already there are skipped)",
    )
    move.add_argument(
        "--check",
        action="store_true",
        help="compare spans, tokens and cost per org in both; exit 1 on a mismatch",
    )
    move.set_defaults(func=lambda args: cmd_migrate_spans(args, engine_factory))
    rebuild = sub.add_parser(
        "clickhouse-rebuild-rollups",
        help="fill the span store's hourly users and sessions again and give its rollup rows "
        "from before schema version 3 their latency bins (resumable; docs/scale.md)",
    )
    rebuild.add_argument(
        "--to",
        help="chdb:///ABSOLUTE/PATH or clickhouse://USER:PASS@HOST:8123/DB; "
        "default: OBSERVATORY_SPAN_STORE",
    )
    rebuild.set_defaults(func=lambda args: cmd_rebuild_rollups(args, engine_factory))
    fold = sub.add_parser(
        "clickhouse-fold-copies",
        help="delete every span's older copies in the span store "
        "(docs/span-store-internals.md, 'Each span once')",
    )
    fold.add_argument(
        "--to",
        help="chdb:///ABSOLUTE/PATH or clickhouse://USER:PASS@HOST:8123/DB; "
        "default: OBSERVATORY_SPAN_STORE",
    )
    fold.set_defaults(func=cmd_fold_copies)
