"""Builds demo traces: seasonal traffic, power-law users, nested agent spans, incidents.

Everything is drawn from one seeded `random.Random`, so the same seed and end time give the
same rows. Times are computed in integer microseconds and turned into datetimes once.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate

from observatory_core.demo import texts
from observatory_core.demo.catalog import (
    ENVIRONMENTS,
    INCIDENTS,
    MODELS,
    ORDINARY_ERRORS,
    ORGS,
    Incident,
    OrgSpec,
    ProjectSpec,
)
from observatory_core.ingest.pricing import PriceBook
from observatory_core.storage.types import from_micros, to_micros

HOUR_US = 3_600_000_000
FIRST_NAMES = ["ana", "ben", "chen", "dana", "eli", "fatima", "gus", "hana", "ivan", "jo", "kim"]
LAST_NAMES = ["silva", "muller", "wong", "okafor", "rossi", "nakamura", "novak", "haddad", "berg"]
APP_VERSIONS = ["2.3.1", "2.4.0", "2.4.1", "2.5.0"]
EXTRA_TAGS = ["beta", "vip", "mobile", "web", "experiment-a", "experiment-b"]


def _cum(weights) -> list[float]:
    return list(accumulate(weights))


def _pick(rng: random.Random, items, cum: list[float]):
    return items[bisect.bisect_right(cum, rng.random() * cum[-1])]


def customer_ids(org: OrgSpec) -> list[str]:
    """The org's end users, the same list in every process (the live demo traffic uses it too)."""
    rng = random.Random(f"users-{org.slug}")
    return [
        f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}{n}@{org.slug}-customers.example"
        for n in range(org.users)
    ]


# The companies the demo's end users work for: a tag "customer:<company>" on their calls, so
# Cost attribution (issue 19) has something to split; one user in eight has none.
CUSTOMERS = ["northwind", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"]


def customer_of(user: str) -> str | None:
    """The same company for a user in every process, drawn from no shared random stream (the
    rest of the data stays as it was)."""
    n = int.from_bytes(hashlib.blake2s(user.encode(), digest_size=2).digest(), "big")
    return None if n % 8 == 0 else CUSTOMERS[n % len(CUSTOMERS)]


def user_weights(org: OrgSpec) -> list[float]:
    """Cumulative power-law weights over `customer_ids`: a few users make most requests."""
    return _cum(1 / (r + 1) ** 1.1 for r in range(org.users))


def pick_user(rng: random.Random, users: list[str], cum: list[float]) -> str:
    return _pick(rng, users, cum)


def diurnal_weight(moment: datetime) -> float:
    """Traffic shape: business hours peak around 15:00 UTC, quieter weekends."""
    hour = moment.hour + moment.minute / 60
    day = 1.0 if moment.weekday() < 5 else 0.42
    return day * (
        0.18 + math.exp(-(((hour - 15) / 4.2) ** 2)) + 0.35 * math.exp(-(((hour - 9) / 2.5) ** 2))
    )


@dataclass
class _Ctx:
    org_id: int
    project_id: int
    org: OrgSpec
    project: ProjectSpec
    trace_id: str
    environment: str
    user_id: str
    session_id: str
    service: str
    version: str
    tags: list[str]
    region: str


class DemoGenerator:
    def __init__(
        self,
        *,
        ids: dict[tuple[str, str], tuple[int, int]],
        end: datetime,
        days: float,
        seed: int,
        prices: PriceBook,
    ) -> None:
        self.rng = random.Random(seed)
        self.ids = ids
        self.prices = prices
        self.end_us = to_micros(end)
        hours = max(1, int(days * 24))
        self.start_us = self.end_us - hours * HOUR_US
        self.hour_starts = [self.start_us + i * HOUR_US for i in range(hours)]
        trend = [1 + 0.25 * i / hours for i in range(hours)]  # steady growth over the range
        self.hour_cum = _cum(
            diurnal_weight(from_micros(h)) * g for h, g in zip(self.hour_starts, trend, strict=True)
        )
        self.org_cum = _cum(o.weight for o in ORGS)
        self.users = {o.slug: customer_ids(o) for o in ORGS}
        self.user_cum = {o.slug: user_weights(o) for o in ORGS}
        self.project_cum = {o.slug: _cum(p.weight for p in o.projects) for o in ORGS}
        self.model_cum = {
            p.slug: _cum(w for _, w in p.chat_models) for o in ORGS for p in o.projects
        }
        self.env_cum = _cum(w for _, w in ENVIRONMENTS)
        self.err_cum = _cum(w for *_, w in ORDINARY_ERRORS)
        self.incidents = [(i, to_micros(i.start(end))) for i in INCIDENTS]

    # ---- random helpers -------------------------------------------------------------
    def _id(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(self.rng.gauss(0.0, sigma))

    def _incident(self, provider: str, at_us: int) -> Incident | None:
        for inc, start in self.incidents:
            if inc.provider == provider and start <= at_us < start + int(inc.minutes * 60e6):
                return inc
        return None

    # ---- traces ----------------------------------------------------------------------
    def spans(self, count: int) -> Iterator[dict]:
        """Whole traces until at least `count` spans have been produced."""
        made = 0
        while made < count:
            trace = self.trace()
            made += len(trace)
            yield from trace

    def trace(self) -> list[dict]:
        rng = self.rng
        org = _pick(rng, ORGS, self.org_cum)
        project = _pick(rng, org.projects, self.project_cum[org.slug])
        hour = _pick(rng, self.hour_starts, self.hour_cum)
        start = min(hour + rng.randrange(HOUR_US), self.end_us - 60_000_000)
        user = _pick(rng, self.users[org.slug], self.user_cum[org.slug])
        session = hashlib.blake2s(f"{user}{start // (2 * HOUR_US)}".encode(), digest_size=6)
        progress = (start - self.start_us) / max(1, self.end_us - self.start_us)
        tags = [project.kind.replace("_", "-")]
        if rng.random() < 0.3:
            tags.append(rng.choice(EXTRA_TAGS))
        if customer := customer_of(user):
            tags.append(f"customer:{customer}")
        ctx = _Ctx(
            org_id=self.ids[(org.slug, project.slug)][0],
            project_id=self.ids[(org.slug, project.slug)][1],
            org=org,
            project=project,
            trace_id=self._id(128),
            environment=_pick(rng, [e for e, _ in ENVIRONMENTS], self.env_cum),
            user_id=user,
            session_id="sess_" + session.hexdigest(),
            service=f"{project.slug}-{'api' if rng.random() < 0.8 else 'worker'}",
            version=APP_VERSIONS[min(len(APP_VERSIONS) - 1, int(progress * len(APP_VERSIONS)))],
            tags=tags,
            region=rng.choice(["us-east-1", "eu-west-1", "ap-southeast-2"]),
        )
        build = {
            "single": self._single,
            "rag": self._rag,
            "agent_rag": self._agent,
            "agent_tools": self._agent,
        }[project.kind]
        return build(ctx, start)

    def _chat_model(self, ctx: _Ctx) -> str:
        models = [m for m, _ in ctx.project.chat_models]
        return _pick(self.rng, models, self.model_cum[ctx.project.slug])

    def _lookup(self, ctx: _Ctx, cursor: int, root_id: str, spans: list[dict]) -> int:
        """Embed the question and search the vector store; returns the time after both."""
        for make in (self._embed, self._retrieve):
            child = make(ctx, cursor, root_id)
            spans.append(child)
            cursor = to_micros(child["end_time"]) + 1_000
        return cursor

    def _single(self, ctx: _Ctx, start: int) -> list[dict]:
        inp = int(self._lognormal(900 if ctx.project.slug == "summarizer" else 450, 0.6))
        out = int(self._lognormal(320, 0.5))
        return [self._llm(ctx, self._chat_model(ctx), start, None, inp, out, "chat", final=True)]

    def _rag(self, ctx: _Ctx, start: int) -> list[dict]:
        root_id = self._id(64)
        spans: list[dict] = []
        cursor = self._lookup(ctx, start + 2_000, root_id, spans)
        if spans[0]["status"] == "ok":
            inp, out = int(self._lognormal(2600, 0.4)), int(self._lognormal(260, 0.5))
            model = self._chat_model(ctx)
            spans.append(self._llm(ctx, model, cursor, root_id, inp, out, "chat", final=True))
        return [self._root(ctx, root_id, "rag_query", "other", start, spans), *spans]

    def _agent(self, ctx: _Ctx, start: int) -> list[dict]:
        rng = self.rng
        root_id = self._id(64)
        spans: list[dict] = []
        cursor = start + 3_000
        if ctx.project.embed_model:
            cursor = self._lookup(ctx, cursor, root_id, spans)
        model = self._chat_model(ctx)
        context = int(self._lognormal(1500, 0.4))
        steps = min(6, 1 + int(rng.expovariate(0.8)))
        for step in range(steps):
            final = step == steps - 1
            out = int(self._lognormal(180, 0.6))
            call = self._llm(ctx, model, cursor, root_id, context, out, "chat", final=final)
            if call["status"] == "error" and rng.random() < 0.6:  # the agent retries once
                spans.append(call)
                retry_at = to_micros(call["end_time"]) + 500_000
                call = self._llm(ctx, model, retry_at, root_id, context, out, "chat", final=final)
            spans.append(call)
            cursor = to_micros(call["end_time"]) + 500
            if call["status"] == "error" or final:
                break
            call["finish_reason"] = "tool_calls"
            tool = self._tool(ctx, cursor, root_id)
            spans.append(tool)
            cursor = to_micros(tool["end_time"]) + 500
            context += call["output_tokens"] + int(self._lognormal(400, 0.7))
        root = self._root(ctx, root_id, f"{ctx.project.slug}.run", "invoke_agent", start, spans)
        return [root, *spans]

    # ---- spans -----------------------------------------------------------------------
    def _base(
        self,
        ctx: _Ctx,
        span_id: str,
        parent: str | None,
        name: str,
        operation: str,
        start: int,
        duration_ms: float,
    ) -> dict:
        end = start + int(duration_ms * 1000)
        return {
            "org_id": ctx.org_id,
            "project_id": ctx.project_id,
            "trace_id": ctx.trace_id,
            "span_id": span_id,
            "parent_span_id": parent,
            "start_time": from_micros(start),
            "end_time": from_micros(end),
            "duration_ms": (end - start) / 1000,
            "name": name,
            "operation": operation,
            "environment": ctx.environment,
            "service_name": ctx.service,
            "user_id": ctx.user_id,
            "session_id": ctx.session_id,
            "status": "ok",
            "tags": ctx.tags,
            "metadata": {
                "app_version": ctx.version,
                "region": ctx.region,
                "org_tier": "enterprise" if ctx.org.slug == "acme" else "team",
            },
            "attributes": {},
        }

    def _root(
        self, ctx: _Ctx, span_id: str, name: str, operation: str, start: int, children: list[dict]
    ) -> dict:
        end = max(to_micros(c["end_time"]) for c in children) + 2_000
        row = self._base(ctx, span_id, None, name, operation, start, (end - start) / 1000)
        last = children[-1]
        row["input_text"] = next(
            (c.get("input_text") for c in children if c["operation"] == "chat"), None
        )
        row["output_text"] = last.get("output_text") if last["status"] == "ok" else None
        if last["status"] == "error":
            row.update(
                status="error", error_type=last["error_type"], error_message=last["error_message"]
            )
        row["attributes"] = {"agent.steps": len(children)}
        return row

    def _llm(
        self,
        ctx: _Ctx,
        model: str,
        start: int,
        parent: str | None,
        inp: int,
        out: int,
        operation: str,
        *,
        final: bool,
    ) -> dict:
        rng = self.rng
        prof = MODELS[model]
        inc = self._incident(prof.provider, start)
        slow = inc.latency_factor if inc else 1.0
        ttft = self._lognormal(prof.ttft_ms, 0.35) * slow
        duration = ttft + out / (prof.tokens_per_s * self._lognormal(1.0, 0.2)) * 1000
        failed = rng.random() < (inc.error_rate if inc else prof.base_error_rate)
        if failed:
            if inc:
                etype, emsg = inc.error_type, inc.error_message
            else:
                etype, emsg, _ = _pick(rng, ORDINARY_ERRORS, self.err_cum)
            duration = 30_000.0 if "Timeout" in etype else self._lognormal(250, 0.5)
            inp, out, ttft = 0, 0, None
        row = self._base(
            ctx, self._id(64), parent, f"{operation} {model}", operation, start, duration
        )
        at = row["start_time"]
        cost = self.prices.cost(ctx.org_id, prof.provider, model, inp, out, at)
        row.update(
            provider=prof.provider,
            model=model,
            ttft_ms=ttft,
            input_tokens=inp,
            output_tokens=out,
            input_cost_usd=cost.input_usd,
            output_cost_usd=cost.output_usd,
            cost_source=cost.source,
            input_text=texts.question(ctx.project.kind, rng),
            attributes={"gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 1024},
        )
        if failed:
            row.update(status="error", error_type=etype, error_message=emsg)
        else:
            row["output_text"] = texts.answer(ctx.project.kind, rng)
            row["finish_reason"] = "length" if out > 1500 else "stop"
            if final and rng.random() < 0.25:
                row["quality_score"] = round(rng.betavariate(8, 2), 3)
        return row

    def _embed(self, ctx: _Ctx, start: int, parent: str) -> dict:
        prof = MODELS[ctx.project.embed_model]
        inc = self._incident(prof.provider, start)
        tokens = int(self._lognormal(40, 0.5)) + 1
        row = self._base(
            ctx,
            self._id(64),
            parent,
            f"embeddings {prof.model}",
            "embeddings",
            start,
            self._lognormal(prof.ttft_ms, 0.3) * (inc.latency_factor if inc else 1),
        )
        cost = self.prices.cost(ctx.org_id, prof.provider, prof.model, tokens, 0, row["start_time"])
        row.update(
            provider=prof.provider,
            model=prof.model,
            input_tokens=tokens,
            input_cost_usd=cost.input_usd,
            cost_source=cost.source,
            input_text=texts.question(ctx.project.kind, self.rng),
        )
        if inc and self.rng.random() < inc.error_rate:
            row.update(
                status="error",
                error_type=inc.error_type,
                error_message=inc.error_message,
                input_tokens=0,
                input_cost_usd=0.0,
            )
        return row

    def _retrieve(self, ctx: _Ctx, start: int, parent: str) -> dict:
        k = self.rng.choice([3, 5, 8])
        row = self._base(
            ctx, self._id(64), parent, "vector_search", "retrieval", start, self._lognormal(45, 0.5)
        )
        row["attributes"] = {"db.system": "pgvector", "retrieval.top_k": k}
        row["output_text"] = f"{k} documents retrieved"
        return row

    def _tool(self, ctx: _Ctx, start: int, parent: str) -> dict:
        tool = self.rng.choice(ctx.project.tools)
        row = self._base(
            ctx,
            self._id(64),
            parent,
            f"execute_tool {tool}",
            "execute_tool",
            start,
            self._lognormal(220, 0.8),
        )
        row["input_text"], row["output_text"] = texts.tool_io(tool, self.rng)
        row["attributes"] = {"gen_ai.tool.name": tool}
        if self.rng.random() < 0.02:
            row.update(
                status="error",
                error_type="ToolExecutionError",
                error_message=f"{tool} timed out after 10s",
                output_text=None,
            )
        return row
