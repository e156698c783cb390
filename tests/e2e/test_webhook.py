"""The admission webhook end to end: real kube-apiserver, real OPA, gunicorn over TLS.

One module-scoped stack: OPA loaded with policies/admission and a configuration, the webhook
served by `gitwarden webhook serve`, and the ValidatingWebhookConfiguration generated from the
same configuration, registered in the real API server. Every verdict below is the API
server's answer to a real client.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from cryptography import x509
from kubernetes import client as k8s

from tests.e2e.webhook_stack import (
    BREAK_GLASS,
    GITOPS_NS,
    GITOPS_SA,
    HOOK,
    MANAGED,
    REPO,
    Stack,
    configmap,
    create_managed,
    denied_message,
    deployment,
    running_stack,
    wait_until,
)
from tests.harness import controllers
from tests.harness.controlplane import ControlPlane
from webhook import config as config_mod

pytestmark = pytest.mark.cluster

PARENT_HOOK = "parent.gitwarden.gitwarden.dev"

CONFIG = config_mod.AdmissionConfig(
    namespace=GITOPS_NS,
    gitops_service_account=GITOPS_SA,
    repository_url=REPO,
    default_path="clusters/test/",
    break_glass_groups=(BREAK_GLASS,),
    namespace_modes={"mode-warn": "warn", "mode-audit": "audit"},
)


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane, admin: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The webhook stack for CONFIG, for this module's tests."""
    with running_stack(control_plane, admin, tmp_path_factory.mktemp("webhook-e2e"), CONFIG) as s:
        yield s


# -------------------------------------------------------------------------------- tests


def test_gitops_identity_creates_updates_and_deletes_managed_objects(
    stack: Stack, namespace: str
) -> None:
    """The GitOps service account may create, update and delete managed objects."""
    core, apps = k8s.CoreV1Api(stack.gitops), k8s.AppsV1Api(stack.gitops)
    create_managed(stack, namespace)
    core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "v2"}})
    core.patch_namespaced_secret("sec", namespace, {"stringData": {"password": "rotated-e2e"}})
    apps.patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 2}})
    assert core.read_namespaced_config_map("cm", namespace).data == {"k": "v2"}
    core.delete_namespaced_config_map("cm", namespace)
    core.delete_namespaced_secret("sec", namespace)
    apps.delete_namespaced_deployment("web", namespace)
    assert controllers.own_names(core.list_namespaced_config_map(namespace).items) == []


@pytest.mark.parametrize("who", ["admin", "alice"])
def test_admin_and_ordinary_user_are_denied_with_a_git_message(
    stack: Stack, admin: k8s.ApiClient, namespace: str, who: str
) -> None:
    """system:masters and an RBAC-entitled user cannot change managed objects, and are told how."""
    create_managed(stack, namespace)
    actor = admin if who == "admin" else stack.alice
    core, apps = k8s.CoreV1Api(actor), k8s.AppsV1Api(actor)
    message = denied_message(
        lambda: apps.patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 5}})
    )
    assert f"Deployment {namespace}/web is managed by GitOps: {who} may not update it" in message
    assert f"clusters/test/ on branch main of {REPO}" in message
    denied_message(lambda: core.delete_namespaced_secret("sec", namespace))
    denied_message(lambda: core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "x"}}))
    denied_message(lambda: core.create_namespaced_config_map(namespace, configmap("new", MANAGED)))
    # Nothing changed.
    assert (
        k8s.AppsV1Api(stack.gitops).read_namespaced_deployment("web", namespace).spec.replicas == 1
    )


def test_kubectl_shows_how_to_change_it_through_git(stack: Stack, namespace: str) -> None:
    """A user running kubectl sees the denial and where in Git to make the change."""
    create_managed(stack, namespace)
    result = stack.kubectl(
        stack.alice_creds, "-n", namespace, "scale", "deployment/web", "--replicas=3"
    )
    assert result.returncode != 0
    assert "denied the request" in result.stderr
    assert "Make the change in Git instead" in result.stderr
    assert REPO in result.stderr


def test_unmanaged_objects_in_unprotected_namespaces_never_reach_the_webhook(
    stack: Stack, admin: k8s.ApiClient, namespace: str
) -> None:
    """Creates, updates and deletes of unlabelled objects are never sent to the webhook."""
    before = stack.metric("gitwarden_webhook_decisions_total")
    core = k8s.CoreV1Api(stack.alice)
    core.create_namespaced_config_map(namespace, configmap("free"))
    core.patch_namespaced_config_map("free", namespace, {"data": {"k": "edited"}})
    core.delete_namespaced_config_map("free", namespace)
    k8s.CoreV1Api(admin).create_namespaced_config_map(namespace, configmap("free2"))
    assert stack.metric("gitwarden_webhook_decisions_total") == before
    assert f"ConfigMap {namespace}/free" not in stack.webhook.log()


def test_controllers_write_status_scale_and_delete_managed_objects(
    stack: Stack, namespace: str
) -> None:
    """Status by a controller, scale by the HPA and delete of a dependent by the GC are allowed."""
    create_managed(stack, namespace)
    plane = stack.plane
    controller = k8s.AppsV1Api(plane.as_service_account("kube-system", "deployment-controller"))
    controller.patch_namespaced_deployment_status(
        "web", namespace, {"status": {"observedGeneration": 1, "replicas": 1}}
    )
    hpa = k8s.AppsV1Api(plane.as_service_account("kube-system", "horizontal-pod-autoscaler"))
    hpa.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 4}})
    assert (
        k8s.AppsV1Api(stack.gitops).read_namespaced_deployment("web", namespace).spec.replicas == 4
    )
    # The garbage collector deletes dependents only: Git declares the Deployment owned.
    owner = k8s.CoreV1Api(stack.gitops).read_namespaced_config_map("cm", namespace)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": owner.metadata.uid}
    k8s.AppsV1Api(stack.gitops).patch_namespaced_deployment(
        "web", namespace, {"metadata": {"ownerReferences": [ref]}}
    )
    gc = k8s.AppsV1Api(plane.as_service_account("kube-system", "generic-garbage-collector"))
    gc.delete_namespaced_deployment("web", namespace)
    # The same actions by a person are denied: the webhook really saw them.
    alice = k8s.AppsV1Api(stack.alice)
    k8s.AppsV1Api(stack.gitops).create_namespaced_deployment(namespace, deployment("web2"))
    denied_message(
        lambda: alice.patch_namespaced_deployment_status(
            "web2", namespace, {"status": {"replicas": 9}}
        )
    )
    message = denied_message(
        lambda: alice.patch_namespaced_deployment_scale(
            "web2", namespace, {"spec": {"replicas": 9}}
        ),
        hook="parent.gitwarden.gitwarden.dev",
    )
    assert f"deployments {namespace}/web2 is managed by GitOps" in message
    assert "alice may not update the scale of it" in message


def test_break_glass_is_allowed_with_a_warning_and_an_audit_annotation(
    stack: Stack, namespace: str
) -> None:
    """A break-glass user's change goes through; kubectl warns and the audit log records it."""
    create_managed(stack, namespace)
    result = stack.kubectl(
        stack.oncall_creds, "-n", namespace, "label", "configmap/cm", "hotfix=yes"
    )
    assert result.returncode == 0, result.stderr
    assert "Warning: break-glass: oncall changed ConfigMap" in result.stderr
    assert "GitWarden will revert it" in result.stderr

    def annotated() -> bool:
        for event in stack.plane.audit_events():
            annotations = event.get("annotations", {})
            value = annotations.get(f"{HOOK}/break-glass")
            if value == f"oncall update ConfigMap {namespace}/cm":
                return bool(event["user"]["username"] == "oncall")
        return False

    wait_until(annotated, "the break-glass audit annotation")


def test_protected_namespace_creates_need_gitops(stack: Stack, admin: k8s.ApiClient) -> None:
    """In a namespace labelled protected, only GitOps may create, even unlabelled objects."""
    ns = f"prot-{uuid.uuid4().hex[:8]}"
    label = CONFIG.protected_namespace_label
    k8s.CoreV1Api(admin).create_namespace(
        {"metadata": {"name": ns, "labels": {label.key: label.value}}}
    )
    admin_core = k8s.CoreV1Api(admin)
    message = denied_message(
        lambda: admin_core.create_namespaced_config_map(ns, configmap("x")),
        hook="protected-namespaces.gitwarden.gitwarden.dev",
    )
    assert f"ConfigMap {ns}/x is in a protected namespace: admin may not create it" in message
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(ns, configmap("x"))
    # Updates of unmanaged objects are not guarded by the namespace label.
    admin_core.patch_namespaced_config_map("x", ns, {"data": {"k": "admin-edit"}})


@pytest.mark.parametrize("ns", ["kube-system", GITOPS_NS])
def test_kube_system_and_our_namespace_are_never_blocked(
    stack: Stack, admin: k8s.ApiClient, ns: str
) -> None:
    """Even objects labelled managed in kube-system and GitWarden's namespace stay writable."""
    core = k8s.CoreV1Api(admin)
    name = f"lock-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_config_map(ns, configmap(name, MANAGED))
    core.patch_namespaced_config_map(name, ns, {"data": {"k": "changed"}})
    assert core.read_namespaced_config_map(name, ns).data == {"k": "changed"}
    core.delete_namespaced_config_map(name, ns)
    assert name not in {c.metadata.name for c in core.list_namespaced_config_map(ns).items}


def test_opa_down_denies_in_time_and_recovers_without_restart(stack: Stack, namespace: str) -> None:
    """With OPA stopped, changes are denied quickly with a clear message; then it recovers."""
    create_managed(stack, namespace)
    core = k8s.CoreV1Api(stack.alice)
    pid = (
        stack.webhook.process.popen.pid
        if stack.webhook.process and stack.webhook.process.popen
        else 0
    )
    stack.opa.stop()
    try:
        started = time.monotonic()
        message = denied_message(
            lambda: core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "x"}})
        )
        assert time.monotonic() - started < CONFIG.timeout_seconds
        assert "policy engine unavailable" in message
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(  # noqa: S310 - loopback URL built here
                f"{stack.webhook.url}/readyz", context=stack.webhook.tls_context(), timeout=5
            )
        with excinfo.value as error:
            assert error.code == 503
    finally:
        stack.opa.start()
    message = denied_message(
        lambda: core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "x"}})
    )
    assert "is managed by GitOps" in message
    assert stack.webhook.process is not None
    assert stack.webhook.process.popen is not None
    assert stack.webhook.process.popen.pid == pid
    assert stack.metric('gitwarden_webhook_policy_engine_errors_total{kind="unavailable"}') >= 1


MALFORMED_BODIES = {
    "garbage": b"\x00\xffnot json",
    "wrong-version": json.dumps(
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}
    ).encode(),
    "wrong-kind": json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}).encode(),
    "no-request": json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
    ).encode(),
    "oversized": b'{"apiVersion": "admission.k8s.io/v1", "pad": "'
    + b"A" * (7 * 1024 * 1024)
    + b'"}',
}


@pytest.mark.parametrize("name", sorted(MALFORMED_BODIES))
def test_malformed_bodies_over_tls_get_400(stack: Stack, name: str) -> None:
    """Straight to gunicorn over TLS: a 400 with a reason, never a 500 and never an allow."""
    request = urllib.request.Request(  # noqa: S310 - loopback URL built here
        f"{stack.webhook.url}/validate",
        data=MALFORMED_BODIES[name],
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, context=stack.webhook.tls_context(), timeout=30)  # noqa: S310
    with excinfo.value as error:
        assert error.code == 400
        body = json.loads(error.read())
    assert body["reason"]
    assert "allowed" not in json.dumps(body)


def test_tls_is_negotiated_at_1_3_with_a_modern_client(stack: Stack) -> None:
    """A default client gets TLS 1.3 (the server's floor, 1.2, is unit-tested)."""
    host, port = stack.webhook.url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        stack.webhook.tls_context().wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() == "TLSv1.3"


def _served_serial(stack: Stack) -> int:
    host, port = stack.webhook.url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        stack.webhook.tls_context().wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_rotated_certificate_is_picked_up_without_dropping_requests(stack: Stack) -> None:
    """Rewrite the certificate files: new connections get the new one, no request fails."""
    old_serial = _served_serial(stack)
    errors: list[str] = []
    done = threading.Event()

    def hammer() -> None:
        count = 0
        while not done.is_set() and count < 2000:
            count += 1
            try:
                with urllib.request.urlopen(  # noqa: S310 - loopback URL built here
                    f"{stack.webhook.url}/healthz", context=stack.webhook.tls_context(), timeout=5
                ) as resp:
                    if resp.status != 200:
                        errors.append(f"HTTP {resp.status}")
            except Exception as exc:
                errors.append(repr(exc))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        new = stack.plane.webhook_serving_cert()
        crt, key = stack.webhook.cert_paths
        # Write to temporary files and rename, as a Secret volume's symlink swap does.
        tmp_crt, tmp_key = crt.with_name("tls.crt.new"), key.with_name("tls.key.new")
        tmp_crt.write_bytes(new.cert_pem)
        tmp_key.write_bytes(new.key_pem)
        tmp_key.chmod(0o600)
        os.replace(tmp_key, key)
        os.replace(tmp_crt, crt)
        new_serial = x509.load_pem_x509_certificate(new.cert_pem).serial_number
        wait_until(lambda: _served_serial(stack) == new_serial, "the rotated certificate", 15)
    finally:
        done.set()
        thread.join(timeout=30)
    assert new_serial != old_serial
    assert errors == []


def test_metrics_sum_over_every_worker(stack: Stack) -> None:
    """Decisions served by different gunicorn workers all show up in /metrics."""
    body = json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "m",
                "operation": "DELETE",
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "name": "metrics-probe",
                "namespace": "metrics",
                "userInfo": {"username": "metrics-probe"},
                "oldObject": {"metadata": {"name": "metrics-probe", "labels": MANAGED}},
            },
        }
    ).encode()
    before = stack.metric(
        'gitwarden_webhook_decisions_total{mode="enforce",reason="not-gitops",result="deny"}'
    )
    answers: list[bool] = []

    def send(count: int) -> None:
        for _ in range(count):  # a new connection each time, accepted by whichever worker is free
            request = urllib.request.Request(  # noqa: S310 - loopback URL built here
                f"{stack.webhook.url}/validate",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(  # noqa: S310 - loopback URL built here
                request, context=stack.webhook.tls_context(), timeout=5
            ) as resp:
                answers.append(json.loads(resp.read())["response"]["allowed"])

    def serving_pids() -> set[str]:
        log = stack.webhook.log()
        return set(re.findall(r"\[(\d+)\] m delete ConfigMap metrics/metrics-probe", log))

    # Batches of concurrent new connections until two workers have answered (bounded).
    for _ in range(10):
        threads = [threading.Thread(target=send, args=(10,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        if len(serving_pids()) >= 2:
            break
    n = len(answers)
    assert n % 40 == 0
    assert n > 0
    assert not any(answers)
    after = stack.metric(
        'gitwarden_webhook_decisions_total{mode="enforce",reason="not-gitops",result="deny"}'
    )
    assert after - before == n
    pids = serving_pids()
    assert len(pids) >= 2, f"all {n} requests were served by one worker: {pids}"


@pytest.mark.parametrize("mode", ["warn", "audit"])
def test_per_namespace_modes_allow_and_tell(stack: Stack, admin: k8s.ApiClient, mode: str) -> None:
    """In a warn namespace kubectl shows the Git message; in an audit one the audit log has it."""
    ns = f"mode-{mode}"
    k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": ns}})
    create_managed(stack, ns)
    result = stack.kubectl(stack.alice_creds, "-n", ns, "label", "configmap/cm", f"{mode}=yes")
    assert result.returncode == 0, result.stderr
    if mode == "warn":
        assert f"Warning: ConfigMap {ns}/cm is managed by GitOps" in result.stderr
        assert "Make the change in Git instead" in result.stderr
        return
    assert "Warning" not in result.stderr

    def audited() -> bool:
        for event in stack.plane.audit_events():
            value = event.get("annotations", {}).get(f"{HOOK}/violation", "")
            if f"ConfigMap {ns}/cm is managed by GitOps: alice may not update it" in value:
                return True
        return False

    wait_until(audited, "the audit-mode annotation")


def test_every_scale_reads_the_parent_once_and_fresh_even_when_its_decision_is_cached(
    stack: Stack, namespace: str
) -> None:
    """The parent's labels are read from the API server for each request, on the worker's
    event loop: a repeated review whose decision is cached still waits for that read, so a
    label the GitOps identity removes, or puts back, is decided on at once. Each request
    reads its parent exactly once (a cache miss goes on to OPA with the read it made)."""
    gitops, alice = k8s.AppsV1Api(stack.gitops), k8s.AppsV1Api(stack.alice)
    gitops.create_namespaced_deployment(namespace, deployment("web"))

    def scale(replicas: int) -> object:
        return alice.patch_namespaced_deployment_scale(
            "web", namespace, {"spec": {"replicas": replicas}}
        )

    def relabel(value: str | None) -> None:
        patch = {"metadata": {"labels": {"gitwarden.dev/managed": value}}}
        gitops.patch_namespaced_deployment("web", namespace, patch)

    reads = "gitwarden_webhook_lookup_duration_seconds_count"
    hits = 'gitwarden_webhook_decision_cache_total{result="hit"'
    before, hits_before = stack.metric(reads), stack.metric(hits)
    for _ in range(3):  # the first is OPA's decision, the repeats the cache's
        denied_message(lambda: scale(2), hook=PARENT_HOOK)
    relabel(None)
    scale(2)  # no longer managed: allowed at once
    scale(2)  # and again, on a fresh read
    relabel("true")
    message = denied_message(lambda: scale(2), hook=PARENT_HOOK)
    assert f"deployments {namespace}/web is managed by GitOps" in message

    # As many reads as decisions on this Scale (the API server may call a webhook more than
    # once for one PATCH), and no other.
    def decided() -> int:  # the log is written behind the answers: wait for its lines
        return stack.webhook.log().count(f" update Scale {namespace}/web/scale by alice: ")

    wait_until(lambda: decided() >= 6, "the log lines of six decisions")
    time.sleep(0.5)
    assert stack.metric(reads) - before == decided()
    assert stack.metric(hits) - hits_before >= 3
    assert gitops.read_namespaced_deployment("web", namespace).spec.replicas == 2
