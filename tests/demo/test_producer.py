"""The demo's rows made in a child process (`demo/producer.py`) are the generator's, in its
order, across many hand-over files; a child that fails is reported, not waited on."""

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
