"""The plan stage, with plain values: stage and kind order, stamping, digests, prune guards."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from reconciler import applyplan, errors, manifests, objectref, plan, secret_value
from reconciler.services import kube_keys
from tests import revisions


def obj(api: str, kind: str, name: str, namespace: str = "", **meta: Any) -> manifests.Manifest:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    body = {"apiVersion": api, "kind": kind, "metadata": metadata, "spec": {"x": 1}}
    return manifests.Manifest.of(f"apps/{kind.lower()}-{name}.yaml", body, 1)


def secret(name: str, sealed_digest: str = "d1") -> manifests.DecryptedSecret:
    return manifests.DecryptedSecret(
        source=f"apps/{name}.yaml",
        namespace="app",
        name=name,
        metadata=manifests.freeze({"labels": {"team": "a"}}),
        type="Opaque",
        immutable=None,
        data=MappingProxyType({"password": secret_value.SecretValue(b"hunter2")}),
        sealed_digest=sealed_digest,
    )


def decrypted(
    items: tuple[manifests.Manifest, ...],
    secrets: tuple[manifests.DecryptedSecret, ...] = (),
    empty_paths: tuple[str, ...] = (),
) -> manifests.DecryptedManifests:
    return manifests.DecryptedManifests(
        revisions.verified("c0ffee" * 6 + "abcd"), items, secrets, manifests.KeyHints(), 0,
        empty_paths,
    )  # fmt: skip


def inventory(
    *refs: objectref.ObjectRef, allowed: frozenset[str] = frozenset()
) -> applyplan.Inventory:
    entries: Mapping[objectref.ObjectRef, applyplan.InventoryEntry] = {
        ref: applyplan.InventoryEntry("old", "1", "apps/x.yaml", str(ref) in allowed)
        for ref in refs
    }
    return applyplan.Inventory("prev", MappingProxyType(dict(entries)))


EVERYTHING = (
    obj("apps/v1", "Deployment", "web", "app"),
    obj("v1", "Service", "web", "app"),
    obj("example.com/v1", "Widget", "w", "app"),
    obj("v1", "ConfigMap", "cfg", "app"),
    obj("rbac.authorization.k8s.io/v1", "RoleBinding", "rb", "app"),
    obj("v1", "ServiceAccount", "sa", "app"),
    obj("rbac.authorization.k8s.io/v1", "ClusterRole", "cr"),
    obj("v1", "Namespace", "app"),
    obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com"),
)


def test_stages_and_kinds_come_in_apply_order() -> None:
    built = plan.build(decrypted(EVERYTHING, (secret("db"),)), inventory(), revisions.settings())
    # Each stage is there; the cluster stage's ClusterRole gets a wave before the rest.
    assert [s.stage for s in built.stages] == [
        applyplan.Stage.CRDS, applyplan.Stage.NAMESPACES, applyplan.Stage.CLUSTER,
        applyplan.Stage.CLUSTER, applyplan.Stage.NAMESPACED,
    ]  # fmt: skip
    order = [(s.stage.value, o.ref.kind) for s in built.stages for o in s.objects]
    assert order == [
        ("crds", "CustomResourceDefinition"),
        ("namespaces", "Namespace"),
        ("cluster", "ClusterRole"),
        ("namespaced", "ServiceAccount"),
        ("namespaced", "RoleBinding"),
        ("namespaced", "Secret"),
        ("namespaced", "ConfigMap"),
        ("namespaced", "Service"),
        ("namespaced", "Deployment"),
        ("namespaced", "Widget"),
    ]
    assert [o.ref.kind for o in built.objects()] == [kind for _, kind in order]


def test_roles_come_in_a_wave_before_their_bindings() -> None:
    rbac = "rbac.authorization.k8s.io/v1"
    items = (
        obj(rbac, "RoleBinding", "b", "app"),
        obj(rbac, "Role", "r", "app"),
        obj("v1", "ConfigMap", "c", "app"),
        obj(rbac, "ClusterRoleBinding", "cb"),
        obj(rbac, "ClusterRole", "cr"),
    )
    built = plan.build(decrypted(items), inventory(), revisions.settings())
    waves = [(s.stage.value, [o.ref.kind for o in s.objects]) for s in built.stages if s.objects]
    assert waves == [
        ("cluster", ["ClusterRole"]),
        ("cluster", ["ClusterRoleBinding"]),
        ("namespaced", ["Role"]),
        ("namespaced", ["RoleBinding", "ConfigMap"]),
    ]


def test_every_object_is_stamped_and_git_cannot_override_the_stamp() -> None:
    sneaky = obj(
        "v1", "ConfigMap", "cfg", "app",
        labels={"gitwarden.dev/managed": "false", "applyset.kubernetes.io/part-of": "other"},
        annotations={"gitwarden.dev/source-path": "phish: see https://evil.example"},
    )  # fmt: skip
    built = plan.build(decrypted((sneaky,), (secret("db"),)), inventory(), revisions.settings())
    set_id = plan.applyset_id("gitwarden")
    for planned in built.objects():
        meta = planned.body_for_apply()["metadata"]
        assert meta["labels"]["gitwarden.dev/managed"] == "true"
        assert meta["labels"]["applyset.kubernetes.io/part-of"] == set_id
        assert meta["annotations"]["gitwarden.dev/source-path"] == planned.source
    assert built.applyset_id == set_id
    secret_meta = built.objects()[0].body_for_apply()["metadata"]
    assert secret_meta["labels"]["team"] == "a"


def test_the_applyset_id_follows_the_spec() -> None:
    expected = (
        base64.urlsafe_b64encode(hashlib.sha256(b"prod..Sync.gitwarden.dev").digest())
        .decode()
        .rstrip("=")
    )
    assert plan.applyset_id("prod") == f"applyset-{expected}-v1"


def test_configured_label_and_annotation_keys_are_used() -> None:
    settings = revisions.settings(managed_label_key="example.com/owner", managed_label_value="gw",
                                  source_path_annotation="example.com/file")  # fmt: skip
    [planned] = plan.build(decrypted((EVERYTHING[3],)), inventory(), settings).objects()
    meta = planned.body_for_apply()["metadata"]
    assert meta["labels"]["example.com/owner"] == "gw"
    assert meta["annotations"]["example.com/file"] == "apps/configmap-cfg.yaml"


def test_digest_is_of_the_stamped_body_and_ignores_key_order() -> None:
    one = obj("v1", "ConfigMap", "cfg", "app")
    body = dict(manifests.thaw(one.body))
    reordered = manifests.Manifest.of(one.source, dict(reversed(list(body.items()))), 1)
    first = plan.build(decrypted((one,)), inventory(), revisions.settings()).objects()[0]
    second = plan.build(decrypted((reordered,)), inventory(), revisions.settings()).objects()[0]
    assert first.digest == second.digest == manifests.digest(first.body)
    other = plan.build(decrypted((one,)), inventory(), revisions.settings(managed_label_value="x"))
    assert other.objects()[0].digest != first.digest


def test_a_secret_digest_covers_the_sealed_body_never_the_values() -> None:
    a = plan.build(decrypted((), (secret("db", "d1"),)), inventory(), revisions.settings())
    b = plan.build(decrypted((), (secret("db", "d2"),)), inventory(), revisions.settings())
    assert a.objects()[0].digest != b.objects()[0].digest
    changed_value = secret("db", "d1")
    changed_value = manifests.DecryptedSecret(
        **{
            **changed_value.__dict__,
            "data": MappingProxyType({"password": secret_value.SecretValue(b"other")}),
        }
    )
    c = plan.build(decrypted((), (changed_value,)), inventory(), revisions.settings())
    assert c.objects()[0].digest == a.objects()[0].digest
    assert a.objects()[0].is_secret
    assert "hunter2" not in repr(a)


def test_prune_is_what_left_git_in_reverse_order() -> None:
    old = [
        objectref.ObjectRef("", "ConfigMap", "app", "gone"),
        objectref.ObjectRef("apps", "Deployment", "app", "gone"),
        objectref.ObjectRef("rbac.authorization.k8s.io", "ClusterRole", "", "gone"),
        EVERYTHING[3].ref,
    ]
    built = plan.build(decrypted((EVERYTHING[3],)), inventory(*old), revisions.settings())
    assert built.prune == (old[1], old[0], old[2])
    assert built.kept == ()


def test_protected_kinds_are_kept_unless_git_allowed_it_when_last_applied() -> None:
    namespace = objectref.ObjectRef("", "Namespace", "", "old")
    crd = objectref.ObjectRef("apiextensions.k8s.io", "CustomResourceDefinition", "", "a.b")
    pvc = objectref.ObjectRef("", "PersistentVolumeClaim", "app", "data")
    allowed = objectref.ObjectRef("", "Namespace", "", "scratch")
    previous = inventory(namespace, crd, pvc, allowed, allowed=frozenset({str(allowed)}))
    built = plan.build(decrypted((EVERYTHING[3],)), previous, revisions.settings())
    assert built.prune == (allowed,)
    assert {ref for ref, _ in built.kept} == {namespace, crd, pvc}
    assert all("gitwarden.dev/prune: allow" in why for _, why in built.kept)


def test_the_prune_annotation_is_carried_for_the_inventory() -> None:
    marked = obj(
        "v1",
        "Namespace",
        "scratch",
        annotations={"gitwarden.dev/prune": "allow", "gitwarden.dev/recreate": "allow"},
    )
    [planned] = plan.build(decrypted((marked,)), inventory(), revisions.settings()).objects()
    assert planned.prune_allowed
    assert planned.recreate_allowed
    [plain] = plan.build(decrypted((EVERYTHING[3],)), inventory(), revisions.settings()).objects()
    assert not plain.prune_allowed
    assert not plain.recreate_allowed


def test_pruning_turned_off_keeps_everything() -> None:
    gone = objectref.ObjectRef("", "ConfigMap", "app", "gone")
    built = plan.build(
        decrypted((EVERYTHING[3],)), inventory(gone), revisions.settings(prune=False)
    )
    assert built.prune == ()
    assert built.kept == ((gone, "pruning is turned off (apply.prune)"),)


def test_an_empty_render_is_nothing_to_apply_and_deletes_nothing() -> None:
    gone = objectref.ObjectRef("", "ConfigMap", "app", "gone")
    with pytest.raises(plan.NothingToApply, match="renders zero objects") as caught:
        plan.build(decrypted(()), inventory(gone), revisions.settings())
    assert "c0ffeec0ffee" in str(caught.value)
    allowed = plan.build(
        decrypted(()), inventory(gone), revisions.settings(allow_prune_to_empty=True)
    )
    assert allowed.prune == (gone,)


def test_a_path_that_renders_nothing_is_nothing_to_apply() -> None:
    with pytest.raises(plan.NothingToApply, match="path\\(s\\) infra render zero objects"):
        plan.build(
            decrypted((EVERYTHING[3],), empty_paths=("infra",)), inventory(), revisions.settings()
        )


def test_a_secret_and_an_object_with_the_same_name_are_refused() -> None:
    plain = obj("v1", "Secret", "db", "app")
    with pytest.raises(plan.DuplicateObject, match="Secret app/db is declared twice"):
        plan.build(decrypted((plain,), (secret("db"),)), inventory(), revisions.settings())


@pytest.mark.parametrize(
    "item",
    [
        obj("v1", "Secret", "sealed-secrets-keyabcde", "gitwarden"),
        obj("v1", "Secret", "innocent", "gitwarden",
            labels={plan.SEALING_KEY_LABEL: "active"}),
    ],
)  # fmt: skip
def test_a_secret_posing_as_a_sealing_key_in_gitwardens_namespace_is_refused(
    item: manifests.Manifest,
) -> None:
    # Attack: a signer whom the commit policy lets change only apps/ adds a Secret there, in
    # GitWarden's namespace, labelled as a sealing key (or named like one, so that apply
    # overwrites a real key's tls.key). The key ring then holds the attacker's key, and the
    # certificate handed to kubeseal seals every new secret for the attacker.
    with pytest.raises(plan.ReservedObject, match=r"apps/secret-.*\.yaml.*sealing key") as caught:
        plan.build(decrypted((item,)), inventory(), revisions.settings())
    assert isinstance(caught.value, errors.Stalled)


def test_a_sealed_secret_posing_as_a_sealing_key_is_refused_too() -> None:
    posing = manifests.DecryptedSecret(
        source="apps/key.yaml",
        namespace="gitwarden",
        name="x",
        metadata=manifests.freeze({"labels": {plan.SEALING_KEY_LABEL: "active"}}),
        type="kubernetes.io/tls",
        immutable=None,
        data=MappingProxyType({"tls.key": secret_value.SecretValue(b"attacker")}),
        sealed_digest="d",
    )
    with pytest.raises(plan.ReservedObject, match=r"apps/key\.yaml"):
        plan.build(decrypted((), (posing,)), inventory(), revisions.settings())
    # The same Secret elsewhere is an ordinary Secret.
    elsewhere = dataclasses.replace(posing, namespace="app")
    built = plan.build(decrypted((), (elsewhere,)), inventory(), revisions.settings())
    assert [o.ref.name for o in built.objects()] == ["x"]


def test_the_sealing_key_vocabulary_agrees_with_the_key_store() -> None:
    assert plan.SEALING_KEY_LABEL == kube_keys.KEY_LABEL
    assert plan.SEALING_KEY_PREFIX == kube_keys.NAME_PREFIX == kube_keys.LEGACY_NAME


@pytest.mark.parametrize("field", ["labels", "annotations"])
@pytest.mark.parametrize("value", [["ab"], ["a"], "abc", 5, {"k": 1}])
def test_labels_or_annotations_that_are_not_string_maps_are_refused_naming_the_file(
    field: str, value: Any
) -> None:
    # Attack: `labels: [ab]` was silently stamped as {"a": "b"}; `labels: abc` or `5` crashed
    # plan with a bare ValueError/TypeError (the CLI's "internal error", no Stalled status).
    item = obj("v1", "ConfigMap", "c", "app", **{field: value})
    with pytest.raises(plan.PlanError, match=rf"apps/configmap-c\.yaml: metadata\.{field}"):
        plan.build(decrypted((item,)), inventory(), revisions.settings())
    sealed = dataclasses.replace(secret("db"), metadata=manifests.freeze({field: value}))
    with pytest.raises(plan.PlanError, match=rf"apps/db\.yaml: metadata\.{field}"):
        plan.build(decrypted((), (sealed,)), inventory(), revisions.settings())
