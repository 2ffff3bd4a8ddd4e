"""Work over the stored spans: `import` a file, `remap` fields after a mapping improved,
rebuild the `rollups`."""

from __future__ import annotations

import argparse

from observatory_core.base.errors import UserError, first_line
from observatory_core.cli.common import open_engine, parse_since


def _migrated_and_org(slug: str | None):
    """The engine (schema brought up to date) and the id of the org named, if any."""
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.rollups.upgrade import upgrade

    engine = open_engine()
    upgrade(engine)
    if not slug:
        return engine, None
    with engine.connect() as conn:
        return engine, org_id_by_slug(conn, slug)


def cmd_rollups(args) -> None:
    import time

    from observatory_core.rollups.maintain import rebuild
    from observatory_core.storage.clickhouse.current import span_store_url

    if span_store_url():  # this rebuild reads DATABASE_URL's spans: none there
        raise UserError(
            "The spans are in the span store (OBSERVATORY_SPAN_STORE), whose rollups its own "
            "views keep; this command rebuilds DATABASE_URL's, which hold none. After a mapping "
            "changed, run `remap` (it rebuilds the days it changes); to give old rollup rows "
            "their latency bins, run `clickhouse-rebuild-rollups` (docs/scale.md)."
        )
    engine, org_id = _migrated_and_org(args.org)
    print("Rebuilding rollups from spans (1 minute, 1 hour, 1 day)…", flush=True)
    started = time.perf_counter()
    counts = rebuild(engine, org_id=org_id)
    rows = ", ".join(f"{grain}: {n:,} rows" for grain, n in counts.items())
    print(f"Rollups rebuilt in {time.perf_counter() - started:.1f} s ({rows}).")


def cmd_remap(args) -> None:
    from tqdm import tqdm

    from observatory_core.ingest.remap import count_spans, remap

    engine, org_id = _migrated_and_org(args.org)
    since = parse_since(args.since)
    total = count_spans(engine, org_id=org_id, since=since)
    with tqdm(total=total, unit="span", unit_scale=True, desc="Remapping spans") as bar:
        try:
            report = remap(engine, org_id=org_id, since=since, on_batch=lambda n, _c: bar.update(n))
        except _store_failure() as exc:  # the span store failed part-way (a server's error)
            detail = first_line(exc)
            raise UserError(
                f"The span store failed during the remap ({detail}); what was remapped is "
                "kept: check the store, then run the same command again (it goes on from "
                "where the spans still lack their fields)."
            ) from None
    print(
        f"Read {report.scanned:,} spans, filled fields of {report.changed:,}, rebuilt the rollups "
        f"of {report.orgs_rebuilt} org(s) in {report.seconds:.1f} s ({report.rate:,.0f} spans/s)."
    )


def _store_failure() -> tuple[type[BaseException], ...]:
    """The span store's driver errors (none when its driver is not installed)."""
    try:
        from clickhouse_connect.driver.exceptions import ClickHouseError
    except ImportError:
        return ()
    return (ClickHouseError,)


def cmd_import(args) -> None:
    from pathlib import Path

    from tqdm import tqdm

    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.base.settings import get_settings
    from observatory_core.ingest.importer import import_file

    engine = open_engine()
    with engine.connect() as conn:
        org_id = org_id_by_slug(conn, args.org)
    with tqdm(unit="span", unit_scale=True, desc=f"Importing {Path(args.file).name}") as bar:
        report = import_file(
            engine,
            org_id,
            Path(args.file),
            project=args.project,
            text_max_chars=get_settings().text_max_chars,
            on_batch=lambda seen, _new: bar.update(seen),
        )
    print(
        f"Read {report.read:,} spans: {report.stored:,} stored, "
        f"{report.read - report.stored - report.rejected:,} already there, "
        f"{report.rejected:,} rejected."
    )
    for reason in report.reasons:
        print(f"  rejected: {reason}")


def add_rollups(sub: argparse._SubParsersAction) -> None:
    rollups = sub.add_parser("rollups", help="rebuild the metric rollups from the spans")
    rollups.add_argument("action", choices=["rebuild"])
    rollups.add_argument("--org", help="only this org (slug); default: every org")
    rollups.set_defaults(func=cmd_rollups)


def add_remap(sub: argparse._SubParsersAction) -> None:
    remap = sub.add_parser(
        "remap", help="fill span fields from their kept attributes after a mapping improved"
    )
    remap.add_argument("--org", help="only this org (slug); default: every org")
    remap.add_argument("--since", help="only spans started at or after this date (ISO 8601)")
    remap.set_defaults(func=cmd_remap)


def add_import(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="import an OTLP/JSON file or one of our exports")
    imp.add_argument("file", help=".json/.jsonl (OTLP or export), .csv, .parquet; .gz allowed")
    imp.add_argument("--org", required=True, help="org slug, e.g. acme")
    imp.add_argument("--project", default="default", help="project slug (created if missing)")
    imp.set_defaults(func=cmd_import)
