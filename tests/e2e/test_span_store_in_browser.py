"""The app on the ClickHouse span store reads as it does on SQLite (issue 17: "every span
feature works on it, unchanged for the user"), checked where a person reads it.

The same demo (the CLI's: spans, the starter rules replayed, the starter dashboards) is loaded
into two deployments: spans in SQLite, and spans in a chDB span store beside a SQLite
`DATABASE_URL`. Both servers run side by side; every page is opened on one, then on the other,
over the same fixed window (a relative one would move between the two reads), and what each
shows must be the same: the tiles' text, every table's cells, every chart's series and values
(floats to 1e-9: the stores add costs in another order). No page may show a traceback.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from observatory_core.accounts.users import add_user
from observatory_core.storage.engine import get_engine
from tests.e2e.conftest import ROOT
from tests.e2e.test_every_page_in_browser import (
    CHARTS,
    GRIDS,
    PATHS,
    READY,
    TITLES,
    _login,
    _settle,
)
from tests.live_server import running_servers

pytestmark = pytest.mark.browser
END = (datetime.now(UTC) - timedelta(minutes=2)).replace(second=0, microsecond=0)
START = (END - timedelta(days=2)).replace(minute=0)
WINDOW = f"start={quote(START.isoformat())}&end={quote(END.isoformat())}"
# The pages' paths over the fixed window (the Overview's 7 days hold the demo's 3 whole).
FIXED = {
    "Metrics": PATHS["Metrics"].replace("relative=24h", WINDOW),
    "What changed": f"{PATHS['What changed']}&{WINDOW}",
    "Cost attribution": f"{PATHS['Cost attribution']}?{WINDOW}",
    "Traces": f"/traces?{WINDOW}",
    "Users": f"/users?{WINDOW}",
    "Sessions": f"/sessions?{WINDOW}",
}
# Every page, and the Traces page's other reads (spans by cost, whole traces by time and by
# their trees' cost, traces by day): (page title, path, what it shows last).
READS = [(title, FIXED.get(title, path), READY[title]) for title, path in PATHS.items()] + [
    ("Traces", f"/traces?sort=total_cost_usd&{WINDOW}", READY["Traces"]),
    ("Traces", f"/traces?mode=traces&{WINDOW}", READY["Traces"]),
    ("Traces", f"/traces?mode=traces&sort=total_cost_usd&{WINDOW}", READY["Traces"]),
    ("Traces", f"/traces?mode=traces&by=day&{WINDOW}", "click a day to list it"),
]
STORES = ("sqlite", "chdb")
# Home's last 24 hours and the live feed's last 15 minutes are windows no link fixes: they move
# on with the clock, so a span at the edge can be in one read and not the other, seconds later;
# read again then (a fixed window reads once).
MOVING = {"Home", "Live"}
# Tables that show when each deployment was set up (its keys' creation), not span figures.
OWN_TIMES = (PATHS["Admin"],)


def _deployments(tmp) -> dict[str, dict]:
    """Both deployments, their demos loaded at once by the CLI (a chDB folder is one process's:
    the server opens it once the loader is gone)."""
    made, loaders = {}, []
    for name, store in (("sqlite", None), ("chdb", f"chdb://{tmp / 'chdb'}")):
        url = f"sqlite:///{tmp / f'{name}.db'}"
        env = {k: v for k, v in os.environ.items() if k != "OBSERVATORY_SPAN_STORE"}
        own = {"OBSERVATORY_SPAN_STORE": store} if store else {}
        command = [sys.executable, "-m", "observatory_core", "demo", "--spans", "6000"]
        command += ["--days", "3", "--seed", "5", "--end", END.isoformat()]
        loader = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**env, "DATABASE_URL": url, **own},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        loaders.append(loader)
        made[name] = {"url": url, "env": own}
    for loader in loaders:
        _, err = loader.communicate(timeout=300)
        assert loader.returncode == 0, err[-2000:]
    for made_one in made.values():
        made_one["passwords"] = {
            "admin": add_user(get_engine(made_one["url"]), "acme", "ui-admin", "admin")
        }
    return made


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stores")
    made = _deployments(tmp)
    urls = [made[n]["url"] for n in STORES]
    with running_servers(urls, tmp, envs=[made[n]["env"] for n in STORES]) as bases:
        yield {n: {**made[n], "base": base} for n, base in zip(STORES, bases, strict=True)}


def _same(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except ValueError:
        return a == b


def _first_differences(cells: list, others: list) -> str:
    """Where two pages' tables part (the headers, then the first differing rows of cells,
    row by row), so a failure names the rows rather than printing both tables whole."""
    if len(cells) != len(others):
        return f"{len(cells)} tables against {len(others)}"
    out = []
    for number, ((h, c), (oh, oc)) in enumerate(zip(cells, others, strict=True)):
        if h != oh:
            out.append(f"table {number}: headers {h} against {oh}")
            continue
        width = max(len(h), 1)
        rows = [c[i : i + width] for i in range(0, len(c), width)]
        other_rows = [oc[i : i + width] for i in range(0, len(oc), width)]
        if len(rows) != len(other_rows):
            out.append(f"table {number}: {len(rows)} rows against {len(other_rows)}")
        parted = [
            f"row {i}: {a} against {b}"
            for i, (a, b) in enumerate(zip(rows, other_rows, strict=False))
            if len(a) != len(b) or not all(map(_same, a, b))
        ]
        out += [f"table {number}, {line}" for line in parted[:3]]
    return "; ".join(out)


def _differences(where: str, left: dict, right: dict) -> list[str]:
    found = []
    if left["tiles"] != right["tiles"]:
        found.append(f"{where}: tiles {left['tiles']} against {right['tiles']}")
    if not where.startswith(OWN_TIMES):
        cells = [(g["headers"], g["cells"]) for g in left["grids"]]
        others = [(g["headers"], g["cells"]) for g in right["grids"]]
        if len(cells) != len(others) or any(
            h != oh or len(c) != len(oc) or not all(map(_same, c, oc))
            for (h, c), (oh, oc) in zip(cells, others, strict=False)
        ):
            found.append(f"{where}: tables differ: {_first_differences(cells, others)}")
    series = [[(t["name"], t["y"]) for t in chart["traces"]] for chart in left["charts"]]
    others = [[(t["name"], t["y"]) for t in chart["traces"]] for chart in right["charts"]]
    flat = [(n, v) for chart in series for n, ys in chart for v in [*ys, f"#{len(ys)}"]]
    other_flat = [(n, v) for chart in others for n, ys in chart for v in [*ys, f"#{len(ys)}"]]
    if len(flat) != len(other_flat) or any(
        n != on or not _same(v, ov) for (n, v), (on, ov) in zip(flat, other_flat, strict=False)
    ):
        found.append(f"{where}: charts {series} against {others}")
    return found


def _read(page, base: str, title: str, path: str, ready: str) -> dict:
    page.goto(base + path)
    _settle(page, TITLES.get(title, title), ready)
    text = page.locator("body").inner_text()
    assert "Traceback" not in text, f"{path}: {text[:2000]}"
    return {
        "tiles": page.locator('[data-testid="stMetric"]').all_inner_texts(),
        "grids": page.evaluate(GRIDS),
        "charts": page.evaluate(CHARTS),
        "text": text,
    }


def test_every_page_reads_the_same_on_the_span_store(servers, browser):
    pages = {}
    for name, server in servers.items():
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        pages[name] = context.new_page()
        _login(pages[name], server, "admin")
    found = []
    try:
        for title, path, ready in READS:  # each page on both, one just after the other
            for _ in range(3 if title in MOVING else 1):
                left, right = (
                    _read(pages[n], servers[n]["base"], title, path, ready) for n in STORES
                )
                differences = _differences(path, left, right)
                if not differences:
                    break
            found += differences
            if ready == READY["Traces"]:  # a full first page, not two empty ones
                assert "Page 1 · 50 rows" in right["text"], (path, right["text"][:2000])
            if title == "Overview":
                assert any(t.startswith("Requests\n") for t in right["tiles"]), right["tiles"]
    finally:
        for page in pages.values():
            page.context.close()
    assert not found, "\n".join(d[:3000] for d in found)
