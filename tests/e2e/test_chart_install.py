"""`helm install` of the chart into the real test kube-apiserver, upgrade, and `helm uninstall`.

The control plane has no nodes, so no pod runs: what is checked is what the API server holds.
Every object of the release is created and accepted by the API server's own validation; the
ValidatingWebhookConfiguration points at the release's webhook Service, port and paths, with the
caBundle of the certificate the webhook mounts, and is live (fail-closed: with no webhook pod a
managed object cannot be created); `gitwarden audit` against the installation finds nothing
unexpected (no drift of the registration from what the installed admission document renders,
nothing dangerous held by the webhook's account); an upgrade keeps the generated CA; and the
uninstall deletes
the registration before anything it calls, which the API server's audit log shows in order.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from reconciler import webhookguard
from reconciler.guard import selfguard
from tests.chart import render
from tests.harness.controlplane import ControlPlane, tool
from webhook import registration

RELEASE = "gw-chart"
FULLNAME = f"{RELEASE}-gitwarden"
SYNC_CRD = "syncs.gitwarden.dev"
PATHS = {
    registration.PATH,
    registration.PARENT_PATH,
    registration.PROTECTED_NAMESPACE_PATH,
    registration.NAMESPACE_DELETE_PATH,
    registration.CRD_DELETE_PATH,
}

pytestmark = pytest.mark.cluster


@dataclass
class Helm:
    """helm (and kubectl) against the session's API server as the admin."""

    kubeconfig: Path
    home: Path
    namespace: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ["PATH"],
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECTL_KUBERC": "false",
            # kubectl keeps its discovery cache under HOME: keep it in the test's directory.
            "HOME": str(self.home),
        }
        command = [str(tool("helm")) if args[0] == "helm" else args[0], *args[1:]]
        env["PYTHONPATH"] = str(render.ROOT)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=180, check=False, env=env
        )
        if check:
            assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
        return done

    def manifest(self) -> list[dict[str, Any]]:
        done = self.run("helm", "get", "manifest", RELEASE, "--namespace", self.namespace)
        return [d for d in yaml.safe_load_all(done.stdout) if d]


def _adopt_existing_crd(admin: k8s.ApiClient, namespace: str) -> None:
    """Earlier modules install the Sync CRD without Helm: mark it for the release to adopt, as
    the README's migration section tells operators to do."""
    ext = k8s.ApiextensionsV1Api(admin)
    try:
        ext.read_custom_resource_definition(SYNC_CRD)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return
        raise
    patch = {
        "metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": RELEASE,
                "meta.helm.sh/release-namespace": namespace,
            },
        }
    }
    ext.patch_custom_resource_definition(SYNC_CRD, patch)


@pytest.fixture
def helm(control_plane: ControlPlane, admin: k8s.ApiClient, tmp_path: Path) -> Iterator[Helm]:
    namespace = f"gw-chart-{uuid.uuid4().hex[:8]}"
    runner = Helm(
        control_plane.admin_kubeconfig(tmp_path / "admin.kubeconfig"), tmp_path, namespace
    )
    _adopt_existing_crd(admin, namespace)
    try:
        yield runner
    finally:
        # Whatever happened, leave no registration behind that could block later tests.
        runner.run("helm", "uninstall", RELEASE, "--namespace", namespace, check=False)
        admission = k8s.AdmissionregistrationV1Api(admin)
        for name in (FULLNAME,):
            try:
                admission.delete_validating_webhook_configuration(name)
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise


def _live(helm: Helm, docs: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """The objects of `docs` as the API server holds them (kubectl get -f), in order."""
    path.write_text(yaml.safe_dump_all(docs))
    done = helm.run("kubectl", "get", "-f", str(path), "-o", "json")
    found = json.loads(done.stdout)
    return list(found["items"]) if found.get("kind") == "List" else [found]


def _deletes(control_plane: ControlPlane, since: int, docs: list[dict[str, Any]]) -> list[str]:
    """`resource/name` of each release object deleted after audit event `since`, in order.

    Only deletes that removed something count: Helm's own delete of the registration at the
    end of the uninstall finds it gone already (404), which is the point."""
    names = {(d["metadata"]["name"], d["metadata"].get("namespace", "")) for d in docs}
    deleted = []
    for event in control_plane.audit_events()[since:]:
        ref = event.get("objectRef") or {}
        code = (event.get("responseStatus") or {}).get("code", 0)
        if event.get("verb") != "delete" or ref.get("subresource") or not 200 <= code < 300:
            continue
        if (ref.get("name"), ref.get("namespace", "")) in names:
            deleted.append(f"{ref['resource']}/{ref['name']}")
    return deleted


def _self_guard_agrees(admin: k8s.ApiClient, ns: str) -> None:
    """The installed self-guard document equals the live registration."""
    data = k8s.CoreV1Api(admin).read_namespaced_config_map(f"{FULLNAME}-reconciler-selfguard", ns)
    expected = json.loads(data.data["webhook-configuration.json"])
    api = k8s.AdmissionregistrationV1Api(admin)
    live = api.api_client.sanitize_for_serialization(
        api.read_validating_webhook_configuration(FULLNAME)
    )
    assert selfguard.differences(webhookguard.target_for(expected, ns), live) == []


def test_install_upgrade_and_uninstall(
    control_plane: ControlPlane, admin: k8s.ApiClient, helm: Helm, tmp_path: Path
) -> None:
    ns = helm.namespace
    install = ("--namespace", ns, "--create-namespace", "--timeout", "60s")
    helm.run("helm", "install", RELEASE, str(render.CHART), *install)
    docs = helm.manifest()
    kinds = sorted({d["kind"] for d in docs})
    for kind in (
        "ValidatingWebhookConfiguration",
        "Deployment",
        "Service",
        "ClusterRole",
        "RoleBinding",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "CustomResourceDefinition",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
    ):
        assert kind in kinds
    live = _live(helm, docs, tmp_path / "release.yaml")
    assert [(o["kind"], o["metadata"]["name"]) for o in live] == [
        (d["kind"], d["metadata"]["name"]) for d in docs
    ]

    vwc = k8s.AdmissionregistrationV1Api(admin).read_validating_webhook_configuration(FULLNAME)
    service = k8s.CoreV1Api(admin).read_namespaced_service(f"{FULLNAME}-webhook", ns)
    secret = k8s.CoreV1Api(admin).read_namespaced_secret(f"{FULLNAME}-webhook-tls", ns)
    [port] = service.spec.ports or []
    assert (port.port, port.target_port) == (443, "https")
    for hook in vwc.webhooks:
        target = hook.client_config.service
        assert (target.namespace, target.name, target.port) == (ns, service.metadata.name, 443)
        assert target.path in PATHS
        assert hook.failure_policy == "Fail"
        assert hook.client_config.ca_bundle == secret.data["ca.crt"]  # both base64

    # `gitwarden audit` finds nothing unexpected: only the GitOps identity (the chart's
    # reconciler) holds what defeats admission, and the live registration is the one the
    # installed admission document renders.
    (tmp_path / "admission.yaml").write_text(
        k8s.CoreV1Api(admin)
        .read_namespaced_config_map(f"{FULLNAME}-webhook", ns)
        .data["admission.yaml"]
    )
    (tmp_path / "ca.crt").write_bytes(base64.b64decode(secret.data["ca.crt"]))
    audited = helm.run(
        sys.executable,
        "-m",
        "gitwarden_cli.main",
        "audit",
        "--kubeconfig",
        str(helm.kubeconfig),
        "--config",
        str(tmp_path / "admission.yaml"),
        "--name",
        FULLNAME,
        "--service",
        f"{ns}/{FULLNAME}-webhook",
        "--ca-bundle",
        str(tmp_path / "ca.crt"),
        # Helm writes the release's objects as "helm" and its release record as "Helm".
        "--manager",
        "helm",
        "--manager",
        "Helm",
        "--json",
        check=False,
    )
    assert audited.returncode == 0, audited.stdout + audited.stderr
    report = json.loads(audited.stdout)
    assert report["webhook_configuration"]["drift"] == []
    _self_guard_agrees(admin, ns)
    webhook_sa = f"{FULLNAME}-webhook"
    assert not [f for f in report["rbac"] if f["subject"]["name"] == webhook_sa]

    # The registration is live and fails closed: no webhook pod answers, so a managed object
    # cannot be created anywhere outside the excluded namespaces.
    other = f"t-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": other}})
    managed = {"metadata": {"name": "probe", "labels": {"gitwarden.dev/managed": "true"}}}
    with pytest.raises(k8s.ApiException) as refused:
        core.create_namespaced_config_map(other, managed)
    assert "failed calling webhook" in str(refused.value.body)

    # An upgrade keeps the CA the API server trusts (lookup), and the registration with it.
    helm.run(
        "helm",
        "upgrade",
        RELEASE,
        str(render.CHART),
        "--namespace",
        ns,
        "--set",
        "webhook.replicas=3",
    )
    after = k8s.CoreV1Api(admin).read_namespaced_secret(f"{FULLNAME}-webhook-tls", ns)
    assert after.data == secret.data
    again = k8s.AdmissionregistrationV1Api(admin).read_validating_webhook_configuration(FULLNAME)
    assert again.webhooks[0].client_config.ca_bundle == vwc.webhooks[0].client_config.ca_bundle
    # The reconciler's self-guard expects exactly what is live, before and after the upgrade
    # (its document is rendered with the same reused CA): it would restore nothing.
    _self_guard_agrees(admin, ns)

    since = len(control_plane.audit_events())
    helm.run("helm", "uninstall", RELEASE, "--namespace", ns)
    deleted = _deletes(control_plane, since, docs)
    vwc_ref = f"validatingwebhookconfigurations/{FULLNAME}"
    # The pre-delete hook: the live registration deleted (before-hook-creation), an empty one
    # created and deleted (hook-succeeded); only then the Services and Deployments it called.
    assert deleted[:2] == [vwc_ref, vwc_ref], deleted
    assert vwc_ref not in deleted[2:], deleted
    assert f"services/{FULLNAME}-webhook" in deleted[2:]
    assert f"deployments/{FULLNAME}-webhook" in deleted[2:]

    # Nothing is left but the Sync CRD, kept on purpose (crd.keep) with its status objects.
    left = helm.run(
        "kubectl",
        "get",
        "-f",
        str(tmp_path / "release.yaml"),
        "-o",
        "name",
        "--ignore-not-found",
        check=False,
    )
    assert left.stdout.split() == [f"customresourcedefinition.apiextensions.k8s.io/{SYNC_CRD}"]
    core.create_namespaced_config_map(other, managed)  # no registration blocks it any more
