"""Push authentication: each scheme's good request passes, every forgery and slip is refused.

Every expected signature is computed here with `hmac` from the secret and the body, never
copied from what the code produced.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
from pathlib import Path

import pytest

from reconciler import config, controlconfig, pushauth

GITHUB_SECRET = b"gh-secret-\x01\xfe"
GITLAB_TOKEN = b"gl-token-e2e"
HMAC_SECRET = b"generic-secret"
BODY = b'{"ref":"refs/heads/main","after":"0123456789abcdef"}'
ALL = pushauth.Secrets(github=GITHUB_SECRET, gitlab=GITLAB_TOKEN, hmac=HMAC_SECRET)


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def message(*pairs: tuple[str, str]) -> http.client.HTTPMessage:
    """Headers as http.server hands them over (repeated names kept)."""
    raw = "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
    return http.client.parse_headers(io.BytesIO(raw.encode("latin-1")))


@pytest.mark.parametrize(
    ("headers", "scheme"),
    [
        ({"X-Hub-Signature-256": sign(GITHUB_SECRET, BODY)}, pushauth.GITHUB),
        ({"X-Gitlab-Token": GITLAB_TOKEN.decode()}, pushauth.GITLAB),
        ({"X-GitWarden-Signature-256": sign(HMAC_SECRET, BODY)}, pushauth.HMAC),
        ({"x-hub-signature-256": sign(GITHUB_SECRET, BODY)}, pushauth.GITHUB),  # any case
        ({"X-GITLAB-TOKEN": GITLAB_TOKEN.decode()}, pushauth.GITLAB),
    ],
)
def test_a_correct_request_passes_by_its_scheme(headers: dict[str, str], scheme: str) -> None:
    assert pushauth.verify(headers, BODY, ALL) == pushauth.Verdict(True, scheme=scheme)


def test_headers_from_http_server_are_read_case_insensitively() -> None:
    headers = message(("x-HUB-signature-256", sign(GITHUB_SECRET, BODY)))
    assert pushauth.verify(headers, BODY, ALL).scheme == pushauth.GITHUB


def test_an_empty_body_is_signed_like_any_other() -> None:
    good = {"X-Hub-Signature-256": sign(GITHUB_SECRET, b"")}
    assert pushauth.verify(good, b"", ALL).ok
    assert not pushauth.verify(good, BODY, ALL).ok


def test_the_generic_scheme_reads_the_configured_header() -> None:
    secrets = pushauth.Secrets(hmac=HMAC_SECRET, hmac_header="X-Custom-Sig")
    assert pushauth.verify({"X-Custom-Sig": sign(HMAC_SECRET, BODY)}, BODY, secrets).ok
    refused = pushauth.verify({"X-GitWarden-Signature-256": sign(HMAC_SECRET, BODY)}, BODY, secrets)
    assert not refused.ok


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (sign(b"wrong-secret", BODY), "does not match"),
        (sign(GITHUB_SECRET, BODY + b" "), "does not match"),  # body changed after signing
        (sign(GITHUB_SECRET, BODY)[:-2], "64 hex digits"),  # truncated
        (sign(GITHUB_SECRET, BODY) + "00", "64 hex digits"),  # padded
        ("sha1=" + hmac.new(GITHUB_SECRET, BODY, hashlib.sha1).hexdigest(), "sha256="),
        (sign(GITHUB_SECRET, BODY).removeprefix("sha256="), "sha256="),  # no prefix
        ("SHA256=" + sign(GITHUB_SECRET, BODY)[7:], "sha256="),  # wrong prefix case
        ("sha256=" + "z" * 64, "not hex"),
        ("", "sha256="),
    ],
)
def test_a_bad_github_signature_is_refused(value: str, why: str) -> None:
    verdict = pushauth.verify({"X-Hub-Signature-256": value}, BODY, ALL)
    assert not verdict.ok
    assert why in verdict.reason
    assert verdict.scheme is None


@pytest.mark.parametrize("token", ["gl-token-e2", "gl-token-e2e-", "GL-TOKEN-E2E", ""])
def test_a_wrong_gitlab_token_is_refused(token: str) -> None:
    verdict = pushauth.verify({"X-Gitlab-Token": token}, BODY, ALL)
    assert not verdict.ok
    assert "does not match" in verdict.reason


def test_a_scheme_that_is_not_configured_passes_nothing() -> None:
    """GitLab's real token, but only GitHub is configured: refused, and the log says why."""
    github_only = pushauth.Secrets(github=GITHUB_SECRET)
    verdict = pushauth.verify({"X-Gitlab-Token": GITLAB_TOKEN.decode()}, BODY, github_only)
    assert not verdict.ok
    assert "X-Gitlab-Token sent, but that scheme is not set up" in verdict.reason
    # The generic header signed with GitHub's secret does not pass as GitHub either.
    forged = {"X-GitWarden-Signature-256": sign(GITHUB_SECRET, BODY)}
    assert not pushauth.verify(forged, BODY, github_only).ok


def test_no_configured_scheme_refuses_everything() -> None:
    verdict = pushauth.verify({"X-Hub-Signature-256": sign(b"", BODY)}, BODY, pushauth.Secrets())
    assert not verdict.ok


def test_no_signature_header_is_refused() -> None:
    verdict = pushauth.verify({"Content-Type": "application/json"}, BODY, ALL)
    assert not verdict.ok
    assert "no signature header" in verdict.reason


def test_a_good_credential_does_not_carry_a_forged_one() -> None:
    headers = {
        "X-Gitlab-Token": GITLAB_TOKEN.decode(),
        "X-Hub-Signature-256": sign(b"attacker", BODY),
    }
    verdict = pushauth.verify(headers, BODY, ALL)
    assert not verdict.ok
    assert "X-Hub-Signature-256" in verdict.reason


def test_a_repeated_signature_header_is_refused_even_if_one_copy_is_good() -> None:
    headers = message(
        ("X-Hub-Signature-256", sign(b"attacker", BODY)),
        ("X-Hub-Signature-256", sign(GITHUB_SECRET, BODY)),
    )
    verdict = pushauth.verify(headers, BODY, ALL)
    assert not verdict.ok
    assert "2 times" in verdict.reason


def test_verdicts_and_secrets_never_show_a_secret_or_a_signature() -> None:
    sent = sign(b"attacker-secret", BODY)
    verdicts = [
        pushauth.verify({"X-Hub-Signature-256": sent}, BODY, ALL),
        pushauth.verify({"X-Gitlab-Token": "attacker-token"}, BODY, ALL),
        pushauth.verify({"X-Hub-Signature-256": sign(GITHUB_SECRET, BODY)}, BODY, ALL),
    ]
    text = " ".join(repr(v) for v in verdicts) + repr(ALL) + str(ALL)
    for secret in (GITHUB_SECRET, GITLAB_TOKEN, HMAC_SECRET):
        assert secret.decode("latin-1") not in text
    assert sent[7:] not in text
    assert "attacker" not in text
    assert sign(GITHUB_SECRET, BODY)[7:] not in text


def test_load_secrets_reads_each_file_and_strips_one_newline(tmp_path: Path) -> None:
    (tmp_path / "gh").write_bytes(b"gh-secret\n")
    (tmp_path / "gl").write_bytes(b"gl-token\r\n")
    (tmp_path / "hm").write_bytes(b"two-newlines\n\n")
    push = controlconfig.PushConfig(
        listen="127.0.0.1:0",
        github_secret_file=tmp_path / "gh",
        gitlab_token_file=tmp_path / "gl",
        hmac_secret_file=tmp_path / "hm",
        hmac_header="X-Sig",
    )
    loaded = pushauth.load_secrets(push)
    assert loaded == pushauth.Secrets(
        github=b"gh-secret", gitlab=b"gl-token", hmac=b"two-newlines\n", hmac_header="X-Sig"
    )
    assert loaded.schemes() == (pushauth.GITHUB, pushauth.GITLAB, pushauth.HMAC)
    only = pushauth.load_secrets(controlconfig.PushConfig(gitlab_token_file=tmp_path / "gl"))
    assert only.schemes() == (pushauth.GITLAB,)


@pytest.mark.parametrize("content", [None, b"", b"\n"])
def test_a_missing_or_empty_secret_file_is_a_config_error_naming_the_file(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(config.ConfigError) as caught:
        pushauth.load_secrets(controlconfig.PushConfig(github_secret_file=path))
    assert isinstance(caught.value, pushauth.SecretFileError)
    assert str(path) in str(caught.value)
    assert "push.github_secret_file" in str(caught.value)


def test_an_unreadable_secret_file_names_the_file_but_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "dir-not-file"
    path.mkdir()
    with pytest.raises(pushauth.SecretFileError) as caught:
        pushauth.load_secrets(controlconfig.PushConfig(hmac_secret_file=path))
    assert str(path) in str(caught.value)
    assert caught.value.__cause__ is None  # the OSError (and its text) is not chained
