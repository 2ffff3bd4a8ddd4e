"""Users (`user`: add, passwords, roles, disable, unlock) and the audit trail of what they
did (`audit`)."""

from __future__ import annotations

import argparse
import sys

from observatory_core.cli.common import open_engine


def cmd_user(args) -> None:
    from observatory_core.accounts import users

    engine = open_engine()
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

    engine = open_engine()
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


def add_user(sub: argparse._SubParsersAction) -> None:
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


def add_audit(sub: argparse._SubParsersAction) -> None:
    trail = sub.add_parser("audit", help="print audit entries (every org, or one)")
    trail.add_argument(
        "--org", help="org slug; default: every org, and failed log-ins of unknown users"
    )
    trail.add_argument("--action", help="e.g. login.failed, key.revoke")
    trail.add_argument("--limit", type=int, default=100)
    trail.set_defaults(func=cmd_audit)
