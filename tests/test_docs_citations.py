"""Code and docs cite the repo's own docs by section (`docs/scale.md, "Known gaps"`): each
cited section must exist in the file it names, so a section renamed or moved cannot leave a
pointer to nowhere."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_GAP = r"(?:\n[ \t]*#?[ \t]*)"  # a citation may wrap onto the next comment or docstring line
_SEP = r"(?:,?[ \t]*" + _GAP + r"|,[ \t]*|[ \t]+)"  # never none: "docs/x.md's" cites no section
CITATION = re.compile(
    r"(?P<doc>docs/[\w-]+\.md)(?:" + _SEP + r"(?:\"(?P<dq>[^\"\n]+(?:" + _GAP + r"[^\"\n]+)*?)\""
    r"|'(?P<sq>[^'\n]+)'))?"
)


_HEADING = re.compile(r"^#+\s*(?P<name>.+?)\s*$")
_LEAD_IN = re.compile(r"^(?:- )?\*\*(?P<name>[^*]+?)[.:]?\*\*")  # a named paragraph


def _sections(doc: Path) -> set[str]:
    """Headings (and their part before a colon), and the bold names that open a paragraph
    (`**Add a metric:**`)."""
    names = set()
    for line in doc.read_text().splitlines():
        match = _HEADING.match(line) or _LEAD_IN.match(line)
        if match:
            names.add(match.group("name"))
            names.add(match.group("name").split(": ")[0])
    return names


def _citations() -> list[tuple[str, int, str, str]]:
    """(file, line, doc, section) for every citation that names a section."""
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in files:
        text = (ROOT / name).read_text()
        for match in CITATION.finditer(text):
            section = match.group("dq") or match.group("sq")
            if section is None:
                continue
            section = re.sub(r"\s*\n[ \t]*#?[ \t]*", " ", section).strip()
            line = text.count("\n", 0, match.start()) + 1
            found.append((name, line, match.group("doc"), section))
    return found


def test_every_cited_section_exists():
    citations = _citations()
    assert len(citations) > 50  # the pattern still finds the citations
    sections: dict[str, set[str]] = {}
    missing = []
    for name, line, doc, section in citations:
        path = ROOT / doc
        if doc not in sections:
            sections[doc] = _sections(path) if path.exists() else set()
        if section not in sections[doc]:
            missing.append(f"{name}:{line}: {doc}, {section!r}")
    assert not missing, "cited sections that do not exist:\n" + "\n".join(missing)
