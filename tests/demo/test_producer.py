"""The demo's rows made in a child process (`demo/producer.py`) are the generator's, in its
order, across many hand-over files; a child that fails is reported, not waited on."""

import pytest

from observatory_core.demo import producer
from observatory_core.ingest.pricing import PriceBook
from tests.demo.test_generator import IDS, generate
from tests.helpers import END


def _produced(n: int, seed: int, ids=IDS) -> list[dict]:
    rows = producer.produced_rows(
        ids=ids, end=END, days=14, seed=seed, prices=PriceBook({}), spans=n, text_max_chars=16_000
    )
    return list(rows)


def test_the_childs_rows_are_the_generators(monkeypatch):
    monkeypatch.setattr(producer, "CHUNK", 300)  # 10 files and a short last one
    monkeypatch.setattr(producer, "AHEAD", 2)  # the child waits for the reader
    assert _produced(3000, seed=9) == generate(3000, seed=9)


def test_a_failing_child_is_reported():
    with pytest.raises(RuntimeError, match="(?s)row generator stopped.*KeyError"):
        _produced(100, seed=9, ids={})  # no ids for the catalog's orgs
