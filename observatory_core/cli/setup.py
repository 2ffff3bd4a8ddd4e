"""Setting up and running: `migrate`, `demo`, `bootstrap` (first run), `worker`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from observatory_core.cli.common import open_engine


def _progress(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, unit="span", unit_scale=True, desc="Loading demo data")
    return bar, (lambda seen, _new: bar.update(seen))


def cmd_migrate(_args) -> None:
    from observatory_core.rollups.upgrade import upgrade
    from observatory_core.storage.migrate import current_revision

    engine = open_engine()
    upgrade(engine)
    print(f"Database is at schema revision {current_revision(engine)}.")


def cmd_demo(args) -> None:
    from observatory_core.base.settings import get_settings
    from observatory_core.demo.load import load_demo
    from observatory_core.rollups.upgrade import upgrade

    engine = open_engine()
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

    engine = open_engine()
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


def cmd_worker(_args) -> None:
    from observatory_core.base.settings import get_settings
    from observatory_core.rollups.upgrade import upgrade
    from observatory_core.runtime import worker

    engine = open_engine()
    upgrade(engine)
    print("Worker running (exports); stop with Ctrl-C or SIGTERM.", flush=True)
    worker.main(engine, get_settings())


def add_migrate(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("migrate", help="bring the schema up to date").set_defaults(func=cmd_migrate)


def add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="load realistic demo data")
    demo.add_argument("--spans", type=int, default=100_000)
    demo.add_argument("--days", type=float, default=30)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--end", help="ISO time the data ends at (default: now)")
    demo.set_defaults(func=cmd_demo)


def add_bootstrap(sub: argparse._SubParsersAction) -> None:
    boot = sub.add_parser("bootstrap", help="first-run set-up (migrate, secrets, demo, admin)")
    boot.add_argument("--demo-spans", type=int, default=120_000, help="0 to skip demo data")
    boot.add_argument("--days", type=float, default=30)
    boot.add_argument("--seed", type=int, default=7)
    boot.set_defaults(func=cmd_bootstrap)


def add_worker(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("worker", help="run the background worker").set_defaults(func=cmd_worker)
