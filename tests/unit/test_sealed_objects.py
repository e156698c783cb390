"""Opening SealedSecret objects as the controller does: scope, template, all-or-nothing, v1 data."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest

from reconciler import manifests
from reconciler.sealed import errors, keys, objects, wire
from tests import sealed_keys

NOW = sealed_keys.EPOCH + dt.timedelta(days=100)


def secret(name: str = "db", namespace: str = "app", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"user": "admin", "password": "s3cr3t-pw"},
    }
    body.update(extra)
    return body


def sealed(scope: wire.Scope | None = None, index: int = 0, **extra: Any) -> dict[str, Any]:
    cert = sealed_keys.sealing_key(index=index).certificate
    return objects.seal(secret(**extra), cert, NOW, scope)


def open_(body: Any, ring: keys.KeyRing | None = None, **kw: Any) -> manifests.DecryptedSecret:
    chooser = objects.KeyChooser(ring or sealed_keys.ring(0), manifests.KeyHints())
    return objects.unseal(body, chooser, **kw)


def renamed(body: dict[str, Any], name: str | None = None, ns: str | None = None) -> Any:
    moved = copy.deepcopy(body)
    if name:
        moved["metadata"]["name"] = name
    if ns:
        moved["metadata"]["namespace"] = ns
    return moved


def test_opens_values_and_carries_template_metadata_type_immutable() -> None:
    body = sealed(
        metadata={"name": "db", "namespace": "app", "labels": {"tier": "db"}},
        type="kubernetes.io/basic-auth",
        immutable=True,
    )
    body["spec"]["template"]["metadata"]["name"] = "ignored"
    opened = open_(body)
    assert (opened.namespace, opened.name) == ("app", "db")
    assert opened.type == "kubernetes.io/basic-auth"
    assert opened.immutable is True
    assert opened.metadata["labels"] == {"tier": "db"}
    assert {k: v.reveal() for k, v in opened.data.items()} == {
        "user": b"admin",
        "password": b"s3cr3t-pw",
    }
    applied = opened.body_for_apply()
    assert applied["metadata"] == {"name": "db", "namespace": "app", "labels": {"tier": "db"}}
    assert applied["data"]["user"] == "YWRtaW4="


def test_seal_takes_data_and_string_data_and_strips_server_fields() -> None:
    body = objects.seal(
        {
            "kind": "Secret",
            "metadata": {
                "name": "a",
                "namespace": "b",
                "uid": "123",
                "resourceVersion": "9",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            },
            "data": {"x": "eA==", "y": "eQ=="},
            "stringData": {"y": "override"},
        },
        sealed_keys.sealing_key(index=0).certificate,
        NOW,
    )
    assert body["metadata"] == {"name": "a", "namespace": "b"}
    assert body["spec"]["template"]["metadata"] == {"name": "a", "namespace": "b"}
    opened = open_(body)
    assert opened.data["x"].reveal() == b"x"
    assert opened.data["y"].reveal() == b"override"


def test_strict_rename_or_move_fails_with_a_clear_error() -> None:
    body = sealed()
    for moved in (renamed(body, name="other"), renamed(body, ns="elsewhere")):
        with pytest.raises(errors.DecryptionError, match="no key could decrypt") as info:
            open_(moved)
        assert info.value.obj in {"app/other", "elsewhere/db"}
        assert {f.key for f in info.value.failures} == {"user", "password"}


def test_namespace_wide_may_be_renamed_but_not_moved() -> None:
    body = sealed(wire.Scope.NAMESPACE_WIDE)
    assert body["metadata"]["annotations"] == {wire.NAMESPACE_WIDE_ANNOTATION: "true"}
    assert open_(renamed(body, name="other")).name == "other"
    with pytest.raises(errors.DecryptionError, match="elsewhere/db"):
        open_(renamed(body, ns="elsewhere"))


def test_cluster_wide_opens_anywhere() -> None:
    body = sealed(wire.Scope.CLUSTER_WIDE)
    assert open_(renamed(body, name="x", ns="y")).namespace == "y"


def test_scope_comes_from_top_level_metadata_not_the_template() -> None:
    body = sealed(wire.Scope.NAMESPACE_WIDE)
    # Dropping the top-level annotation makes it strict, whatever the template still says.
    del body["metadata"]["annotations"]
    assert body["spec"]["template"]["metadata"]["annotations"]
    with pytest.raises(errors.DecryptionError):
        open_(body)
    # A strict value does not open when someone adds a wider scope later.
    strict = sealed()
    strict["metadata"]["annotations"] = {wire.CLUSTER_WIDE_ANNOTATION: "true"}
    with pytest.raises(errors.DecryptionError):
        open_(strict)


def test_one_changed_byte_fails() -> None:
    body = sealed()
    blob = bytearray(wire.decode_text(body["spec"]["encryptedData"]["user"]))
    blob[-3] ^= 0x80
    body["spec"]["encryptedData"]["user"] = wire.encode_text(bytes(blob))
    with pytest.raises(errors.DecryptionError, match="user: the value was altered"):
        open_(body)


def test_every_failing_value_is_reported_and_no_secret_is_made() -> None:
    body = sealed()
    body["spec"]["encryptedData"]["bad64"] = "%%%"
    body["spec"]["encryptedData"]["number"] = 5
    with pytest.raises(errors.DecryptionError) as info:
        open_(body)
    reasons = {f.key: f.reason for f in info.value.failures}
    assert reasons == {
        "bad64": "sealed value is not valid base64",
        "number": "value is not a string",
    }


def test_wrong_key_is_refused() -> None:
    with pytest.raises(errors.DecryptionError, match="no key could decrypt"):
        open_(sealed(index=1))
    with pytest.raises(errors.DecryptionError, match="no sealing keys"):
        open_(sealed(), ring=keys.KeyRing())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(apiVersion="bitnami.com/v1beta9"), "unsupported apiVersion"),
        (lambda b: b["metadata"].pop("namespace"), "metadata.namespace is missing"),
        (lambda b: b["metadata"].pop("name"), "metadata.name is missing"),
        (lambda b: b["spec"]["template"].update(data={"k": "{{ .user }}"}), "Go templates"),
        (lambda b: b["spec"].update(data="AAAA"), "cannot both be set"),
        (lambda b: b["spec"].update(encryptedData=["x"]), "not a mapping"),
        # Found by tests/fuzz: an integer key (YAML allows one) crashed the digest with a
        # TypeError, which `gitwarden unseal` printed as a traceback.
        (lambda b: b["spec"]["encryptedData"].update({0: ""}), "key of type int"),
        (lambda b: b["metadata"].update(labels={"when": dt.date(2026, 1, 1)}), "type date"),
    ],
)
def test_malformed_objects_are_refused_by_name(change: Any, message: str) -> None:
    body = sealed()
    change(body)
    with pytest.raises(errors.DecryptionError, match=message):
        open_(body)


def v1_form(plaintext: bytes, name: str = "old", namespace: str = "app") -> dict[str, Any]:
    key = sealed_keys.sealing_key(index=0).private_key.public_key()
    blob = wire.seal(key, plaintext, wire.label(wire.Scope.STRICT, namespace, name))
    return {
        "apiVersion": objects.API_VERSION,
        "kind": objects.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"data": wire.encode_text(blob)},
    }


def test_deprecated_spec_data_opens_or_is_refused_when_turned_off() -> None:
    inner = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "whatever", "labels": {"a": "b"}},
        "type": "Opaque",
        "data": {"k": "djE="},
        "stringData": {"s": "text"},
    }
    body = v1_form(json.dumps(inner).encode())
    opened = open_(body)
    assert (opened.namespace, opened.name, opened.type) == ("app", "old", "Opaque")
    assert opened.metadata == {"labels": {"a": "b"}}
    assert {k: v.reveal() for k, v in opened.data.items()} == {"k": b"v1", "s": b"text"}
    with pytest.raises(errors.DecryptionError, match="deprecated format and is turned off"):
        open_(body, settings=objects.Settings(accept_deprecated_data=False))
    with pytest.raises(errors.DecryptionError, match="not a JSON Secret"):
        open_(v1_form(b"not json"))


def test_reseal_keeps_scope_and_opens_with_the_new_key_only() -> None:
    body = sealed(wire.Scope.NAMESPACE_WIDE, index=0, type="Opaque")
    body["metadata"]["labels"] = {"kept": "yes"}
    chooser = objects.KeyChooser(sealed_keys.ring(0), manifests.KeyHints())
    fresh = objects.reseal(body, chooser, sealed_keys.sealing_key(index=1).certificate, NOW)
    assert fresh["metadata"] == body["metadata"]
    assert fresh["spec"]["template"] == body["spec"]["template"]
    assert fresh["spec"]["encryptedData"] != body["spec"]["encryptedData"]
    opened = open_(renamed(fresh, name="renamed"), ring=sealed_keys.ring(1))
    assert opened.data["password"].reveal() == b"s3cr3t-pw"
    with pytest.raises(errors.DecryptionError):
        open_(fresh, ring=sealed_keys.ring(0))


def test_reseal_turns_the_deprecated_form_into_encrypted_data() -> None:
    inner = {"metadata": {"labels": {"a": "b"}}, "type": "Opaque", "data": {"k": "djE="}}
    chooser = objects.KeyChooser(sealed_keys.ring(0), manifests.KeyHints())
    cert = sealed_keys.sealing_key(index=1).certificate
    fresh = objects.reseal(v1_form(json.dumps(inner).encode()), chooser, cert, NOW)
    assert "data" not in fresh["spec"]
    assert fresh["spec"]["template"] == {"metadata": {"labels": {"a": "b"}}, "type": "Opaque"}
    assert open_(fresh, ring=sealed_keys.ring(1)).data["k"].reveal() == b"v1"


def test_sealing_refuses_expired_certificates_and_missing_names() -> None:
    cert = sealed_keys.sealing_key(index=0).certificate
    later = cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(keys.KeyMaterialError, match="expired"):
        objects.seal(secret(), cert, later)
    with pytest.raises(keys.KeyMaterialError, match=r"needs metadata\.namespace"):
        objects.seal(secret(namespace=""), cert, NOW)
    with pytest.raises(keys.KeyMaterialError, match="strict scope needs a name"):
        objects.seal_raw(b"v", cert, NOW, wire.Scope.STRICT, namespace="ns")
    with pytest.raises(keys.KeyMaterialError, match="not a v1 Secret"):
        objects.seal({"kind": "ConfigMap"}, cert, NOW)
