"""Costs match the maintained price table; org prices override it from their date on."""

from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest

from observatory_core.ingest.pricing import PriceBook, set_org_price
from tests.helpers import make_org

AT = datetime(2026, 10, 1, 12, tzinfo=UTC)


def _reference(provider, model, inp, out):
    calc = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=inp, output_tokens=out),
        model,
        provider_id=provider,
        genai_request_timestamp=AT,
    )
    return float(calc.input_price), float(calc.output_price)


@pytest.mark.parametrize(
    ("provider", "model", "inp", "out"),
    [
        ("openai", "gpt-4o", 1234, 567),
        ("anthropic", "claude-sonnet-4-5", 20_000, 1_000),
        ("google", "gemini-2.5-flash", 10, 0),
        ("gcp.gemini", "gemini-2.5-pro", 250_000, 2_000),  # OTel provider name, tiered price
        ("openai", "text-embedding-3-small", 300, 0),
    ],
)
def test_table_prices_match_genai_prices(provider, model, inp, out):
    cost = PriceBook({}).cost(1, provider, model, inp, out, AT)
    ref_in, ref_out = _reference(provider.replace("gcp.gemini", "google"), model, inp, out)
    assert cost.source == "computed"
    assert cost.input_usd == pytest.approx(ref_in, rel=1e-9)
    assert cost.output_usd == pytest.approx(ref_out, rel=1e-9)


def test_tiered_price_is_higher_above_the_threshold():
    book = PriceBook({})
    small = book.cost(1, "google", "gemini-2.5-pro", 100_000, 0, AT).input_usd / 100_000
    large = book.cost(1, "google", "gemini-2.5-pro", 300_000, 0, AT).input_usd / 300_000
    assert large > small * 1.5


def test_unknown_model_is_kept_as_unpriced():
    cost = PriceBook({}).cost(1, "self-hosted", "acme-ft-v9", 100, 50, AT)
    assert (cost.source, cost.total_usd) == ("unpriced", 0.0)


def test_reported_cost_wins_and_is_split_by_tokens():
    cost = PriceBook({}).cost(1, "openai", "gpt-4o", 300, 100, AT, reported_usd=Decimal("0.4"))
    assert cost.source == "reported"
    assert cost.input_usd == pytest.approx(0.3)
    assert cost.total_usd == pytest.approx(0.4)


def test_org_price_applies_from_its_date_and_only_to_that_org(engine):
    acme, _ = make_org(engine, "acme")
    globex, _ = make_org(engine, "globex")
    with engine.begin() as conn:
        set_org_price(conn, acme, "OpenAI", "gpt-4o", 1.0, 2.0, datetime(2026, 9, 1, tzinfo=UTC))
        set_org_price(conn, acme, "openai", "gpt-4o", 0.5, 1.0, datetime(2026, 10, 1, tzinfo=UTC))
    with engine.connect() as conn:
        book = PriceBook.load(conn)
    before = book.cost(acme, "openai", "gpt-4o", 1_000_000, 0, datetime(2026, 8, 1, tzinfo=UTC))
    sept = book.cost(
        acme, "openai", "gpt-4o", 1_000_000, 1_000_000, datetime(2026, 9, 15, tzinfo=UTC)
    )
    octo = book.cost(acme, "openai", "gpt-4o", 1_000_000, 0, AT)
    other = book.cost(globex, "openai", "gpt-4o", 1_000_000, 0, AT)
    assert before.input_usd == pytest.approx(_reference("openai", "gpt-4o", 1_000_000, 0)[0])
    assert (sept.input_usd, sept.output_usd) == (pytest.approx(1.0), pytest.approx(2.0))
    assert octo.input_usd == pytest.approx(0.5)
    assert other.input_usd == pytest.approx(2.5)  # the table's gpt-4o price, untouched


def test_negative_price_is_refused(engine):
    from observatory_core.base.errors import UserError

    acme, _ = make_org(engine, "acme")
    with engine.begin() as conn, pytest.raises(UserError, match="cannot be negative"):
        set_org_price(conn, acme, "openai", "gpt-4o", -1, 1, AT)
