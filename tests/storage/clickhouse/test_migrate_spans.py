"""`migrate-spans`: a SQLite or PostgreSQL database's spans copied into the span store, every
span once (ids and totals against polars on the source rows), twins carried as they are, a run
that stopped resumed without counting anything twice, a finished run copying nothing again,
`--check` telling a match from a mismatch, and bad input explained in one line."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import delete, select, update

from observatory_core.__main__ import main
from observatory_core.base.settings import get_settings
from observatory_core.storage.clickhouse import migrate_spans as mig
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import spans
from tests.conftest import PG_ADMIN_URL, pg_admin
from tests.helpers import all_spans, load_small_demo, span, write

SPANS = 800  # several pages per org at BATCH, twins among them; more adds time, not checks
BATCH = 250


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def source(request, tmp_path_factory, chdb_session):
    """A source database of each kind with demo spans (some set aside as twins), loaded once,
    and the targets' databases in the session's chDB folder (one per test)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('source') / 'source.db'}"
        name = None
    else:
        request.getfixturevalue("pg_url")  # fails loudly, with the fix, if PostgreSQL is down
        name = f"obs_migrate_{uuid.uuid4().hex[:10]}"
        pg_admin(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    load_small_demo(engine, spans_count=SPANS, days=3, seed=31)
    with engine.begin() as conn:  # twins, as ingest/dedup.py sets them aside
        conn.execute(
            update(spans)
            .where(spans.c.id % 37 == 0)
            .values(duplicate_of=spans.c.span_id, duplicate_trace_id=spans.c.trace_id)
        )
    prefix = chdb_session.fresh_name(request.param)
    made: dict[str, str] = {}

    def target(database: str) -> str:
        """A target's URL, its schema made (`chdb_session.store`, quicker than every
        migration): but the command's own targets, whose database it makes itself."""
        if database in ("by_cli", "empty"):
            return chdb_session.url(f"{prefix}_{database}")
        if database not in made:
            store = chdb_session.store(f"{prefix}_{database}")
            made[database] = chdb_session.url(store.database)
            store.close()
        return made[database]

    yield {"url": url, "engine": engine, "df": all_spans(engine), "target": target}
    engine.dispose()
    if name is not None:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _target(source, database: str) -> str:
    return source["target"](database)


def _stored(store) -> pl.DataFrame:
    result = store.client.query(
        "SELECT org_id, trace_id, span_id, total_tokens, total_cost_usd, duplicate_of, "
        f"duplicate_trace_id FROM {store.table('spans')}"
    )
    return pl.DataFrame(
        result.result_rows, schema=list(result.column_names), orient="row", infer_schema_length=None
    )


def _counted_in_rollups(store) -> dict[int, int]:
    rows = store.client.query(
        f"SELECT org_id, sum(span_count) FROM {store.table('rollup_1min')} GROUP BY org_id"
    ).result_rows
    return {int(org): int(n) for org, n in rows}


def _per_org(df: pl.DataFrame) -> dict[int, tuple[int, int, float]]:
    grouped = df.group_by("org_id").agg(
        pl.len().alias("n"), pl.col("total_tokens").sum(), pl.col("total_cost_usd").sum()
    )
    return {
        r["org_id"]: (r["n"], r["total_tokens"], r["total_cost_usd"]) for r in grouped.to_dicts()
    }


def _migrate(source, database: str, **kw) -> mig.MigrateReport:
    store = open_span_store(_target(source, database))
    try:
        orgs = list(mig.source_orgs(source["engine"]))
        return mig.migrate_spans(source["engine"], store, org_ids=orgs, batch=BATCH, **kw)
    finally:
        store.close()


def _assert_same_as_source(source, store) -> None:
    df, got = source["df"], _stored(store)
    assert got.height == df.height  # no span written twice
    ids = lambda frame: set(frame.select("org_id", "trace_id", "span_id").iter_rows())  # noqa: E731
    assert ids(got) == ids(df)
    want, have = _per_org(df), _per_org(got)
    assert want.keys() == have.keys()
    for org, (n, tokens, cost) in want.items():
        assert have[org][:2] == (n, tokens)
        assert have[org][2] == pytest.approx(cost, rel=1e-9)
    # twins carried as they are, and left out of the figures the views fill
    twins = lambda frame: set(  # noqa: E731
        frame.filter(pl.col("duplicate_of").is_not_null())
        .select("span_id", "duplicate_of", "duplicate_trace_id")
        .iter_rows()
    )
    assert twins(df) and twins(got) == twins(df)
    counted = df.filter(pl.col("duplicate_of").is_null()).group_by("org_id").len()
    assert _counted_in_rollups(store) == dict(counted.iter_rows())
    # the JSON columns and the tags read back as the source holds them
    with source["engine"].connect() as conn:
        want = {
            (r.org_id, r.span_id): (r.tags, r.metadata, r.attributes)
            for r in conn.execute(
                select(
                    spans.c.org_id,
                    spans.c.span_id,
                    spans.c.tags,
                    spans.c.metadata,
                    spans.c.attributes,
                )
            )
        }
    have = {
        (org, span_id): (list(tags), json.loads(metadata), json.loads(attributes))
        for org, span_id, tags, metadata, attributes in store.client.query(
            f"SELECT org_id, span_id, tags, metadata, attributes FROM {store.table('spans')}"
        ).result_rows
    }
    assert have == want


def test_every_span_is_copied_once_with_its_twins_and_a_rerun_copies_nothing(source):
    first = _migrate(source, "full")
    assert (first.copied, first.skipped) == (source["df"].height, 0)
    again = _migrate(source, "full")
    assert (again.copied, again.skipped) == (0, 0)  # the checkpoints: nothing read again
    store = open_span_store(_target(source, "full"))
    try:
        _assert_same_as_source(source, store)
        points = mig.checkpoints(store, mig.source_name(source["engine"]))
        per_org = source["df"].group_by("org_id").len()
        assert {org: p.copied for org, p in points.items()} == dict(per_org.iter_rows())
    finally:
        store.close()


class Stop(Exception):
    pass


def test_a_run_that_stopped_goes_on_where_it_stopped_counting_nothing_twice(source, monkeypatch):
    real = mig.write_spans
    calls = []

    def failing(store, rows, **kw):
        calls.append(len(rows))
        if len(calls) == 2:  # the second page is written, then the run dies before its checkpoint
            real(store, rows, **kw)
            raise Stop
        return real(store, rows, **kw)

    monkeypatch.setattr(mig, "write_spans", failing)
    with pytest.raises(Stop):
        _migrate(source, "resumed")
    monkeypatch.setattr(mig, "write_spans", real)
    store = open_span_store(_target(source, "resumed"))
    try:
        assert _stored(store).height == 2 * BATCH
        points = mig.checkpoints(store, mig.source_name(source["engine"]))
        assert sum(p.copied for p in points.values()) == BATCH  # the first page only
    finally:
        store.close()

    resumed = _migrate(source, "resumed")
    # the page written but not recorded is read again and found there; the first is not read
    assert (resumed.copied, resumed.skipped) == (source["df"].height - 2 * BATCH, BATCH)
    store = open_span_store(_target(source, "resumed"))
    try:
        _assert_same_as_source(source, store)
    finally:
        store.close()


@pytest.fixture
def cli(source, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", source["url"])
    monkeypatch.delenv("OBSERVATORY_SPAN_STORE", raising=False)
    get_settings.cache_clear()
    yield source
    get_settings.cache_clear()


def test_the_command_copies_with_progress_and_check_tells_match_from_mismatch(cli, capsys):
    url = _target(cli, "by_cli")
    orgs = mig.source_orgs(cli["engine"])
    first = next(iter(orgs.values()))
    # one org only: the check of every org then finds the others missing
    assert main(["migrate-spans", "--to", url, "--org", first, "--batch", "1000"]) == 0
    out, err = capsys.readouterr()
    n_first = cli["df"].filter(pl.col("org_id") == next(iter(orgs))).height
    assert f"Copied {n_first:,} spans to chdb://" in out and "0 skipped as already there" in out
    assert "span/s" in err  # the progress line
    assert main(["migrate-spans", "--to", url, "--check"]) == 1
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert lines[first].endswith("ok")
    assert all(lines[slug].endswith("MISMATCH") for slug in list(orgs.values())[1:])
    assert "Mismatch in" in out

    assert main(["migrate-spans", "--to", url]) == 0
    out = capsys.readouterr().out
    assert f"Copied {cli['df'].height - n_first:,} spans" in out
    assert main(["migrate-spans", "--to", url]) == 0
    assert "Copied 0 spans" in capsys.readouterr().out
    assert main(["migrate-spans", "--to", url, "--check"]) == 0
    out = capsys.readouterr().out
    assert "Every org matches." in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    per_org = _per_org(cli["df"])
    for org_id, slug in orgs.items():
        n, tokens, _ = per_org[org_id]
        assert f"{n:,}" in lines[slug] and f"{tokens:,}" in lines[slug]
        assert out.count(f"{n:,}") >= 2  # source and target side by side


def test_a_span_that_arrives_late_is_found_by_from_start(cli, capsys):
    """A finished run reads past its checkpoints only: a span that reached the source later
    with an earlier start time is seen by --check and copied by --from-start."""
    url = _target(cli, "late")
    assert main(["migrate-spans", "--to", url]) == 0
    df = cli["df"]
    org_id, project_id = df.row(0, named=True)["org_id"], df.row(0, named=True)["project_id"]
    late = span(org_id, project_id, df["start_time"].min() - timedelta(hours=1), total_tokens=7)
    assert write(cli["engine"], [late]) == 1
    try:
        capsys.readouterr()
        assert main(["migrate-spans", "--to", url]) == 0
        assert "Copied 0 spans" in capsys.readouterr().out
        assert main(["migrate-spans", "--to", url, "--check"]) == 1
        capsys.readouterr()
        assert main(["migrate-spans", "--to", url, "--from-start"]) == 0
        out = capsys.readouterr().out
        assert "Copied 1 spans to chdb://" in out
        assert f"{df.height:,} skipped as already there" in out
        assert main(["migrate-spans", "--to", url, "--check"]) == 0
    finally:
        with cli["engine"].begin() as conn:
            conn.execute(delete(spans).where(spans.c.span_id == late["span_id"]))


@pytest.mark.parametrize(
    ("to", "says"),
    [
        (
            "postgresql://u@h/db",
            "error: --to 'postgresql://u@h/db': the scheme 'postgresql' is not",
        ),
        ("chdb://relative/path", "must be absolute"),
        ("clickhouse://u:secret@127.0.0.1:1/obs", "Cannot reach the ClickHouse span store at "),
        ("clickhouse://u:secret@127.0.0.1:1/obs", "and that --to has the right host, port"),
    ],
)
def test_a_bad_target_is_one_sentence(cli, capsys, to, says):
    assert main(["migrate-spans", "--to", to]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and "secret" not in err
    assert len(err.strip().splitlines()) == 1


def test_no_target_and_an_empty_source_are_explained(cli, capsys, tmp_path, monkeypatch):
    assert main(["migrate-spans"]) == 2
    assert "Name the ClickHouse span store to copy into: --to chdb:///" in capsys.readouterr().err
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(get_engine(empty))
    monkeypatch.setenv("DATABASE_URL", empty)
    get_settings.cache_clear()
    assert main(["migrate-spans", "--to", _target(cli, "empty")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: DATABASE_URL holds no spans: there is nothing to copy."
