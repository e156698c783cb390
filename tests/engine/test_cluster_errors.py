"""Every client failure comes out of the cluster adapter as our error, chained, quoting no body."""

from __future__ import annotations

import pathlib

import pytest
import urllib3
from kubernetes import client as k8s

from reconciler import apply, cluster, cluster_errors, config, errors, objectref
from tests.engine.conftest import SETTINGS
from tests.engine_plans import configmap, plan_of, planned
from tests.harness.controlplane import ControlPlane, free_port

pytestmark = pytest.mark.cluster
LEAKY = "leaky-value-from-git"


def test_an_unreachable_api_server_is_transient_and_nothing_of_urllib3_escapes(
    control_plane: ControlPlane,
) -> None:
    configuration = k8s.Configuration(host=f"https://127.0.0.1:{free_port()}")  # nobody listens
    configuration.ssl_ca_cert = str(control_plane.ca_file)
    nowhere = cluster.Cluster(configuration, SETTINGS)
    with pytest.raises(cluster_errors.Unreachable) as caught:
        nowhere.refresh_discovery()
    assert isinstance(caught.value, errors.Transient)
    assert isinstance(caught.value.__cause__, urllib3.exceptions.HTTPError | OSError)
    assert "no answer from the API server" in str(caught.value)


def test_a_request_slower_than_the_timeout_is_transient(admin: k8s.ApiClient) -> None:
    impatient = cluster.Cluster(
        admin.configuration, config.ApplyConfig(qps=0, request_timeout=0.001)
    )
    with pytest.raises(cluster_errors.Unreachable) as caught:
        impatient.refresh_discovery()
    assert isinstance(caught.value.__cause__, urllib3.exceptions.HTTPError | OSError)


def test_a_user_without_rbac_is_forbidden_and_stalled(
    control_plane: ControlPlane, namespace: str
) -> None:
    nobody = control_plane.as_user("nobody-without-rbac")
    adapter = cluster.Cluster(nobody.configuration, SETTINGS)
    ref = objectref.ObjectRef("", "ConfigMap", namespace, "x")
    with pytest.raises(cluster_errors.Forbidden) as caught:
        adapter.apply(ref, configmap(namespace, "x", {"k": LEAKY}))
    assert isinstance(caught.value, errors.Stalled)
    assert caught.value.status == 403
    assert str(caught.value) == f"apply ConfigMap {namespace}/x: HTTP 403 Forbidden (Forbidden)"


def test_a_forbidden_cluster_wide_list_falls_back_to_the_namespaces(
    control_plane: ControlPlane, admin: k8s.ApiClient, namespace: str
) -> None:
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "cm"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "cm"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm"},
            "subjects": [{"kind": "User", "name": "ns-lister"}],
        },
    )
    k8s.CoreV1Api(admin).create_namespaced_config_map(
        namespace, {"metadata": {"name": "a", "labels": {"team": "x"}}}
    )
    adapter = cluster.Cluster(control_plane.as_user("ns-lister").configuration, SETTINGS)
    resource = adapter.resource("", "ConfigMap")
    found = adapter.list_labelled(resource, "team=x", [namespace])
    assert [r.name for r in found] == ["a"]
    with pytest.raises(cluster_errors.Forbidden):
        adapter.list_labelled(resource, "team=x")


def test_an_invalid_object_is_stalled_naming_the_field_never_the_value(
    target: cluster.Cluster, namespace: str, applyset: str
) -> None:
    bad = configmap(namespace, "bad", {})
    bad["metadata"]["labels"] = {"tier": f"{LEAKY} not a label value!"}
    with pytest.raises(apply.ApplyStalled) as caught:
        apply.run(plan_of([planned(bad, applyset=applyset)], applyset=applyset), target, SETTINGS)
    cause = caught.value.__cause__
    assert isinstance(cause, cluster_errors.Invalid)
    assert not isinstance(cause, cluster_errors.Immutable)
    assert cause.status == 422
    assert cause.fields == ("metadata.labels",)
    assert "invalid metadata.labels" in str(caught.value)
    assert LEAKY not in str(caught.value) + repr(cause.args)


def test_a_kind_nobody_serves_is_stalled(
    target: cluster.Cluster, namespace: str, applyset: str
) -> None:
    ghost = {
        "apiVersion": "nowhere.example.com/v1",
        "kind": "Ghost",
        "metadata": {"name": "g", "namespace": namespace},
    }
    with pytest.raises(
        apply.ApplyStalled, match=r"no resource for kind Ghost\.nowhere\.example\.com"
    ):
        apply.run(plan_of([planned(ghost, applyset=applyset)], applyset=applyset), target, SETTINGS)


def test_a_delete_whose_precondition_no_longer_holds_is_a_transient_conflict(
    target: cluster.Cluster, admin: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(admin)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    ref = objectref.ObjectRef("", "ConfigMap", namespace, "c")
    seen = target.read_meta(ref)
    assert seen is not None
    core.patch_namespaced_config_map("c", namespace, {"data": {"changed": "yes"}})
    with pytest.raises(cluster_errors.Conflict) as caught:
        target.delete(ref, seen)
    assert isinstance(caught.value, errors.Transient)
    assert core.read_namespaced_config_map("c", namespace).data == {"changed": "yes"}


def test_a_server_certificate_from_the_wrong_ca_is_unreachable_not_an_api_exception(
    control_plane: ControlPlane, tmp_path: pathlib.Path
) -> None:
    wrong_ca = tmp_path / "other-ca.crt"
    wrong_ca.write_bytes(control_plane.webhook_ca.cert_pem)  # a CA that did not sign the server
    configuration = k8s.Configuration(host=control_plane.url)
    configuration.ssl_ca_cert = str(wrong_ca)
    with pytest.raises(cluster_errors.Unreachable) as caught:
        cluster.Cluster(configuration, SETTINGS).refresh_discovery()
    assert isinstance(
        caught.value.__cause__, k8s.ApiException | urllib3.exceptions.HTTPError | OSError
    )
    assert "certificate" not in str(caught.value)  # only the type is quoted
