"""The Users and Sessions views' reads (issue 20, part 4) on demo data of `--size` spans.

A database of its own (so a parallel run of the main case is not disturbed), built as the
main case builds its own (`--days 30 --seed 7`), then: the first page of users and of sessions
over the last 24 hours, 7 days and 30 days (their default sorts, and by cost), with a search,
and one session opened as a conversation. Prints one JSON list of result entries.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

from bench.case import END, analyse, demo_org_and_size, fresh_url, timed_entries
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.demo.load import load_demo
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.traces.sessions import get_session, list_sessions
from observatory_core.traces.users import list_users

RUNS = 7


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("sqlite", "postgresql"), required=True)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    engine = get_engine(fresh_url(args.db, args.size, "bench/data", "bench_people"))
    upgrade(engine)
    load_demo(engine, spans=args.size, days=30, seed=7, end=END)
    analyse(engine, args.db)
    org_id, size = demo_org_and_size(engine)
    scope = Scope(org_id, Role.ADMIN, username="bench")

    def window(days: float) -> FilterSpec:
        return FilterSpec(relative=None, start=END - timedelta(days=days), end=END)

    busiest = list_users(engine, scope, window(30), limit=1).rows[0]["user_id"]
    session_id = list_sessions(engine, scope, window(1), sort="trace_count", limit=1).rows[0][
        "session_id"
    ]
    cases = {
        "people_users_24h": lambda: list_users(engine, scope, window(1)),
        "people_users_7d": lambda: list_users(engine, scope, window(7)),
        "people_users_30d": lambda: list_users(engine, scope, window(30)),
        "people_users_30d_by_cost": lambda: list_users(
            engine, scope, window(30), sort="total_cost_usd"
        ),
        "people_users_30d_search": lambda: list_users(
            engine, scope, window(30), id_contains=busiest.split("@")[0]
        ),
        "people_sessions_24h": lambda: list_sessions(engine, scope, window(1)),
        "people_sessions_7d": lambda: list_sessions(engine, scope, window(7)),
        "people_sessions_30d": lambda: list_sessions(engine, scope, window(30)),
        "people_sessions_30d_by_cost": lambda: list_sessions(
            engine, scope, window(30), sort="total_cost_usd"
        ),
        "people_open_session": lambda: get_session(engine, scope, session_id),
    }
    entries = timed_entries(cases, args.db, size, RUNS)
    engine.dispose()
    print(json.dumps(entries))


if __name__ == "__main__":
    main()
