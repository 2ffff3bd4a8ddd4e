"""Command line: `python -m observatory_core <command>`. Errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from sqlalchemy.exc import OperationalError

from observatory_core import span_store_commands
from observatory_core.base.errors import UserError, first_line


def _engine():
    from observatory_core.base.settings import get_settings
    from observatory_core.storage.engine import check_connection, get_engine

    engine = get_engine(get_settings().database_url)
    check_connection(engine)
    return engine


def _progress(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, unit="span", unit_scale=True, desc="Loading demo data")
    return bar, (lambda seen, _new: bar.update(seen))


def cmd_migrate(_args) -> None:
    from observatory_core.rollups.upgrade import upgrade
    from observatory_core.storage.migrate import current_revision

    engine = _engine()
    upgrade(engine)
    print(f"Database is at schema revision {current_revision(engine)}.")


def cmd_demo(args) -> None:
    from observatory_core.base.settings import get_settings
    from observatory_core.demo.load import load_demo
    from observatory_core.rollups.upgrade import upgrade

    engine = _engine()
    upgrade(engine)
    end = datetime.fromisoformat(args.end) if args.end else None
    bar, on_batch = _progress(args.spans)
    report = load_demo(
        engine,
        spans=args.spans,
        days=args.days,
        seed=args.seed,
        end=end,
        text_max_chars=get_settings().text_max_chars,
        on_batch=on_batch,
    )
    bar.close()
    print(
        f"Stored {report.spans:,} new spans in {report.seconds:.1f} s ({report.rate:,.0f} spans/s)."
    )
    from observatory_core.demo.starter_rules import install_starter_rules

    events = install_starter_rules(engine, days=args.days, now=end)
    if events:
        print(f"Replayed the starter alert rules over the loaded history: {events} state changes.")
    from observatory_core.demo.starter_dashboards import install_starter_dashboards

    if made := install_starter_dashboards(engine):
        print(f"Added {made} starter dashboards (Cost by team, Latency SLOs).")


def cmd_bootstrap(args) -> None:
    from observatory_core.rollups.upgrade import upgrade
    from observatory_core.runtime import bootstrap

    engine = _engine()
    upgrade(engine)
    if bootstrap.ensure_secrets_file():
        print("Created .streamlit/secrets.toml with a random login secret.")
    if args.demo_spans and bootstrap.span_count(engine) == 0:
        args.spans, args.end = args.demo_spans, None
        cmd_demo(args)
    elif args.demo_spans and (gap := bootstrap.demo_gap(engine, datetime.now(UTC))):
        # Keep the demo alive: fill the time since the last run at the same daily rate.
        days = min(gap.total_seconds() / 86400, args.days)
        print(f"Demo data ends {gap} ago; adding traffic up to now.")
        args.spans = max(100, int(args.demo_spans / args.days * days))
        args.days, args.end, args.seed = days, None, args.seed + int(datetime.now(UTC).timestamp())
        cmd_demo(args)
    admin = bootstrap.ensure_first_admin(engine)
    if admin:
        line = "=" * 64
        print(f"\n{line}\n First login (shown once, write it down):")
        print(f"   user: {admin.username}   password: {admin.password}   org: {admin.org_slug}")
        print(
            f" More users: python -m observatory_core user add NAME --org {admin.org_slug} --role viewer"
        )
        print(f"{line}\n")


def cmd_user(args) -> None:
    from observatory_core.accounts import users

    engine = _engine()
    if args.action == "add":
        password = sys.stdin.readline().strip() if args.password_stdin else None
        made = users.add_user(
            engine,
            args.org,
            args.username,
            args.role,
            name=args.name,
            email=args.email,
            password=password,
        )
        print(f"Created {args.username} ({args.role}) in {args.org}.")
        if not args.password_stdin:
            print(f"Password (shown once): {made}")
    elif args.action == "passwd":
        password = sys.stdin.readline().strip() if args.password_stdin else None
        made = users.set_password(engine, args.username, password)
        print(
            f"Password of {args.username} changed." + ("" if password else f" New password: {made}")
        )
    elif args.action == "role":
        users.set_role(engine, args.username, args.role)
        print(f"{args.username} is now {args.role}; this applies on their next request.")
    elif args.action in ("disable", "enable"):
        users.set_disabled(engine, args.username, args.action == "disable")
        print(f"{args.username} {args.action}d.")
    elif args.action == "unlock":
        lifted = users.unlock(engine, args.username)
        print(
            f"Log-in of {args.username} unlocked." if lifted else f"{args.username} was not locked."
        )
    else:
        for u in users.list_users(engine):
            state = " (disabled)" if u["disabled"] else ""
            print(f"{u['username']:<24} {u['role']:<10} org {u['org_id']}{state}")


def cmd_audit(args) -> None:
    import json

    from sqlalchemy import select

    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.storage.schema import audit_log

    engine = _engine()
    a = audit_log.c
    query = select(audit_log).order_by(a.at.desc(), a.id.desc()).limit(args.limit)
    with engine.connect() as conn:
        if args.org:
            query = query.where(a.org_id == org_id_by_slug(conn, args.org))
        if args.action:
            query = query.where(a.action == args.action)
        rows = conn.execute(query).mappings().all()
    for r in rows:
        change = ""
        if r["before"] is not None or r["after"] is not None:
            change = f" {json.dumps(r['before'])} -> {json.dumps(r['after'])}"
        print(
            f"{r['at']:%Y-%m-%d %H:%M:%S}  org {r['org_id'] or '-'}  {r['username']}  "
            f"{r['action']}  {r['subject'] or ''}{change}  {r['address'] or ''}"
        )


def cmd_worker(_args) -> None:
    from observatory_core.base.settings import get_settings
    from observatory_core.rollups.upgrade import upgrade
    from observatory_core.runtime import worker

    engine = _engine()
    upgrade(engine)
    print("Worker running (exports); stop with Ctrl-C or SIGTERM.", flush=True)
    worker.main(engine, get_settings())


def _migrated_and_org(slug: str | None):
    """The engine (schema brought up to date) and the id of the org named, if any."""
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.rollups.upgrade import upgrade

    engine = _engine()
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
    since = _parse_since(args.since)
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


def _parse_since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise UserError(
            f"--since {raw!r} is not a date; write it as 2026-11-01 or 2026-11-01T00:00:00+00:00."
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_budget(args) -> None:
    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.scope import Scope
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.reports.overview import set_budget

    engine = _engine()
    with engine.connect() as conn:
        org_id = org_id_by_slug(conn, args.org)
    set_budget(engine, Scope(org_id=org_id, role=Role.ADMIN, username="cli"), args.usd)
    print(f"Monthly budget of {args.org} set to ${args.usd:,.2f}.")


def cmd_import(args) -> None:
    from pathlib import Path

    from tqdm import tqdm

    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.base.settings import get_settings
    from observatory_core.ingest.importer import import_file

    engine = _engine()
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


def cmd_keys(args) -> None:
    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.scope import Scope
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.ingest.apikeys import create_key, list_keys, revoke_key

    engine = _engine()
    with engine.connect() as conn:
        org_id = org_id_by_slug(conn, args.org)
    scope = Scope(org_id=org_id, role=Role.ADMIN, username="cli")
    if args.action == "create":
        key = create_key(
            engine, scope, args.name or "cli", scopes=tuple(args.scopes.split(",")), role=args.role
        )
        print(f"{key}\n(shown once: store it now; only its hash is kept)")
    elif args.action == "revoke":
        if args.id is None:
            raise UserError("Give the key to revoke with --id N (see `keys list`).")
        revoke_key(engine, scope, args.id)
        print(f"Key {args.id} revoked.")
    else:
        for k in list_keys(engine, scope):
            state = "revoked" if k["revoked_at"] else f"last used {k['last_used_at'] or 'never'}"
            print(f"{k['id']:>4}  {k['prefix']}...  {k['name']}  [{k['scopes']}]  {state}")


def _days_arg(raw: str | None):
    """`--spans-days 30`, or `forever` (or empty) to keep them forever."""
    return None if raw is None or raw.strip().lower() in ("", "forever") else raw.strip()


def cmd_retention(args) -> None:
    """Show or set an org's retention, run the worker's deletion now, or switch SQLite to
    handing freed space back (docs/operations.md, "Retention")."""
    engine = _engine()
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


def cmd_prices(args) -> None:
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.ingest.pricing import list_org_prices, set_org_price

    engine = _engine()
    with engine.begin() as conn:
        org_id = org_id_by_slug(conn, args.org)
        if args.action == "set":
            missing = [
                f"--{n}"
                for n in ("provider", "model", "input", "output")
                if getattr(args, n) is None
            ]
            if missing:
                raise UserError(f"`prices set` needs {', '.join(missing)}.")
            since = _parse_since(args.since) if args.since else datetime.now(UTC)
            set_org_price(
                conn, org_id, args.provider, args.model, args.input, args.output, since, actor="cli"
            )
            print(
                f"{args.provider}/{args.model} in {args.org}: ${args.input:g} input and "
                f"${args.output:g} output per million tokens from {since.isoformat()}. Spans "
                "received from now on (within a minute in a running server) are priced so; "
                "spans already stored keep their cost."
            )
            return
        rows = list_org_prices(conn, org_id)
    if not rows:
        print(f"No custom prices in {args.org}: every model is priced from the genai-prices table.")
    for r in rows:
        print(
            f"{r['provider']}/{r['model']}  input ${r['input_usd_per_mtok']:g}  "
            f"output ${r['output_usd_per_mtok']:g} per million tokens  "
            f"from {r['effective_from'].isoformat()}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m observatory_core")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="bring the schema up to date").set_defaults(func=cmd_migrate)

    demo = sub.add_parser("demo", help="load realistic demo data")
    demo.add_argument("--spans", type=int, default=100_000)
    demo.add_argument("--days", type=float, default=30)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--end", help="ISO time the data ends at (default: now)")
    demo.set_defaults(func=cmd_demo)

    boot = sub.add_parser("bootstrap", help="first-run set-up (migrate, secrets, demo, admin)")
    boot.add_argument("--demo-spans", type=int, default=120_000, help="0 to skip demo data")
    boot.add_argument("--days", type=float, default=30)
    boot.add_argument("--seed", type=int, default=7)
    boot.set_defaults(func=cmd_bootstrap)

    sub.add_parser("worker", help="run the background worker").set_defaults(func=cmd_worker)

    user = sub.add_parser("user", help="add users, change passwords, list users")
    user_sub = user.add_subparsers(dest="action", required=True)
    add = user_sub.add_parser("add")
    add.add_argument("username")
    add.add_argument("--org", required=True, help="org slug, e.g. acme")
    add.add_argument("--role", required=True, help="admin, developer, viewer or billing")
    add.add_argument("--name")
    add.add_argument("--email")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    passwd = user_sub.add_parser("passwd")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    user_sub.add_parser("list")
    role = user_sub.add_parser("role", help="give a user another role")
    role.add_argument("username")
    role.add_argument("role", help="admin, developer, viewer or billing")
    for action, text in (
        ("disable", "disable a user (their sessions end at once)"),
        ("enable", "enable a disabled user"),
        ("unlock", "lift a log-in lock after too many failed attempts"),
    ):
        user_sub.add_parser(action, help=text).add_argument("username")
    user.set_defaults(func=cmd_user)

    trail = sub.add_parser("audit", help="print audit entries (every org, or one)")
    trail.add_argument(
        "--org", help="org slug; default: every org, and failed log-ins of unknown users"
    )
    trail.add_argument("--action", help="e.g. login.failed, key.revoke")
    trail.add_argument("--limit", type=int, default=100)
    trail.set_defaults(func=cmd_audit)

    rollups = sub.add_parser("rollups", help="rebuild the metric rollups from the spans")
    rollups.add_argument("action", choices=["rebuild"])
    rollups.add_argument("--org", help="only this org (slug); default: every org")
    rollups.set_defaults(func=cmd_rollups)

    remap = sub.add_parser(
        "remap", help="fill span fields from their kept attributes after a mapping improved"
    )
    remap.add_argument("--org", help="only this org (slug); default: every org")
    remap.add_argument("--since", help="only spans started at or after this date (ISO 8601)")
    remap.set_defaults(func=cmd_remap)

    budget = sub.add_parser("budget", help="set an org's monthly cost budget")
    budget.add_argument("--org", required=True, help="org slug, e.g. acme")
    budget.add_argument("--usd", type=float, required=True, help="US dollars per month")
    budget.set_defaults(func=cmd_budget)

    imp = sub.add_parser("import", help="import an OTLP/JSON file or one of our exports")
    imp.add_argument("file", help=".json/.jsonl (OTLP or export), .csv, .parquet; .gz allowed")
    imp.add_argument("--org", required=True, help="org slug, e.g. acme")
    imp.add_argument("--project", default="default", help="project slug (created if missing)")
    imp.set_defaults(func=cmd_import)

    keys = sub.add_parser("keys", help="create, list or revoke an org's API keys")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("--org", required=True, help="org slug, e.g. acme")
    keys.add_argument("--name", help="what the key is for (create)")
    keys.add_argument("--scopes", default="ingest", help="ingest, read or ingest,read (create)")
    keys.add_argument("--role", default="developer", help="what a read key acts as (create)")
    keys.add_argument("--id", type=int, help="key id (revoke)")
    keys.set_defaults(func=cmd_keys)

    prices = sub.add_parser("prices", help="set or list an org's own model prices")
    prices.add_argument("action", choices=["set", "list"])
    prices.add_argument("--org", required=True, help="org slug, e.g. acme")
    prices.add_argument("--provider", help="e.g. openai (set)")
    prices.add_argument("--model", help="the model name as spans report it, e.g. gpt-4o (set)")
    prices.add_argument("--input", type=float, help="USD per million input tokens (set)")
    prices.add_argument("--output", type=float, help="USD per million output tokens (set)")
    prices.add_argument("--since", help="effective from this date (ISO 8601); default now (set)")
    prices.set_defaults(func=cmd_prices)

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

    span_store_commands.add_commands(sub, _engine)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except BrokenPipeError:
        # The reader stopped early (`keys create | head -1`): the work is done; what it did not
        # read goes nowhere instead of ending in a traceback (Python's documented remedy).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:  # e.g. a SQLite file locked in the middle of a load
        from observatory_core.base.settings import get_settings
        from observatory_core.storage.engine import describe_failure, parse_database_url

        url = parse_database_url(get_settings().database_url)
        print(f"error: {describe_failure(url, exc)}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
