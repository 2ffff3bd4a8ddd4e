"""`retention`: how long an org's spans and rollups are kept, the deletion run now, and
SQLite's space handed back (docs/operations.md, "Retention")."""

from __future__ import annotations

import argparse
import sys

from observatory_core.base.errors import UserError
from observatory_core.cli.common import open_engine


def _days_arg(raw: str | None):
    """`--spans-days 30`, or `forever` (or empty) to keep them forever."""
    return None if raw is None or raw.strip().lower() in ("", "forever") else raw.strip()


def cmd_retention(args) -> None:
    """Show or set an org's retention, run the worker's deletion now, or switch SQLite to
    handing freed space back (docs/operations.md, "Retention")."""
    engine = open_engine()
    if args.action == "vacuum":
        from observatory_core.storage.stores import store_for

        print(store_for(engine).enable_space_reclaim(engine))
        return
    if args.action == "run":
        from observatory_core.runtime.retention import restamp_span_store, run_and_record

        result = run_and_record(engine)
        if result.skipped:
            print("Another process is running retention now; nothing done.")
            return
        print(
            f"Deleted {result.spans:,} spans; months dropped: "
            f"{', '.join(result.partitions_dropped) or 'none'}; "
            f"{result.bytes_reclaimed / 1e6:,.1f} MB returned to disk in {result.seconds:.1f} s"
            + ("" if result.complete else " (stopped at the run's limit; run again to go on)")
        )
        restamped = restamp_span_store(engine)
        if restamped.said:
            print(restamped.said, file=sys.stderr if restamped.failed else sys.stdout)
        return
    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.retention import get_retention, set_retention
    from observatory_core.accounts.scope import Scope
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.storage.schema import projects

    if not args.org:
        raise UserError("Name the org: --org acme.")
    with engine.connect() as conn:
        org_id = org_id_by_slug(conn, args.org)
        slugs = dict(
            conn.execute(
                projects.select()
                .with_only_columns(projects.c.slug, projects.c.id)
                .where(projects.c.org_id == org_id)
            ).all()
        )
    scope = Scope(org_id=org_id, role=Role.ADMIN, username="cli")
    current = get_retention(engine, scope)
    if args.action == "set":
        wanted = dict(current.projects)
        for item in args.project or []:
            slug, _, days = item.partition("=")
            if slug not in slugs:
                raise UserError(f"No project {slug!r} in {args.org}; write --project slug=days.")
            wanted[slugs[slug]] = _days_arg(days)
        keep = current.span_days if args.spans_days is None else _days_arg(args.spans_days)
        rollups = current.rollup_days if args.rollups_days is None else _days_arg(args.rollups_days)
        saved = set_retention(engine, scope, keep, rollups, wanted, wait=True)
        if saved.span_store:  # the span store's stored spans: re-stamped, or why not yet
            print(saved.span_store, file=sys.stderr if saved.span_store_failed else sys.stdout)
        current = get_retention(engine, scope)
    names = {v: k for k, v in slugs.items()}

    def said(days: int | None) -> str:
        return "forever" if days is None else f"{days} days"

    print(f"{args.org}: spans {said(current.span_days)}, rollups {said(current.rollup_days)}")
    for project_id, days in sorted(current.projects.items()):
        print(f"  project {names.get(project_id, project_id)}: spans {said(days)}")


def add_retention(sub: argparse._SubParsersAction) -> None:
    keep = sub.add_parser(
        "retention", help="show or set how long spans and rollups are kept; run it; vacuum"
    )
    keep.add_argument(
        "action",
        choices=["show", "set", "run", "vacuum"],
        help="run: delete what has expired now; vacuum: once, server stopped (SQLite)",
    )
    keep.add_argument("--org", help="org slug, e.g. acme (show, set)")
    keep.add_argument("--spans-days", help="days spans are kept, or 'forever' (set)")
    keep.add_argument("--rollups-days", help="days rollups are kept, or 'forever' (set)")
    keep.add_argument(
        "--project",
        action="append",
        help="slug=days for a project's own span retention; slug= for the org's (set)",
    )
    keep.set_defaults(func=cmd_retention)
