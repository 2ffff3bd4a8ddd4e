"""The OTLP/HTTP receiver without the web framework: bytes and headers in, an answer out.

The HTTP route only reads the body and awaits the write; everything that decides a status
code lives here, so it is tested directly and through the real server alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from observatory_core.accounts.tenancy import ensure_project
from observatory_core.base import prometheus
from observatory_core.ingest.apikeys import BadKey, KeyInfo, key_from_headers, verify_key
from observatory_core.ingest.mapping import FREE_TEXT, Rejected, Resource, map_span
from observatory_core.ingest.otlp import (
    JSON,
    BadPayload,
    Parsed,
    encode_response,
    encode_status,
    inflate,
    media_type,
    parse_request,
    span_label,
)
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import complete_row
from observatory_core.storage.schema import projects

# Prices and project ids change rarely; reading them once a minute keeps requests cheap.
CACHE_SECONDS = 60.0
# An exporter sends the same resource in every request (and some one span per request): its
# reading is kept by its bytes, for small resources and a bounded number of them.
RESOURCE_CACHE_BYTES = 4096
RESOURCE_CACHE_SIZE = 256
DEFAULT_PROJECT = "default"
MAX_REASONS = 3
UNMAPPED = "could not be read (an error of ours, logged); the other spans were stored."
log = logging.getLogger("observatory.ingest")


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Decoded:
    """A request turned into rows: what to store, and what was rejected and why."""

    kind: str
    rows: list[dict[str, Any]]
    org_id: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, count: int, reason: str) -> None:
        self.rejected += count
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    def refused_by_database(self, refused: list[tuple[dict[str, Any], str]]) -> None:
        """Rows the writer could not store: rejected like the ones the mapping refused."""
        for row, why in refused:
            label = span_label(row.get("name"), row.get("span_id"))
            self.reject(1, f"{label}: the database refused it: {why}")

    def answer(self) -> Answer:
        message = ""
        if self.rejected:
            message = f"{self.rejected} span(s) rejected: " + "; ".join(self.reasons)
        return Answer(200, encode_response(self.kind, self.rejected, message), self.kind)


def error_answer(kind: str, status: int, message: str, retry_after: int | None = None) -> Answer:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return Answer(status, encode_status(kind, message), kind, headers)


class Receiver:
    def __init__(
        self,
        engine: Engine,
        *,
        max_body_bytes: int = 16 * 2**20,
        max_inflated_bytes: int = 64 * 2**20,
        text_max_chars: int = 16_000,
    ) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        self.max_inflated_bytes = max_inflated_bytes
        self.text_max_chars = text_max_chars
        self._prices: tuple[float, PriceBook] | None = None
        self._projects: dict[tuple[int, str], tuple[float, int | None]] = {}
        self._resources: dict[bytes, Resource] = {}

    def prices(self) -> PriceBook:
        if self._prices is None or time.monotonic() - self._prices[0] > CACHE_SECONDS:
            with self.engine.connect() as conn:
                self._prices = (time.monotonic(), PriceBook.load(conn))
        return self._prices[1]

    def project_id(self, key: KeyInfo, slug: str | None) -> int:
        """The key's project, else the one the resource names, else the org's default project."""
        if key.project_id is not None:
            return key.project_id
        slug = slug or DEFAULT_PROJECT
        cached = self._projects.get((key.org_id, slug))
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS and cached[1] is not None:
            return cached[1]
        with self.engine.begin() as conn:
            if slug == DEFAULT_PROJECT:
                found = ensure_project(conn, key.org_id, DEFAULT_PROJECT, "Default")
            else:
                found = conn.execute(
                    select(projects.c.id).where(
                        projects.c.org_id == key.org_id, projects.c.slug == slug
                    )
                ).scalar()
        if found is None:
            raise Rejected(
                f"project {slug!r} (resource attribute observatory.project) does not exist in "
                "your org; create it or use a key bound to a project."
            )
        self._projects[(key.org_id, slug)] = (time.monotonic(), found)
        return found

    def resource(self, message) -> Resource:
        """`Resource.of(message)`, read once for the same resource bytes."""
        raw = message.SerializeToString(deterministic=True)
        if len(raw) > RESOURCE_CACHE_BYTES:
            return Resource.of(message)
        found = self._resources.get(raw)
        if found is None:
            if len(self._resources) >= RESOURCE_CACHE_SIZE:
                self._resources.clear()
            found = self._resources[raw] = Resource.of(message)
        return found

    def decode(
        self,
        body: bytes,
        headers: Any,
        now: datetime | None = None,
    ) -> Decoded:
        """Authenticate, decode and map; raises `BadKey` or `BadPayload`."""
        kind = media_type(headers.get("content-type"))
        if len(body) > self.max_body_bytes:
            raise BadPayload(413, self.too_large_message())
        key = verify_key(self.engine, key_from_headers(headers), "ingest")
        parsed = parse_request(
            inflate(body, headers.get("content-encoding"), self.max_inflated_bytes), kind
        )
        return self.map_request(parsed, key, kind, now or datetime.now(UTC))

    def too_large_message(self) -> str:
        return (
            f"The body is over {self.max_body_bytes // 2**20} MiB; lower the exporter's batch "
            "size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)."
        )

    def map_request(self, parsed: Parsed, key: KeyInfo, kind: str, now: datetime) -> Decoded:
        """Rows for every span that can be stored; the others rejected, each with its reason
        (starting with those the parser could not read)."""
        decoded = Decoded(kind, [], key.org_id)
        decoded.rejected, decoded.reasons = parsed.rejected, parsed.reasons[:MAX_REASONS]
        prices = self.prices()
        for r_index, resource_spans in enumerate(parsed.request.resource_spans):
            resource = self.resource(resource_spans.resource)
            try:
                project_id = self.project_id(key, resource.project)
            except Rejected as exc:
                count = sum(len(s.spans) for s in resource_spans.scope_spans)
                decoded.reject(count, f"resource {r_index}: {exc}")
                continue
            for scope_spans in resource_spans.scope_spans:
                scope_name = scope_spans.scope.name
                for span in scope_spans.spans:
                    try:
                        row = map_span(
                            span,
                            resource,
                            scope_name,
                            org_id=key.org_id,
                            project_id=project_id,
                            prices=prices,
                            now=now,
                        )
                        row = complete_row(row, self.text_max_chars, FREE_TEXT)
                    except (Rejected, RecursionError) as exc:
                        why = exc if isinstance(exc, Rejected) else "values nested too deeply."
                        decoded.reject(1, f"{span_label(span.name, span.span_id)}: {why}")
                        continue
                    except Exception:  # a fault of ours on an odd span costs that span alone
                        log.exception("mapping a span failed")
                        decoded.reject(1, f"{span_label(span.name, span.span_id)}: {UNMAPPED}")
                        continue
                    decoded.rows.append(row)
        prometheus.ingest_decoded(len(decoded.rows), decoded.rejected)
        return decoded


def refuse(exc: Exception, kind: str) -> Answer:
    """The answer for a request that stored nothing."""
    if isinstance(exc, BadKey):
        return error_answer(kind, 401, str(exc))
    if isinstance(exc, BadPayload):
        return error_answer(kind, exc.status, exc.message)
    raise exc
