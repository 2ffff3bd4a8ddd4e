"""Command line: `python -m observatory_core <command>`. Errors print one line, never a traceback.

The commands live in `cli/`, a module per kind of work; here they are put together in the order
`--help` lists them."""

from __future__ import annotations

import argparse
import os
import sys

from sqlalchemy.exc import OperationalError

from observatory_core.base.errors import UserError
from observatory_core.cli import org_settings, retention, setup, span_data, span_store, users
from observatory_core.cli.common import open_engine


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m observatory_core")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        setup.add_migrate,
        setup.add_demo,
        setup.add_bootstrap,
        setup.add_worker,
        users.add_user,
        users.add_audit,
        span_data.add_rollups,
        span_data.add_remap,
        org_settings.add_budget,
        span_data.add_import,
        org_settings.add_keys,
        org_settings.add_prices,
        retention.add_retention,
    ):
        add(sub)
    span_store.add_commands(sub, open_engine)
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
