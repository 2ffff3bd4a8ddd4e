"""One writer per format. Rows arrive page by page; nothing holds more than one page.

Every writer writes through `HashingFile`, so the SHA-256 and the size are known the moment
the file is closed, without reading it again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from isal import igzip

from observatory_core.semantic.field_lookups import derived
from observatory_core.semantic.fields import FIELDS

FORMATS = ("csv", "json", "jsonl", "parquet")
COMPRESSIONS = ("gzip", "zstd", "snappy", "none")
# Text formats are gzipped as a whole file (.gz); Parquet compresses its pages inside the file,
# with zstd (smallest, fast), snappy (fastest to read) or gzip.
TEXT_COMPRESSIONS = ("gzip", "none")


def compression_problem(fmt: str, compression: str) -> str | None:
    """What is wrong with this pair, or None."""
    if compression not in COMPRESSIONS:
        return f"Compression {compression!r} is not offered; choose {', '.join(COMPRESSIONS)}."
    if fmt != "parquet" and compression not in TEXT_COMPRESSIONS:
        return (
            f"{compression} compresses Parquet files; for {fmt.upper()} choose gzip or none "
            "(or pick the Parquet format)."
        )
    return None


def json_fields() -> frozenset[str]:
    """The fields written as compact JSON text: those declared with the json type."""
    return derived("json", lambda: frozenset(f.name for f in FIELDS.values() if f.type == "json"))


class HashingFile(io.RawIOBase):
    """A binary file that counts and hashes what passes through it."""

    def __init__(self, path: Path) -> None:
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += len(view)
        return self._file.write(view)

    def close(self) -> None:
        if not self.closed:
            self._file.flush()
            import os

            os.fsync(self._file.fileno())
            self._file.close()
        super().close()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return value


def csv_text(value: Any, field: str, jsonish: frozenset[str] | None = None) -> str:
    """The canonical CSV text of a value, identical to what the PostgreSQL COPY path emits:
    ISO timestamps with microseconds, shortest floats without a trailing '.0', true/false,
    compact JSON, and an empty field for null (and for empty text)."""
    if value is None:
        return ""
    if field in (json_fields() if jsonish is None else jsonish):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return str(value)


class BackgroundGzip(io.RawIOBase):
    """gzip on a second thread: ISA-L releases the GIL, so compressing one page overlaps
    with reading the next, as `COPY ... | gzip` overlaps in two processes."""

    def __init__(self, sink: HashingFile) -> None:
        import queue
        import threading

        # ISA-L's gzip (python-isal): a standard .gz at several times zlib's speed; at its
        # level 1 the file is ~7% larger than `gzip -6`, and compressing stops being the
        # export's slowest step.
        self.gz = igzip.IGzipFile(fileobj=sink, mode="wb", compresslevel=1, mtime=0)
        self.queue: queue.Queue = queue.Queue(maxsize=16)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="export-gzip", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.gz.write(chunk)
                except BaseException as exc:  # re-raised in the writing thread
                    self.error = exc

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.error is not None:
            raise self.error
        self.queue.put(bytes(data))
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.queue.put(None)
            self.thread.join()
            if self.error is None:
                self.gz.close()
        super().close()
        if self.error is not None:
            raise self.error


def file_suffix(fmt: str, compression: str) -> str:
    return f".{fmt}" + (".gz" if compression == "gzip" and fmt != "parquet" else "")


class _TextWriter:
    def __init__(self, sink: HashingFile, compression: str, fields: tuple[str, ...]) -> None:
        self.sink = sink
        self.fields = fields
        self.gz = BackgroundGzip(sink) if compression == "gzip" else None
        self.raw: BinaryIO = self.gz if self.gz is not None else sink
        self.text = io.TextIOWrapper(self.raw, encoding="utf-8", newline="", write_through=False)

    def write_bytes(self, data: bytes) -> None:
        """Already-encoded output (the COPY path), in order after what was written before."""
        self.text.flush()
        self.raw.write(data)

    def close(self) -> None:
        self.text.flush()
        self.text.detach()
        if self.gz is not None:
            self.gz.close()
        self.sink.close()


class CsvWriter(_TextWriter):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.csv = csv.writer(self.text, lineterminator="\n")
        self.csv.writerow(self.fields)

    def write_lines(self, lines: list[str]) -> None:
        """Lines already in CSV (the span store's, `exports/span_store_pages.py`), each
        written as `csv.writer` writes a row (one write per line: the same chunks reach gzip,
        so the same .gz bytes)."""
        write = self.text.write
        for line in lines:
            write(line + "\n")

    def write_rows(self, rows: list[dict]) -> None:
        jsonish = json_fields()
        self.csv.writerows([[csv_text(r[f], f, jsonish) for f in self.fields] for r in rows])


class JsonLinesWriter(_TextWriter):
    def write_lines(self, lines: list[str]) -> None:
        """Objects already in JSON (the span store's, `exports/span_store_json.py`), written
        in one write as `write_rows` writes a page (the same chunks reach gzip)."""
        self.text.write("".join(line + "\n" for line in lines))

    def write_rows(self, rows: list[dict]) -> None:
        self.text.write(
            "".join(json.dumps({f: _plain(r[f]) for f in self.fields}) + "\n" for r in rows)
        )


class JsonWriter(_TextWriter):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.text.write("[")
        self.first = True

    def write_rows(self, rows: list[dict]) -> None:
        self.write_lines([json.dumps({f: _plain(r[f]) for f in self.fields}) for r in rows])

    def write_lines(self, lines: list[str]) -> None:
        """Objects already in JSON, one write each (as rows are written)."""
        for line in lines:
            self.text.write(("\n" if self.first else ",\n") + line)
            self.first = False

    def close(self) -> None:
        self.text.write("\n]\n")
        super().close()


def arrow_schema(fields: tuple[str, ...]) -> pa.Schema:
    """Parquet column types from the fields' SQL types, so every page has the same schema."""
    from sqlalchemy import JSON, Boolean, Float, Integer

    from observatory_core.exports.local_times import is_local
    from observatory_core.storage.types import UtcDateTime
    from observatory_core.traces.fields import field_column

    def arrow_type(column):
        kind = column.type
        if isinstance(kind, UtcDateTime):
            return pa.timestamp("us", tz="UTC")
        if isinstance(kind, Boolean):
            return pa.bool_()
        if isinstance(kind, Float):
            return pa.float64()
        if isinstance(kind, Integer):
            return pa.int64()
        if isinstance(kind, JSON):
            return pa.string()
        return pa.string()

    def column_type(f: str):
        return pa.string() if is_local(f) else arrow_type(field_column(f))

    return pa.schema([(f, column_type(f)) for f in fields])


class ParquetWriter:
    """Parquet compresses inside the file: zstd, snappy or gzip pages, or none."""

    def __init__(self, sink: HashingFile, compression: str, fields: tuple[str, ...]) -> None:
        self.sink = sink
        self.fields = fields
        self.schema = arrow_schema(fields)
        self.writer = pq.ParquetWriter(sink, self.schema, compression=compression)

    def write_rows(self, rows: list[dict]) -> None:
        jsonish = json_fields()
        columns = {
            f: [json.dumps(r[f]) if f in jsonish else r[f] for r in rows] for f in self.fields
        }
        self.write_table(pa.table(columns, schema=self.schema))

    def write_table(self, table: pa.Table) -> None:
        """A page already in columns (the span store's, `exports/span_store_parquet.py`)."""
        self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()
        self.sink.close()


def open_writer(fmt: str, compression: str, path: Path, fields: tuple[str, ...]):
    sink = HashingFile(path)
    cls = {
        "csv": CsvWriter,
        "json": JsonWriter,
        "jsonl": JsonLinesWriter,
        "parquet": ParquetWriter,
    }[fmt]
    return cls(sink, compression, fields), sink
