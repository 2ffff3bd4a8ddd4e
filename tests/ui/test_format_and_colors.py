"""Numbers by unit, status words and chart colours: what every page shows comes from here."""

from observatory_core.metrics.folding import OTHER
from observatory_core.reports import significance as sig
from observatory_core.ui import colors, format


def test_durations_read_in_the_unit_that_fits():
    assert format.duration_ms(10_830.2213) == "10.8 s"
    assert format.duration_ms(950) == "950 ms"
    assert format.duration_ms(95_000) == "1.6 min"
    assert format.duration_ms(2 * 3_600_000) == "2.0 h"
    assert format.duration_ms(None) == "—"
    assert format.duration_unit([900, 10_830, 12_000]) == (1000, "s", 1)


def test_money_ratios_counts_and_changes():
    assert format.money(1234.5) == "$1,234.50"
    assert format.money(0.0123) == "$0.0123"
    assert format.money(0.000456) == "$0.000456"
    assert format.money(25_000) == "$25,000"
    assert format.rate(0.0312) == "3.1%"
    assert format.rate(0.0004) == "0.04%"
    assert format.count(1_234_567) == "1,234,567"
    assert format.change(0) == "±0%"
    assert format.change(0.04) == "+0.04%"  # never "+0.0%"
    assert format.change(-12.345) == "-12.3%"
    assert format.by_unit("ms", 10_830) == "10.8 s"


def test_unset_status_reads_ok_and_the_ok_filter_keeps_both():
    assert format.status("unset") == "ok" and format.status("error") == "error"
    assert format.status_choices(("ok", "error", "unset")) == ["ok", "error"]
    assert format.status_filter(["ok"]) == ("ok", "unset")
    assert format.status_filter(["error"]) == ("error",)
    assert format.group_value("status", "unset") == "ok (status not set)"
    assert format.group_value("model", None).startswith("(no model")


def test_each_series_of_a_chart_has_its_own_colour_and_keeps_it():
    models = [f"model-{i}" for i in range(10)] + [OTHER]
    chart = colors.assign(models)
    assert len(set(chart.values())) == len(models)
    assert chart[OTHER] == colors.GREY
    # a value alone on another chart asks for the same colour
    alone = colors.assign(["model-3"])
    assert alone["model-3"] == colors.PALETTE[colors.preferred("model-3")]
    # the order the series arrive in does not change the colours
    assert colors.assign(list(reversed(models))) == chart


def test_a_zero_change_is_never_beyond_noise():
    strong = sig.Verdict(9.0)
    assert not sig.unless_unchanged(strong, 1200.0, 1200.0).significant
    assert sig.unless_unchanged(strong, 1200.0, 1100.0).significant
    assert not sig.unless_unchanged(strong, None, 1100.0).significant
    # the tests themselves: equal periods give z = 0
    assert not sig.counts(500, 500).significant
    assert not sig.proportions(50, 500, 50, 500).significant
