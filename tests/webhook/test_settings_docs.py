"""Every webhook setting is documented once, in `webhook.settings`, and shown everywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import pki
from tests.harness.controlplane import REPO_ROOT
from webhook import serve, settings


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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GITWARDEN_WEBHOOK_HANDSHAKE_TIMEOUT": "0"}, "HANDSHAKE_TIMEOUT must be in"),
        ({"GITWARDEN_WEBHOOK_REQUEST_TIMEOUT": "61"}, "REQUEST_TIMEOUT must be in"),
        ({"GITWARDEN_WEBHOOK_REQUEST_TIMEOUT": "soon"}, "REQUEST_TIMEOUT: 'soon' is not a float"),
    ],
    ids=["handshake-zero", "request-too-long", "request-not-a-number"],
)
def test_bad_timeouts_name_the_variable(env: dict[str, str], message: str) -> None:
    """The serving deadlines are bounded: (0, 60] seconds."""
    with pytest.raises(settings.SettingsError, match=message):
        settings.WebhookSettings.from_env(env)


def test_an_unreadable_client_ca_is_refused_at_start(tmp_path: Path) -> None:
    """A missing client CA file stops the server before it listens, naming the variables."""
    pair = pki.CertificateAuthority("ca").serving(["127.0.0.1"])
    crt, key = pair.write(tmp_path, "tls")
    s = settings.WebhookSettings(tls_cert=crt, tls_key=key, client_ca=tmp_path / "absent.crt")
    with pytest.raises(settings.SettingsError, match="GITWARDEN_WEBHOOK_TLS_CERT, _TLS_KEY"):
        serve.WebhookServer(s)
