"""Every webhook setting is documented once, in `webhook.settings`, and shown everywhere."""

from __future__ import annotations

import subprocess
import sys

from tests.harness.controlplane import REPO_ROOT
from webhook import settings


def _readme_rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        if line.startswith(f"| `{settings.PREFIX}"):
            variable, default, what = (cell.strip() for cell in line.strip("|").split(" | "))
            rows.append((variable.strip("`"), default, what))
    return rows


def test_readme_table_is_the_settings_help() -> None:
    """The README's table lists every setting, its default and its help, in order."""
    expected = settings.documented()
    table = "\n".join(f"| `{v}` | {d} | {h} |" for v, d, h in expected)
    assert _readme_rows() == expected, f"update the README's table to:\n{table}"


def test_every_setting_has_help_and_is_in_serve_help() -> None:
    """`gitwarden webhook serve --help` names every variable with its help text."""
    out = subprocess.run(
        [sys.executable, "-m", "gitwarden_cli.main", "webhook", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    flattened = " ".join(out.split())
    for variable, default, help_text in settings.documented():
        assert help_text.strip(), variable
        assert f"{variable} (default: {default})" in flattened
        assert " ".join(help_text.split()) in flattened
