"""docs/ingestion.md shows the attribute tables the mapping really uses."""

from pathlib import Path

from observatory_core.ingest.conventions import CONVENTIONS, mapping_markdown, names_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "ingestion.md"


def test_the_documented_table_is_the_one_in_the_code():
    text = DOC.read_text()
    start = text.index("<!-- mapping:start -->\n") + len("<!-- mapping:start -->\n")
    end = text.index("<!-- mapping:end -->")
    assert text[start:end] == mapping_markdown(), (
        "docs/ingestion.md is out of date: paste conventions.mapping_markdown() between its "
        "mapping markers"
    )


def test_every_name_maps_to_one_field_and_precedence_follows_the_conventions():
    seen: dict[str, str] = {}
    for _, table in CONVENTIONS:
        for name, field in table.items():
            assert name not in seen, f"{name} is in two conventions"
            seen[name] = field
    assert names_for("provider")[:2] == ("gen_ai.provider.name", "gen_ai.system")
    assert names_for("model")[0] == "gen_ai.request.model"
