"""The long-running reconciler's settings: defaults that work, and each bad value named by key."""

from __future__ import annotations

import pathlib

import pytest

from reconciler import config, controlconfig

ANCHOR = "b" * 40
BASE = f"""
source:
  url: https://git.example.test/org/repo.git
trust:
  anchor: {ANCHOR}
  allowed_signers: allowed_signers
"""


def load(tmp_path: pathlib.Path, extra: str) -> config.ReconcilerConfig:
    path = tmp_path / "gitwarden.yaml"
    path.write_text(BASE + extra)
    return config.load(path)


def test_the_defaults_elect_a_leader_serve_keys_and_log_json(tmp_path: pathlib.Path) -> None:
    loaded = load(tmp_path, "")
    assert loaded.leader.enabled
    assert loaded.leader.lease_name == controlconfig.DEFAULT_LEASE
    assert loaded.keys.serve
    assert loaded.loop.drift_repair
    assert loaded.push.listen is None
    assert loaded.log.format == "json"


def test_a_push_receiver_with_a_secret_file_is_read(tmp_path: pathlib.Path) -> None:
    loaded = load(tmp_path, "push:\n  listen: 127.0.0.1:0\n  github_secret_file: hook-secret\n")
    assert loaded.push.github_secret_file == tmp_path.resolve() / "hook-secret"
    assert controlconfig.listen_address(loaded.push.listen or "") == ("127.0.0.1", 0)


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("push:\n  listen: 127.0.0.1:9000\n", "push", "unauthenticated"),
        ("push:\n  github_secret_file: s\n", "push.listen", "no address"),
        ("push:\n  listen: nowhere\n  hmac_secret_file: s\n", "push.listen", "HOST:PORT"),
        ("leader:\n  renew_deadline: 20\n", "leader.renew_deadline", "less than"),
        ("leader:\n  lease_name: Not_A_Name\n", "leader.lease_name", "DNS-1123"),
        ("loop:\n  jitter: 2\n", "loop.jitter", "between 0 and 1"),
        ("loop:\n  retry_max: 1\n", "loop.retry_max", "retry_base"),
        ("loop:\n  interval: 0\n", "loop.interval", "positive"),
        ("server:\n  listen: ':99999'\n", "server.listen", "HOST:PORT"),
        ("log:\n  format: xml\n", "log.format", "json"),
        ("keys:\n  renew_days: -1\n", "keys.renew_days", "positive"),
    ],
)
def test_a_bad_value_names_its_key(
    tmp_path: pathlib.Path, extra: str, key: str, problem: str
) -> None:
    with pytest.raises(config.ConfigError, match=rf": {key}: .*{problem}"):
        load(tmp_path, extra)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:8081", ("10.0.0.1", 8081)),
        ("[::1]:80", ("::1", 80)),
        (":8080", ("", 8080)),
        ("host", None),
        ("host:port", None),
        ("127.0.0.1:65536", None),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int] | None) -> None:
    assert controlconfig.listen_address(text) == expected
