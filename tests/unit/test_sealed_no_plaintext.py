"""No failure path lets a plaintext value (or its base64) into logs or exception text.

Every way a SealedSecret can fail to open is driven through the decrypt stage and the command
line, with all logging captured at DEBUG; the exception's str, repr, formatted traceback and
whole __cause__/__context__ chain are searched for the plaintext in several encodings.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import io
import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gitwarden_cli import main
from reconciler import decrypt, manifests
from reconciler.sealed import errors, objects, wire
from tests import revisions, sealed_keys

NOW = sealed_keys.EPOCH + dt.timedelta(days=100)
PLAINTEXT = "PLAINTEXT-Zq8#canary-value"
FORMS = (
    PLAINTEXT,
    base64.b64encode(PLAINTEXT.encode()).decode(),
    repr(PLAINTEXT.encode()),
    PLAINTEXT.encode().hex(),
)


def good() -> dict[str, Any]:
    return objects.seal(
        {
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "app"},
            "stringData": {"password": PLAINTEXT, "other": PLAINTEXT * 3},
        },
        sealed_keys.sealing_key(index=0).certificate,
        NOW,
    )


def flip(body: dict[str, Any], where: int) -> None:
    blob = bytearray(wire.decode_text(body["spec"]["encryptedData"]["password"]))
    blob[where] ^= 0x01
    body["spec"]["encryptedData"]["password"] = wire.encode_text(bytes(blob))


def v1(plaintext: bytes) -> dict[str, Any]:
    key = sealed_keys.sealing_key(index=0).private_key.public_key()
    blob = wire.seal(key, plaintext, b"app/db")
    return {
        "apiVersion": objects.API_VERSION,
        "kind": objects.KIND,
        "metadata": {"name": "db", "namespace": "app"},
        "spec": {"data": wire.encode_text(blob)},
    }


def mutated(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    body = copy.deepcopy(good())
    change(body)
    return body


FAILURES: dict[str, Callable[[], dict[str, Any]]] = {
    "renamed": lambda: mutated(lambda b: b["metadata"].update(name="other")),
    "moved": lambda: mutated(lambda b: b["metadata"].update(namespace="other")),
    "scope widened": lambda: mutated(
        lambda b: b["metadata"].update(annotations={wire.CLUSTER_WIDE_ANNOTATION: "true"})
    ),
    "length prefix": lambda: mutated(lambda b: flip(b, 1)),
    "rsa part": lambda: mutated(lambda b: flip(b, 40)),
    "aes part": lambda: mutated(lambda b: flip(b, -5)),
    "truncated": lambda: mutated(
        lambda b: b["spec"]["encryptedData"].update(
            password=b["spec"]["encryptedData"]["password"][:40]
        )
    ),
    "bad base64": lambda: mutated(lambda b: b["spec"]["encryptedData"].update(password="@@")),
    "template data": lambda: mutated(
        lambda b: b["spec"]["template"].update(data={"x": "{{.password}}"})
    ),
    "v1 not json": lambda: v1(PLAINTEXT.encode()),
    "v1 not utf-8": lambda: v1(b"\xff\xfe" + PLAINTEXT.encode()),
    "v1 bad data": lambda: v1(json.dumps({"data": {"k": PLAINTEXT}}).encode()),
    "v1 non-string data": lambda: v1(json.dumps({"stringData": {"k": [PLAINTEXT]}}).encode()),
    "v1 list": lambda: v1(json.dumps([PLAINTEXT]).encode()),
}


def exception_texts(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *(repr(arg) for arg in current.args)]
        if isinstance(current, errors.RevisionRejected):
            todo.extend(current.problems)
        todo += [current.__cause__, current.__context__]
    return texts


def assert_clean(texts: list[str]) -> None:
    for text in texts:
        for form in FORMS:
            assert form not in text


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_decrypt_stage_failures_carry_no_plaintext(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = FAILURES[case]()
    loaded = manifests.Manifests(
        revisions.verified("r"), (manifests.Manifest.of("s.yaml#0", body),)
    )
    with pytest.raises(errors.RevisionRejected) as info:
        decrypt.run(loaded, sealed_keys.ring(0, 1))
    assert "app/" in str(info.value) or "other/" in str(info.value)
    assert_clean(exception_texts(info.value))
    assert_clean([caplog.text])


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_cli_unseal_failures_carry_no_plaintext(
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "tls.key"
    key_file.write_bytes(sealed_keys.sealing_key(index=0).private_key_pem())
    stdin = io.TextIOWrapper(io.BytesIO(json.dumps(FAILURES[case]()).encode()))
    monkeypatch.setattr("sys.stdin", stdin)
    assert main.main(["unseal", "--key", str(key_file)]) == main.EXIT_FAILED
    out, err = capsys.readouterr()
    assert "gitwarden unseal: SealedSecret" in err
    assert_clean([out, err, caplog.text])


def test_cli_seal_of_unparsable_input_does_not_echo_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = tmp_path / "tls.crt"
    cert.write_bytes(sealed_keys.sealing_key(index=0).certificate_pem())
    broken = f"kind: Secret\nstringData:\n  password: {PLAINTEXT}\n   bad: [indent\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(broken.encode())))
    assert main.main(["seal", "--cert", str(cert)]) == main.EXIT_USAGE
    out, err = capsys.readouterr()
    assert "not valid YAML" in err
    assert_clean([out, err])


def leaky() -> None:
    try:
        int(base64.b64encode(PLAINTEXT.encode()).decode())
    except ValueError:
        raise errors.DecryptionError("app/db", ()) from None


def test_the_search_would_find_a_leak() -> None:
    # The checks above are only as good as this search: a value hidden in __context__ is found.
    with pytest.raises(errors.DecryptionError) as info:
        leaky()
    with pytest.raises(AssertionError):
        assert_clean(exception_texts(info.value))
