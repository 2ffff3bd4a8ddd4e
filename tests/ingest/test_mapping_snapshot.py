"""The rows the receiver maps from a fixed corpus (tests/ingest/mapping_corpus.py) are the ones
recorded in data/mapping_snapshot.json: a change meant to make the mapping faster, not
different, keeps every row byte for byte (repr: values, their types and the keys' order), every
rejection and its reason. A change of a rule re-records it on purpose:
`PYTHONPATH=. .venv/bin/python -m tests.ingest.test_mapping_snapshot`."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from observatory_core.ingest import conventions as cv
from observatory_core.ingest import spanrows
from observatory_core.ingest.apikeys import KeyInfo
from observatory_core.ingest.mapping import FREE_TEXT, Rejected, Resource, map_span
from observatory_core.ingest.otlp import parse_request
from observatory_core.ingest.pricing import PriceBook, set_org_price
from observatory_core.ingest.receiver import Receiver
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import spans
from tests.helpers import make_org
from tests.ingest.mapping_corpus import NOW, PRICED_MODEL, PROJECT, corpus

SNAPSHOT = Path(__file__).resolve().parent / "data" / "mapping_snapshot.json"


def mapped(folder: Path) -> dict[str, dict]:
    """Per case: how many rows, a digest of their reprs, the rejections and their reasons."""
    engine = get_engine(f"sqlite:///{folder / 'snapshot.db'}")
    upgrade(engine)
    org_id, _ = make_org(engine, "acme", (PROJECT,))
    with engine.begin() as conn:
        set_org_price(conn, org_id, *PRICED_MODEL, 1.25, 5.0, NOW.replace(year=2024))
    key = KeyInfo(id=0, org_id=org_id, project_id=None, scopes=frozenset({"ingest"}))
    receiver = Receiver(engine)
    out = {}
    for name, body, kind in corpus():
        decoded = receiver.map_request(parse_request(body, kind), key, kind, NOW)
        out[name] = {
            "rows": len(decoded.rows),
            "digest": hashlib.sha256(repr(decoded.rows).encode()).hexdigest(),
            "rejected": decoded.rejected,
            "reasons": decoded.reasons,
        }
    engine.dispose()
    return out


def test_the_corpus_maps_to_the_recorded_rows(tmp_path):
    recorded = json.loads(SNAPSHOT.read_text())
    now = mapped(tmp_path)
    assert sum(case["rows"] for case in now.values()) > 3000  # the corpus is not empty
    assert sum(case["rejected"] for case in now.values()) > 50
    assert now.keys() == recorded.keys()
    changed = [name for name in now if now[name] != recorded[name]]
    assert not changed, f"rows differ from the recorded ones in {changed[:10]}"


def _mapped_spans() -> Iterator[dict]:
    """The mapping's row of every span of the corpus it does not refuse, before `complete_row`."""
    for _, body, kind in corpus():
        for resource_spans in parse_request(body, kind).request.resource_spans:
            resource = Resource.of(resource_spans.resource)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    try:
                        row = map_span(
                            span,
                            resource,
                            scope_spans.scope.name,
                            org_id=1,
                            project_id=1,
                            prices=PriceBook({}),
                            now=NOW,
                        )
                    except (Rejected, RecursionError):
                        continue
                    yield row


def test_only_the_free_text_columns_of_a_mapped_row_need_checking():
    """The receiver checks length and NUL on `FREE_TEXT` only: on every span of the corpus that
    gives the row checking every column gives, so no other column holds what a sender wrote."""
    checked = 0
    for row in _mapped_spans():
        every = spanrows.complete_row(row, 300)  # short: the text cut is exercised
        assert repr(spanrows.complete_row(row, 300, FREE_TEXT)) == repr(every)
        checked += 1
    assert checked > 3000


def test_the_defaults_fit_their_columns_and_hold_no_nul():
    """complete_row checks a row's own values only: the defaults it adds must need nothing."""
    for name, value in spanrows._DEFAULTS.items():
        if isinstance(value, str):
            assert len(value) <= spanrows._TEXT_LIMITS[name] and spanrows.NUL not in value


def test_each_attribute_name_gives_one_field():
    """`cv.fields_in` keeps one field per name; a name in two tables would lose one."""
    names = [name for _, table in cv.CONVENTIONS for name in table]
    assert len(names) == len(set(names)) == len(cv.FIELD_OF)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        SNAPSHOT.write_text(json.dumps(mapped(Path(folder)), indent=1, ensure_ascii=True) + "\n")
    print(f"recorded {SNAPSHOT}", file=sys.stderr)


# The text columns the mapping makes itself (hex ids, its own words), never a sender's text.
MADE_HERE = {"trace_id", "span_id", "parent_span_id", "operation", "status", "cost_source"}


def test_every_text_column_of_a_mapped_row_is_checked_or_made_here():
    """`FREE_TEXT` fails open: a new column of a sender's text left out of it would skip its NUL
    and length checks (PostgreSQL then refuses the row). Every text value a mapped row holds is
    in a column of one list or the other."""
    text_columns = {c.name for c in spans.columns if c.type.python_type is str}
    seen: set[str] = set()
    for row in _mapped_spans():
        seen |= {k for k, v in row.items() if isinstance(v, str) and k in text_columns}
    assert seen - set(FREE_TEXT) - MADE_HERE == set()
    assert {"name", "model", "input_text", "trace_id"} <= seen  # the corpus reached them
