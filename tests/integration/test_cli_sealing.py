"""`gitwarden keys new`, `seal`, `reseal` and `unseal` chained through the real command line."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
import yaml

from gitwarden_cli import main


def run(argv: list[str], stdin: bytes, monkeypatch: pytest.MonkeyPatch, capsys: object) -> str:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert main.main(argv) == main.EXIT_OK
    out: str = capsys.readouterr().out  # type: ignore[attr-defined]
    return out


def test_new_keys_seal_reseal_and_unseal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        assert main.main(["keys", "new", "--out", str(folder), "--bits", "2048"]) == 0
    assert stat.S_IMODE((old / "tls.key").stat().st_mode) == 0o600
    assert (old / "tls.key").read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert main.main(["keys", "new", "--out", str(old), "--bits", "2048"]) == main.EXIT_USAGE

    secret = b"kind: Secret\nmetadata: {name: a, namespace: b}\nstringData: {k: v}\n"
    sealed = run(["seal", "--cert", str(old / "tls.crt")], secret, monkeypatch, capsys)
    resealed = run(
        ["reseal", "--key", str(old / "tls.key"), "--cert", str(new / "tls.crt")],
        sealed.encode(),
        monkeypatch,
        capsys,
    )
    argv = ["unseal", "--key", str(new / "tls.key"), "-o", "json"]
    opened = yaml.safe_load(run(argv, resealed.encode(), monkeypatch, capsys))
    assert opened["data"] == {"k": "dg=="}
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(resealed.encode())))
    assert main.main(["unseal", "--key", str(old / "tls.key")]) == main.EXIT_FAILED


def test_unseal_of_a_document_json_cannot_carry_fails_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by tests/fuzz: an integer key under encryptedData raised a TypeError."""
    assert main.main(["keys", "new", "--out", str(tmp_path), "--bits", "2048"]) == 0
    capsys.readouterr()
    body = (
        b"apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\n"
        b"metadata: {name: db, namespace: app}\n"
        b"spec:\n  encryptedData: {password: '', 0: ''}\n"
    )
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(body)))
    assert main.main(["unseal", "--key", str(tmp_path / "tls.key")]) == main.EXIT_FAILED
    err = capsys.readouterr().err
    reason = "not a JSON object: a key of type int is not a string"
    assert err == f"gitwarden unseal: SealedSecret app/db: {reason}\n"
