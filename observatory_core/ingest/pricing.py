"""Span costs from the maintained `genai-prices` table, with per-org overrides.

Looking a model up in genai-prices costs ~70 us, too slow for bulk loads, so per-token rates
are cached per (provider, model, day). Tiered models change price above 128k-200k prompt
tokens, so spans that large are priced by the library call itself.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache

import genai_prices
from sqlalchemy import select
from sqlalchemy.engine import Connection

from observatory_core.storage.schema import model_prices
from observatory_core.storage.types import as_utc

# OpenTelemetry provider names that genai-prices knows under another id.
PROVIDER_ALIASES = {
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "mistral_ai": "mistral",
}
_TIER_SAFE_TOKENS = 128_000
_SAMPLE_TOKENS = 1_000


@dataclass(frozen=True)
class Cost:
    input_usd: float
    output_usd: float
    source: str  # reported | computed | unpriced

    @property
    def total_usd(self) -> float:
        return self.input_usd + self.output_usd


UNPRICED = Cost(0.0, 0.0, "unpriced")


# When a span names only its model (OpenInference embedding spans often do), the model's family
# says whose price list to use; genai-prices cannot match some models without a provider.
MODEL_FAMILIES = (
    ("text-embedding-", "openai"),
    ("gpt-", "openai"),
    ("claude", "anthropic"),
    ("gemini", "google"),
    ("mistral", "mistral"),
)


def _provider_id(provider: str | None, model: str | None = None) -> str | None:
    if not provider:
        lowered = (model or "").lower()
        return next((p for prefix, p in MODEL_FAMILIES if lowered.startswith(prefix)), None)
    key = provider.strip().lower()
    return PROVIDER_ALIASES.get(key, key)


@lru_cache(maxsize=4096)
def table_rates(provider: str | None, model: str, day: date) -> tuple[float, float] | None:
    """USD per input token and per output token on `day`, or None when the table lacks it."""
    when = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    try:
        inp = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=_SAMPLE_TOKENS),
            model,
            provider_id=_provider_id(provider, model),
            genai_request_timestamp=when,
        )
        out = genai_prices.calc_price(
            genai_prices.Usage(output_tokens=_SAMPLE_TOKENS),
            model,
            provider_id=_provider_id(provider, model),
            genai_request_timestamp=when,
        )
    except LookupError:
        return None
    return float(inp.input_price) / _SAMPLE_TOKENS, float(out.output_price) / _SAMPLE_TOKENS


def _table_cost(provider, model, input_tokens, output_tokens, at: datetime) -> Cost | None:
    if input_tokens > _TIER_SAFE_TOKENS:
        try:
            calc = genai_prices.calc_price(
                genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens),
                model,
                provider_id=_provider_id(provider, model),
                genai_request_timestamp=at,
            )
        except LookupError:
            return None
        return Cost(float(calc.input_price), float(calc.output_price), "computed")
    rates = table_rates(provider, model, at.date())
    if rates is None:
        return None
    return Cost(input_tokens * rates[0], output_tokens * rates[1], "computed")


@dataclass
class PriceBook:
    """Prices for one load or request: org overrides first, then the maintained table."""

    # (org_id, provider, model) -> sorted [(effective_from, usd_per_input_tok, usd_per_output_tok)]
    overrides: dict[tuple[int, str, str], list[tuple[datetime, float, float]]]

    @classmethod
    def load(cls, conn: Connection) -> PriceBook:
        found: dict[tuple[int, str, str], list[tuple[datetime, float, float]]] = {}
        rows = conn.execute(select(model_prices).order_by(model_prices.c.effective_from))
        for r in rows.mappings():
            key = (r["org_id"], r["provider"].lower(), r["model"])
            found.setdefault(key, []).append(
                (
                    r["effective_from"],
                    r["input_usd_per_mtok"] / 1e6,
                    r["output_usd_per_mtok"] / 1e6,
                )
            )
        return cls(found)

    def cost(
        self,
        org_id: int,
        provider: str | None,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        at: datetime,
        reported_usd: float | None = None,
    ) -> Cost:
        """What a call cost: as reported, else from the org's price, else the table."""
        if reported_usd is not None:
            total = float(reported_usd)
            tokens = input_tokens + output_tokens
            share = input_tokens / tokens if tokens else 1.0
            return Cost(total * share, total * (1 - share), "reported")
        if not model:
            return UNPRICED if (input_tokens or output_tokens) else Cost(0.0, 0.0, "computed")
        if at.tzinfo is not UTC:  # the mapping's times already are
            at = as_utc(at)
        custom = (
            self.overrides.get((org_id, (provider or "").lower(), model))
            if self.overrides
            else None
        )
        if custom:
            idx = bisect.bisect_right([c[0] for c in custom], at) - 1
            if idx >= 0:
                _, rin, rout = custom[idx]
                return Cost(input_tokens * rin, output_tokens * rout, "computed")
        return _table_cost(provider, model, input_tokens, output_tokens, at) or UNPRICED


def set_org_price(
    conn: Connection,
    org_id: int,
    provider: str,
    model: str,
    input_usd_per_mtok: float,
    output_usd_per_mtok: float,
    effective_from: datetime,
    actor: str = "system",
) -> None:
    """Record a custom price; it applies to spans loaded from now on (and later re-pricing)."""
    from observatory_core.accounts.audit import record
    from observatory_core.base.errors import UserError

    if input_usd_per_mtok < 0 or output_usd_per_mtok < 0:
        raise UserError("Prices cannot be negative; give USD per million tokens, e.g. 2.5.")
    p = model_prices.c
    before = conn.execute(
        select(p.input_usd_per_mtok, p.output_usd_per_mtok, p.effective_from)
        .where(p.org_id == org_id, p.provider == provider.lower(), p.model == model)
        .order_by(p.effective_from.desc())
        .limit(1)
    ).first()
    conn.execute(
        model_prices.insert().values(
            org_id=org_id,
            provider=provider.lower(),
            model=model,
            input_usd_per_mtok=input_usd_per_mtok,
            output_usd_per_mtok=output_usd_per_mtok,
            effective_from=as_utc(effective_from),
        )
    )
    record(
        conn,
        org_id=org_id,
        actor=actor,
        action="price.set",
        target=f"{provider.lower()}/{model}",
        before=dict(before._mapping) if before else None,
        after={
            "input_usd_per_mtok": input_usd_per_mtok,
            "output_usd_per_mtok": output_usd_per_mtok,
            "effective_from": as_utc(effective_from),
        },
    )


def list_org_prices(conn: Connection, org_id: int) -> list[dict]:
    """An org's own prices, newest first per model (what `prices list` prints)."""
    p = model_prices.c
    rows = conn.execute(
        select(p.provider, p.model, p.input_usd_per_mtok, p.output_usd_per_mtok, p.effective_from)
        .where(p.org_id == org_id)
        .order_by(p.provider, p.model, p.effective_from.desc())
    )
    return [dict(r._mapping) for r in rows]
