"""Interop with the real kubeseal (built from source by the tools step), RSA-4096 as the controller.

kubeseal seals → GitWarden opens (three scopes and --raw); GitWarden seals → kubeseal
--recovery-unseal opens; and both through the `gitwarden` command line.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitwarden_cli import main
from reconciler import decrypt, manifests
from reconciler.sealed import keys, objects, wire
from tests import revisions, sealed_keys
from tests.integration import kubeseal_tool

VALUES = {"password": "pä$$wörd\nline two", "empty": ""}


@pytest.fixture(scope="module")
def key() -> keys.SealingKey:
    return keys.certify(sealed_keys.private_key(4096), keys.SystemClock().now(), keys.KeyPolicy())


@pytest.fixture(scope="module")
def files(key: keys.SealingKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kubeseal")
    (folder / "tls.crt").write_bytes(key.certificate_pem())
    (folder / "tls.key").write_bytes(key.private_key_pem())
    return folder


def secret(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "db", "namespace": "app", "labels": {"tier": "db"}}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in VALUES.items()},
    }


def kubeseal(files: Path, *args: str, stdin: bytes) -> bytes:
    return kubeseal_tool.run(["--cert", str(files / "tls.crt"), *args], stdin, files)


def stage(body: Any, key: keys.SealingKey) -> manifests.DecryptedSecret:
    loaded = manifests.Manifests(
        revisions.verified("r"), (manifests.Manifest.of("x.yaml#0", body),)
    )
    [opened] = decrypt.run(loaded, keys.KeyRing.of([key])).secrets
    return opened


@pytest.mark.parametrize("scope", list(wire.Scope))
def test_kubeseal_sealed_secrets_open_in_gitwarden(
    scope: wire.Scope, key: keys.SealingKey, files: Path
) -> None:
    out = kubeseal(files, "--scope", scope.value, "-o", "yaml", stdin=json.dumps(secret()).encode())
    body = yaml.safe_load(out)
    assert body["spec"]["encryptedData"]["password"].startswith("Ag")
    opened = stage(body, key)
    assert {k: v.reveal().decode() for k, v in opened.data.items()} == VALUES
    assert opened.metadata["labels"] == {"tier": "db"}
    assert opened.type == "Opaque"


@pytest.mark.parametrize("scope", list(wire.Scope))
def test_kubeseal_raw_values_open_in_gitwarden(
    scope: wire.Scope, key: keys.SealingKey, files: Path
) -> None:
    args = ["--raw", "--scope", scope.value, "--from-file", "/dev/stdin"]
    if scope is not wire.Scope.CLUSTER_WIDE:
        args += ["--namespace", "app"]
    if scope is wire.Scope.STRICT:
        args += ["--name", "db"]
    raw = kubeseal(files, *args, stdin=b"raw value").decode()
    body = {
        "apiVersion": objects.API_VERSION,
        "kind": objects.KIND,
        "metadata": {
            "name": "db",
            "namespace": "app",
            "annotations": wire.scope_annotations(scope),
        },
        "spec": {"encryptedData": {"v": raw}},
    }
    assert stage(body, key).data["v"].reveal() == b"raw value"


def run_cli(argv: list[str], stdin: bytes, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> str:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert main.main(argv) == main.EXIT_OK, capsys.readouterr().err
    out: str = capsys.readouterr().out
    return out


@pytest.mark.parametrize("scope", list(wire.Scope))
def test_gitwarden_seal_opens_with_kubeseal_recovery_unseal(
    scope: wire.Scope,
    files: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["seal", "--cert", str(files / "tls.crt"), "--scope", scope.value]
    sealed = run_cli(argv, yaml.safe_dump(secret()).encode(), monkeypatch, capsys)
    recovered = kubeseal_tool.run(
        ["--recovery-unseal", "--recovery-private-key", str(files / "tls.key"), "-o", "json"],
        sealed.encode(),
        files,
    )
    body = json.loads(recovered)
    # Go writes an empty decrypted value (a nil byte slice) as JSON null.
    assert {k: v or "" for k, v in body["data"].items()} == secret()["data"]
    assert body["metadata"]["labels"] == {"tier": "db"}
    assert (body["metadata"]["namespace"], body["metadata"]["name"]) == ("app", "db")


def test_gitwarden_raw_and_key_secret_backups_interoperate(
    key: keys.SealingKey,
    files: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["seal", "--cert", str(files / "tls.crt"), "--raw", "--namespace", "app", "--name", "db"]
    raw = run_cli(argv, b"raw value", monkeypatch, capsys)
    assert not raw.endswith("\n")
    body = {
        "apiVersion": objects.API_VERSION,
        "kind": objects.KIND,
        "metadata": {"name": "db", "namespace": "app"},
        "spec": {"encryptedData": {"v": raw}},
    }
    # A backup the way the sealed-secrets README makes one: a v1 List of the key Secrets.
    backup = files / "main.key"
    backup.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "sealed-secrets-keyabcde"},
                        "type": "kubernetes.io/tls",
                        "data": {
                            "tls.crt": base64.b64encode(key.certificate_pem()).decode(),
                            "tls.key": base64.b64encode(key.private_key_pem()).decode(),
                        },
                    }
                ],
            }
        )
    )
    stdin = json.dumps(body).encode()
    ours = yaml.safe_load(run_cli(["unseal", "--key", str(backup)], stdin, monkeypatch, capsys))
    theirs = json.loads(
        kubeseal_tool.run(
            ["--recovery-unseal", "--recovery-private-key", str(backup), "-o", "json"],
            stdin,
            files,
        )
    )
    assert ours["data"] == theirs["data"] == {"v": base64.b64encode(b"raw value").decode()}
