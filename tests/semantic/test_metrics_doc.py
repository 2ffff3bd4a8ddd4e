"""docs/metrics.md shows the metrics as they are declared."""

from pathlib import Path

from observatory_core.semantic.metrics import metrics_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_the_documented_table_is_the_one_declared():
    text = DOC.read_text()
    start = text.index("<!-- metrics:start -->\n") + len("<!-- metrics:start -->\n")
    end = text.index("<!-- metrics:end -->")
    assert text[start:end] == metrics_markdown(), (
        "docs/metrics.md is out of date: paste semantic.metrics.metrics_markdown() between its "
        "metrics markers"
    )
