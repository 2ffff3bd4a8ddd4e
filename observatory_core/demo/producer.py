"""The demo's rows made in a child process while this one stores them (issue 17's load into
the ClickHouse span store, docs/span-store-internals.md "The demo load").

Generating and completing a row costs about as much as storing it into the span store, and
both are Python, holding one core; the machine has more. So a child process
(`python -m observatory_core.demo.producer`, not a fork of a process running the engine's
threads, nor a re-run of the caller's main module) runs the seeded generator and
`complete_row` and pickles the rows, `CHUNK` at a time, into numbered files of a temporary
folder; this process reads each (and deletes it) when it needs the rows. The child stays at most
`AHEAD` chunks ahead (memory and disk stay bounded whatever the size) and never waits on this
process while it inserts (a pipe would: the engine's insert holds the interpreter). The rows
are the generator's, in its order: same seed, same rows. Given `json_text`, their `metadata`
and `attributes` come as the JSON text the insert would write (`with_json_text`), work taken
off the writer, the busier of the two.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from observatory_core.base.errors import UserError
from observatory_core.demo.collector import LOAD_GC_THRESHOLD
from observatory_core.ingest.pricing import PriceBook
from observatory_core.storage.clickhouse.writes import JsonText

CHUNK = 5_000  # rows per file
AHEAD = 24  # files made ahead of the writer, at most
_POLL = 0.005  # seconds between looks for the next file (or for room to write one)


def _path(folder: Path, n: int) -> Path:
    return folder / f"{n:08d}.pickle"


def demo_rows(
    ids: dict[tuple[str, str], tuple[int, int]],
    *,
    end: datetime,
    days: float,
    seed: int,
    prices: PriceBook,
    spans: int,
    text_max_chars: int,
) -> Iterator[dict[str, Any]]:
    """The complete rows of the demo, made in this process."""
    from observatory_core.demo.generator import DemoGenerator
    from observatory_core.ingest.spanrows import complete_row

    generator = DemoGenerator(ids=ids, end=end, days=days, seed=seed, prices=prices)
    return (complete_row(r, text_max_chars) for r in generator.spans(spans))


JSON_COLUMNS = ("metadata", "attributes")
_CACHED = 4096  # distinct JSON texts kept per column (a trace's spans share their metadata)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _flat_key(value: Any) -> tuple | None:
    """`value`'s items with each value's type (1, 1.0 and True are equal keys, not equal
    texts), when it is an object of strings, numbers, booleans and nulls; else None."""
    if type(value) is not dict:
        return None
    key = []
    for name, item in value.items():
        kind = type(item)
        if kind not in _SCALARS:
            return None
        # repr tells 0.0 from -0.0, equal as keys but not as texts
        key.append((name, kind, repr(item) if kind is float else item))
    return tuple(key)


def with_json_text(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The rows with `metadata` and `attributes` as the JSON text the span store's insert
    would make of them (`writes.JsonText`, written as it is): encoding them took the writer
    about 9 of its microseconds a row, here done beside it. Equal flat objects (a trace's
    spans share their metadata) share one text: one object in a pickled file, read once."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # as writes'
    cache: dict[str, dict[tuple, JsonText]] = {name: {} for name in JSON_COLUMNS}
    for row in rows:
        for name in JSON_COLUMNS:
            value = row[name]
            key = _flat_key(value)
            if key is None:
                row[name] = JsonText(dumps(value))
                continue
            text = cache[name].get(key)
            if text is None:
                if len(cache[name]) >= _CACHED:
                    cache[name].clear()
                text = cache[name][key] = JsonText(dumps(value))
            row[name] = text
        yield row


def _produce(args: dict[str, Any], folder: Path) -> None:
    """The child: `demo_rows`, `CHUNK` a file, then an empty file's list (the end)."""
    rows = demo_rows(
        **{k: args[k] for k in ("ids", "end", "days", "seed", "prices", "spans")},
        text_max_chars=args["text_max_chars"],
    )
    if args.get("json_text"):
        rows = with_json_text(rows)
    made = 0
    # the writer's pid as it gave it: read here with os.getppid(), a writer that died while
    # this child started would be pid 1 and never seen gone
    parent = args["parent"]

    def put(chunk: list[dict[str, Any]]) -> None:
        nonlocal made
        while _path(folder, made - AHEAD).exists():  # the writer is behind: wait for it
            if os.getppid() != parent:  # the writer is gone (killed): no one reads the rows,
                shutil.rmtree(folder, ignore_errors=True)  # nor removes them
                sys.exit(1)
            time.sleep(_POLL)
        part = folder / "part"
        part.write_bytes(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
        part.rename(_path(folder, made))  # whole, or not there
        made += 1

    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == args["chunk"]:
            put(chunk)
            chunk = []
    if chunk:
        put(chunk)
    put([])


def produced_rows(
    *,
    ids: dict[tuple[str, str], tuple[int, int]],
    end: datetime,
    days: float,
    seed: int,
    prices: PriceBook,
    spans: int,
    text_max_chars: int,
    json_text: bool = False,
) -> Iterator[dict[str, Any]]:
    """The complete rows `demo_rows` makes, made in a child process; with `json_text`, their
    `metadata` and `attributes` as the span store's insert writes them (`with_json_text`: for
    a writer that reads neither). Closing the iterator early (a failed write) ends the child."""
    args = {
        "ids": ids,
        "end": end,
        "days": days,
        "seed": seed,
        "prices": prices,
        "spans": spans,
        "text_max_chars": text_max_chars,
        "json_text": json_text,
        "chunk": CHUNK,
        "parent": os.getpid(),
    }
    root = str(Path(__file__).resolve().parents[2])  # where this package is imported from
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    with (
        tempfile.TemporaryDirectory(prefix="demo-rows-") as temp,
        tempfile.TemporaryFile() as errors,
    ):
        folder = Path(temp)
        (folder / "args").write_bytes(pickle.dumps(args))
        child = subprocess.Popen(
            [sys.executable, "-m", "observatory_core.demo.producer", temp],
            stdin=subprocess.DEVNULL,
            stdout=errors,
            stderr=errors,
            env={**os.environ, "PYTHONPATH": path},
            # `-m` puts the working folder first on the path: run from this package's root,
            # so the child imports this code, not a same-named file where the app was started
            cwd=root,
            # a session of its own: where the scheduler shares CPU by session (Linux's
            # autogroup), the child gets a share beside the writer's, not half of it
            start_new_session=True,
        )
        try:
            n = 0
            while True:
                file = _path(folder, n)
                if not file.exists():
                    if child.poll() is not None and not file.exists():
                        errors.seek(0)
                        text = errors.read().decode(errors="replace")[-3000:]
                        raise UserError(
                            f"The demo's row generator stopped (exit code {child.returncode}; "
                            f"is the temporary folder {tempfile.gettempdir()} full?). Its last "
                            f"words:\n{text}"
                        )
                    time.sleep(_POLL)
                    continue
                chunk = pickle.loads(file.read_bytes())
                file.unlink()
                n += 1
                if not chunk:
                    break
                yield from chunk
        finally:
            if child.poll() is None:
                child.kill()  # a write that failed: no rows wanted any more
            child.wait()


if __name__ == "__main__":
    # this process makes rows and nothing else (`demo/collector.py`): the objects made so far
    # are never looked at again, and the collector passes less often
    gc.collect()
    gc.freeze()
    gc.set_threshold(LOAD_GC_THRESHOLD, *gc.get_threshold()[1:])
    _folder = Path(sys.argv[1])
    _produce(pickle.loads((_folder / "args").read_bytes()), _folder)
