"""An org's settings kept by admins: its monthly `budget`, API `keys`, its own model `prices`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from observatory_core.base.errors import UserError
from observatory_core.cli.common import open_engine, parse_since


def cmd_budget(args) -> None:
    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.scope import Scope
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.reports.overview import set_budget

    engine = open_engine()
    with engine.connect() as conn:
        org_id = org_id_by_slug(conn, args.org)
    set_budget(engine, Scope(org_id=org_id, role=Role.ADMIN, username="cli"), args.usd)
    print(f"Monthly budget of {args.org} set to ${args.usd:,.2f}.")


def cmd_keys(args) -> None:
    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.scope import Scope
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.ingest.apikeys import create_key, list_keys, revoke_key

    engine = open_engine()
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


def cmd_prices(args) -> None:
    from observatory_core.accounts.tenancy import org_id_by_slug
    from observatory_core.ingest.pricing import list_org_prices, set_org_price

    engine = open_engine()
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
            since = parse_since(args.since) if args.since else datetime.now(UTC)
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


def add_budget(sub: argparse._SubParsersAction) -> None:
    budget = sub.add_parser("budget", help="set an org's monthly cost budget")
    budget.add_argument("--org", required=True, help="org slug, e.g. acme")
    budget.add_argument("--usd", type=float, required=True, help="US dollars per month")
    budget.set_defaults(func=cmd_budget)


def add_keys(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="create, list or revoke an org's API keys")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("--org", required=True, help="org slug, e.g. acme")
    keys.add_argument("--name", help="what the key is for (create)")
    keys.add_argument("--scopes", default="ingest", help="ingest, read or ingest,read (create)")
    keys.add_argument("--role", default="developer", help="what a read key acts as (create)")
    keys.add_argument("--id", type=int, help="key id (revoke)")
    keys.set_defaults(func=cmd_keys)


def add_prices(sub: argparse._SubParsersAction) -> None:
    prices = sub.add_parser("prices", help="set or list an org's own model prices")
    prices.add_argument("action", choices=["set", "list"])
    prices.add_argument("--org", required=True, help="org slug, e.g. acme")
    prices.add_argument("--provider", help="e.g. openai (set)")
    prices.add_argument("--model", help="the model name as spans report it, e.g. gpt-4o (set)")
    prices.add_argument("--input", type=float, help="USD per million input tokens (set)")
    prices.add_argument("--output", type=float, help="USD per million output tokens (set)")
    prices.add_argument("--since", help="effective from this date (ISO 8601); default now (set)")
    prices.set_defaults(func=cmd_prices)
