"""The user's guide cannot drift from the code: generated tables, quoted messages, settings.

Every generated section is what the code renders now; every key of the admission configuration
has a meaning; every `GITWARDEN_*` variable the code reads is documented; every message the
troubleshooting page quotes still exists in the code (a fragment between placeholders must
appear verbatim, string literals split across lines joined); every relative link resolves.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import docs_sections

ROOT = docs_sections.REPO_ROOT
SOURCES = ("webhook", "reconciler", "gitwarden_cli", "policies")
# A literal continued on the next line: `"... "` newline `f"..."` (Python) is one string.
_CONTINUED = re.compile(r"\"\s*\n\s*[rbfu]*\"")


def _code() -> str:
    parts = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in (".py", ".rego") and "_test" not in path.stem:
                parts.append(_CONTINUED.sub("", path.read_text()))
    return "\n".join(parts)


def _quoted(page: Path) -> list[str]:
    return re.findall(r"^> `([^`]+)`$", page.read_text(), flags=re.MULTILINE)


def test_every_generated_section_is_what_the_code_renders() -> None:
    assert docs_sections.stale() == [], "run `make docs`"


def test_every_admission_key_has_a_meaning() -> None:
    keys = [key for key, _ in docs_sections.admission_keys()]
    assert [k for k in keys if k not in docs_sections.ADMISSION_KEYS] == []
    assert [k for k in docs_sections.ADMISSION_KEYS if k not in keys] == []


def test_a_section_whose_markers_are_gone_is_an_error() -> None:
    with pytest.raises(ValueError, match="markers of section x are missing"):
        docs_sections.render("no markers here", "x", "body")


def test_the_chart_values_table_reads_values_and_their_comments() -> None:
    text = "# -- how many webhook pods\nreplicas: 2\nwebhook:\n  # the log level\n  level: info\n"
    rows = docs_sections._chart_values({"replicas": 2, "webhook": {"level": "info"}},
                                       docs_sections._comments(text))  # fmt: skip
    assert rows == [
        "| `replicas` | `2` | how many webhook pods |",
        "| `webhook.level` | `info` | the log level |",
    ]


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    used: set[str] = set()
    for top in ("webhook", "reconciler", "gitwarden_cli", "tests", "bench", "tools", "demo"):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".sh") and path.name != "test_docs.py":
                used |= set(re.findall(r"GITWARDEN_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert used, "found no variable: the scan is broken"
    assert sorted(v for v in used if f"`{v}`" not in documented and v != "GITWARDEN_WEBHOOK") == []


def test_every_quoted_message_still_exists_in_the_code() -> None:
    code = _code()
    quoted = _quoted(ROOT / "docs" / "troubleshooting.md")
    assert len(quoted) >= 30, "the troubleshooting page lost its quoted messages"
    missing = []
    for message in quoted:
        for piece in re.split(r"<[^>]+>", message):
            fragment = piece.strip()
            if len(fragment) >= 8 and fragment not in code:
                missing.append(fragment)
    assert missing == []


def test_the_quote_check_finds_a_message_that_is_not_in_the_code() -> None:
    code = _code()
    assert "GitWarden: this message was never written" not in code
    assert "may not" in code


def test_every_relative_link_in_the_guide_resolves() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
