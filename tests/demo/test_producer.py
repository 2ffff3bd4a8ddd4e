"""The demo's rows made in a child process (`demo/producer.py`) are the generator's, in its
order, across many hand-over files; a child that fails is reported, not waited on."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from observatory_core.base.errors import UserError
from observatory_core.demo import producer
from observatory_core.ingest.pricing import PriceBook
from observatory_core.storage.clickhouse import layout, writes
from observatory_core.storage.clickhouse.writes import JsonText
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
    with pytest.raises(UserError, match="(?s)row generator stopped.*KeyError"):
        _produced(100, seed=9, ids={})  # no ids for the catalog's orgs


KILLED_WRITER = """
import sys
from observatory_core.demo import producer
from observatory_core.ingest.pricing import PriceBook
from tests.demo.test_generator import IDS
from tests.helpers import END

rows = producer.produced_rows(
    ids=IDS, end=END, days=14, seed=9, prices=PriceBook({}), spans=500_000, text_max_chars=100
)
next(rows)
print("reading", flush=True)
sys.stdin.read()  # until killed
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _producers_in(folder: Path) -> list[int]:
    """The producer children whose hand-over folder lies in `folder`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"observatory_core.demo.producer" in cmd and str(folder).encode() in b" ".join(cmd):
                found.append(int(proc.name))
    return found


def test_a_killed_writer_leaves_no_child_and_no_files(tmp_path):
    """A load killed outright (SIGKILL: no clean-up of its own) must not leave the child
    running nor its rows on disk."""
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER],
        cwd=root,
        env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(root)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert writer.stdout.readline().strip() == b"reading"
    children = _producers_in(tmp_path)
    assert len(children) == 1 and list(tmp_path.glob("demo-rows-*"))
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    deadline = time.monotonic() + 60  # a wait for the child to notice, not a speed target
    while time.monotonic() < deadline and (
        _alive(children[0]) or list(tmp_path.glob("demo-rows-*"))
    ):
        time.sleep(0.1)
    left = [p.name for p in tmp_path.glob("demo-rows-*/*")]
    if _alive(children[0]):
        os.kill(children[0], signal.SIGKILL)
    assert not _alive(children[0]), "the child outlived its writer"
    assert left == [], f"the child's files were left: {len(left)}"


def test_rows_with_json_text_insert_the_same_columns(monkeypatch):
    """The child's `metadata` and `attributes` as JSON text (`json_text`) are what the span
    store's insert would have made of the generator's objects: every inserted column equal."""
    monkeypatch.setattr(producer, "CHUNK", 700)
    rows = list(
        producer.produced_rows(
            ids=IDS,
            end=END,
            days=14,
            seed=9,
            prices=PriceBook({}),
            spans=3000,
            text_max_chars=16_000,
            json_text=True,
        )
    )
    generated = generate(3000, seed=9)
    assert all(isinstance(r[n], JsonText) for r in rows for n in producer.JSON_COLUMNS)
    assert [json.loads(r["metadata"]) for r in rows] == [r["metadata"] for r in generated]
    names, retain = layout.span_column_names(), writes.retainer({})
    assert writes.as_columns(rows, names, 1, retain) == writes.as_columns(
        generated, names, 1, retain
    )


def test_equal_objects_of_other_types_get_their_own_text():
    """1, 1.0 and True are equal dict keys but three JSON texts; nested values are encoded
    alone; a repeated object's text is the same one."""
    values = [{"a": 1}, {"a": 1.0}, {"a": True}, {"a": [1]}, {"a": {"b": None}}, {"a": 1}, {}]
    rows = [{"metadata": v, "attributes": {"k": "x"}} for v in values]
    out = list(producer.with_json_text([dict(r) for r in rows]))
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    assert [r["metadata"] for r in out] == [encode(v) for v in values]
    assert out[0]["metadata"] is out[5]["metadata"]
    assert out[0]["attributes"] is out[1]["attributes"]
