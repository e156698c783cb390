"""Reading git's allowed_signers format: principals, options, windows, and clear errors."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from reconciler.signatures import allowed_signers
from tests.harness import signing

KEY = signing.public_line(ed25519.Ed25519PrivateKey.generate())


def _entry(line: str) -> allowed_signers.Entry:
    (entry,) = allowed_signers.parse(line, "signers").entries
    return entry


def test_plain_line_gives_principals_and_key() -> None:
    entry = _entry(f"alice@example.com,bob@example.com {KEY} a comment")
    assert entry.principals == ("alice@example.com", "bob@example.com")
    assert entry.key_type == "ssh-ed25519"
    assert entry.key_blob.startswith(b"\x00\x00\x00\x0bssh-ed25519")
    assert entry.namespaces is None
    assert not entry.cert_authority


def test_comments_and_blank_lines_are_ignored() -> None:
    text = f"# trusted\n\n   \nalice@example.com {KEY}\n"
    assert len(allowed_signers.parse(text, "signers").entries) == 1


def test_options_are_case_insensitive_and_quoted_values_may_hold_commas() -> None:
    entry = _entry(f'a@example.com Namespaces="git,file",cert-authority {KEY}')
    assert entry.namespaces == ("git", "file")
    assert entry.cert_authority


def test_namespaces_option_is_a_pattern_list_with_negation() -> None:
    entry = _entry(f'a@example.com namespaces="*,!file" {KEY}')
    assert entry.allows_namespace("git")
    assert not entry.allows_namespace("file")


def test_validity_window_in_utc_is_inclusive() -> None:
    entry = _entry(f'a@example.com valid-after="20240101Z",valid-before="202401020000Z" {KEY}')
    start = int(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC).timestamp())
    end = int(datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC).timestamp())
    assert entry.valid_at(start)
    assert entry.valid_at(end)
    assert not entry.valid_at(start - 1)
    assert not entry.valid_at(end + 1)


def test_cert_authority_entries_never_match_a_plain_key() -> None:
    entry = _entry(f"a@example.com cert-authority {KEY}")
    signers = allowed_signers.AllowedSigners(entries=(entry,))
    assert signers.for_key(entry.key_blob) == ()


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f'a@example.com valid-before="2024" {KEY}', "invalid time"),
        (f"a@example.com no-touch-required {KEY}", "unknown or malformed option"),
        (f"a@example.com namespaces=git {KEY}", "needs a quoted value"),
        (f'a@example.com namespaces="git",namespaces="file" {KEY}', "given twice"),
        ("a@example.com ssh-dss AAAAB3NzaC1kc3M=", "unsupported or missing key type"),
        ("a@example.com ssh-ed25519 !!!notbase64", "not valid base64"),
        ("a@example.com ssh-rsa AAAAC3NzaC1lZDI1NTE5", "does not match its type"),
        (f'a@example.com namespaces="git {KEY}', "unterminated quote"),
    ],
)
def test_bad_lines_are_errors_naming_file_and_line(line: str, why: str) -> None:
    with pytest.raises(allowed_signers.AllowedSignersError, match=f"^signers:2: .*{why}"):
        allowed_signers.parse(f"# first line\n{line}\n", "signers")
