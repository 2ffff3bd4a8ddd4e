"""Loads demo data: creates the demo orgs and projects, then streams generated spans in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from observatory_core.accounts.tenancy import ensure_org, ensure_project
from observatory_core.demo.catalog import ORGS
from observatory_core.demo.generator import DemoGenerator
from observatory_core.ingest.persist import write_spans
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import complete_row


@dataclass(frozen=True)
class LoadReport:
    spans: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.spans / self.seconds if self.seconds else 0.0


def ensure_demo_tenants(engine: Engine) -> dict[tuple[str, str], tuple[int, int]]:
    ids: dict[tuple[str, str], tuple[int, int]] = {}
    with engine.begin() as conn:
        for org in ORGS:
            org_id = ensure_org(conn, org.slug, org.name)
            for project in org.projects:
                ids[(org.slug, project.slug)] = (
                    org_id,
                    ensure_project(conn, org_id, project.slug, project.name),
                )
    return ids


def load_demo(
    engine: Engine,
    *,
    spans: int,
    days: float,
    seed: int,
    end: datetime | None = None,
    text_max_chars: int = 16_000,
    on_batch: Callable[[int, int], None] | None = None,
) -> LoadReport:
    """Generate about `spans` spans (whole traces) over `days` days ending at `end` and store them."""
    import time

    ids = ensure_demo_tenants(engine)
    with engine.connect() as conn:
        prices = PriceBook.load(conn)
    generator = DemoGenerator(
        ids=ids, end=end or datetime.now(UTC), days=days, seed=seed, prices=prices
    )
    started = time.perf_counter()
    rows = (complete_row(r, text_max_chars) for r in generator.spans(spans))
    written = write_spans(engine, rows, on_batch=on_batch)
    return LoadReport(spans=written, seconds=time.perf_counter() - started)
