"""The cluster's own controllers at work on GitOps-managed objects, with the webhook enforcing.

kube-controller-manager runs in the session's control plane (tests/harness/controllers.py), each
controller as its own kube-system service account. The reconciler applies signed commits as the
GitOps identity (`gitwarden reconcile --once`); then the real controllers create, update and
delete what Kubernetes always creates, updates and deletes, and the webhook must let them:
the `default` ServiceAccount and `kube-root-ca.crt` of a new protected namespace, a managed
Deployment's ReplicaSet and Pods (they carry the managed label from the pod template), the
garbage collection of a pruned Deployment, the namespace controller emptying a deleted protected
namespace. The last test reads the API server's audit log: no `system:` identity was denied by
the webhook during the whole module. There are no nodes, so Pods stay Pending.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.e2e import reconcile_manifests as m
from tests.e2e import reconcile_stack, webhook_stack
from tests.e2e.reconcile_stack import Env, ok, unique
from tests.harness import gitopsrepo

pytestmark = pytest.mark.cluster

PREFIX = "ctl"  # every namespace this module makes; the audit checks look at these
PROTECTED = {"gitwarden.dev/protected": "true"}
APP = "clusters/test/app.yaml"
CONTROLLER = webhook_stack.CONTROLLER  # system:serviceaccount:kube-system:
DELETER = "e2e-gitops-deletes-namespaces"


def protected_namespace(name: str) -> dict[str, Any]:
    ns = m.namespace(name)
    ns["metadata"]["labels"] = dict(PROTECTED)
    return ns


def managed_deployment(ns: str, name: str, replicas: int) -> dict[str, Any]:
    """A Deployment whose pod template carries the managed label (its ReplicaSets and Pods do)."""
    deployment = m.deployment(ns, name, replicas)
    deployment["spec"]["template"]["metadata"]["labels"].update(webhook_stack.MANAGED)
    return deployment


def wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    webhook_stack.wait_until(check, what, timeout)


def owned(items: list[Any], kind: str, uid: str) -> list[Any]:
    """The objects among `items` whose controller ownerReference is `kind` with `uid`."""
    return [
        o
        for o in items
        if any(
            r.kind == kind and r.uid == uid and r.controller
            for r in o.metadata.owner_references or []
        )
    ]


def creator(env: Env, resource: str, namespace: str, name: str) -> str:
    """Who created the object, from the audit log (the successful create of that name)."""
    for event in env.stack.plane.audit_events():
        ref = event.get("objectRef") or {}
        if (
            event["verb"] == "create"
            and ref.get("resource") == resource
            and ref.get("namespace") == namespace
            and ref.get("name", name) == name
            and not ref.get("subresource")
            and (event.get("responseStatus") or {}).get("code") == 201
        ):
            return str(event["user"]["username"])
    raise AssertionError(f"no successful create of {resource} {namespace}/{name} audited")


def apply(env: Env, repo: gitopsrepo.GitOpsRepo, config: Any, message: str) -> str:
    """Commit what the repository holds, run one reconcile pass, return its ChangeSet."""
    repo.commit(message, "alice")
    return ok(env.reconcile(config))


@pytest.fixture(scope="module")
def gitops_deletes_namespaces(env: Env) -> Iterator[None]:
    """The GitOps identity may delete namespaces (its own ClusterRole may not: prune keeps them)."""
    rules = [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["delete"]}]
    subject = {
        "kind": "ServiceAccount",
        "namespace": webhook_stack.GITOPS_NS,
        "name": webhook_stack.GITOPS_SA,
    }
    rbac = k8s.RbacAuthorizationV1Api(env.admin)
    rbac.create_cluster_role({"metadata": {"name": DELETER}, "rules": rules})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": DELETER},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": DELETER,
            },
            "subjects": [subject],
        }
    )
    try:
        yield
    finally:
        webhook_stack.revoke(env.admin, DELETER)


def test_new_protected_namespaces_get_the_default_account_and_root_ca(env: Env) -> None:
    ns, name = unique(PREFIX), unique("sync")
    repo = env.repo()
    repo.write(APP, [protected_namespace(ns), m.configmap(ns, "settings", {"a": "1"})])
    apply(env, repo, env.config(repo, name), "a protected namespace")

    core = k8s.CoreV1Api(env.admin)

    def present() -> bool:
        accounts = {a.metadata.name for a in core.list_namespaced_service_account(ns).items}
        maps = {c.metadata.name for c in core.list_namespaced_config_map(ns).items}
        return "default" in accounts and "kube-root-ca.crt" in maps

    wait(present, f"the default ServiceAccount and kube-root-ca.crt in {ns}")
    root_ca = core.read_namespaced_config_map("kube-root-ca.crt", ns)
    assert root_ca.data["ca.crt"] == env.stack.plane.serving_ca.cert_pem.decode()
    # Made by the controllers, as themselves, in a namespace where only GitOps may create.
    assert (
        creator(env, "serviceaccounts", ns, "default") == f"{CONTROLLER}service-account-controller"
    )
    assert (
        creator(env, "configmaps", ns, "kube-root-ca.crt") == f"{CONTROLLER}root-ca-cert-publisher"
    )
    # ... and nobody else may: the namespace is protected.
    with pytest.raises(k8s.ApiException) as caught:
        k8s.CoreV1Api(env.stack.alice).create_namespaced_config_map(
            ns, webhook_stack.configmap("x")
        )
    assert caught.value.status == 403


def test_a_managed_deployment_gets_its_replicaset_and_pods_from_the_controllers(
    env: Env,
) -> None:
    ns, name = unique(PREFIX), unique("sync")
    repo = env.repo()
    repo.write(APP, [protected_namespace(ns), managed_deployment(ns, "web", 2)])
    config = env.config(repo, name)
    out = apply(env, repo, config, "a managed deployment")
    assert m.change("Deployment.apps", ns, "web", "created") in out

    admin = env.admin
    apps, core = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)
    uid = apps.read_namespaced_deployment("web", ns).metadata.uid

    def replica_sets() -> list[Any]:
        return owned(apps.list_namespaced_replica_set(ns).items, "Deployment", uid)

    def pods_of(rs: Any) -> list[Any]:
        return owned(core.list_namespaced_pod(ns).items, "ReplicaSet", rs.metadata.uid)

    wait(lambda: len(replica_sets()) == 1, "the Deployment's ReplicaSet")
    (rs,) = replica_sets()
    wait(lambda: len(pods_of(rs)) == 2, "two Pods of the ReplicaSet")
    for obj in (rs, *pods_of(rs)):
        assert obj.metadata.labels["gitwarden.dev/managed"] == "true"
    assert all(p.status.phase == "Pending" for p in pods_of(rs))  # no nodes
    assert creator(env, "replicasets", ns, rs.metadata.name) == f"{CONTROLLER}deployment-controller"
    pod = pods_of(rs)[0].metadata.name
    assert creator(env, "pods", ns, pod) == f"{CONTROLLER}replicaset-controller"
    # The deployment controller wrote the Deployment's status and revision (allowed updates).
    wait(
        lambda: (apps.read_namespaced_deployment("web", ns).status.replicas or 0) == 2,
        "the Deployment's status",
    )
    revision = apps.read_namespaced_deployment("web", ns).metadata.annotations
    assert revision["deployment.kubernetes.io/revision"] == "1"

    # Scaled in Git: the deployment controller updates the managed ReplicaSet, which adds a Pod.
    repo.write(APP, [protected_namespace(ns), managed_deployment(ns, "web", 3)])
    out = apply(env, repo, config, "three replicas")
    assert m.change("Deployment.apps", ns, "web", "configured") in out
    wait(lambda: replica_sets()[0].spec.replicas == 3, "the ReplicaSet scaled by its controller")
    wait(lambda: len(pods_of(rs)) == 3, "a third Pod")


def test_a_pruned_deployment_is_garbage_collected_with_its_replicasets_and_pods(
    env: Env,
) -> None:
    ns, name = unique(PREFIX), unique("sync")
    repo = env.repo()
    keep = m.configmap(ns, "settings", {"a": "1"})  # prune never empties the inventory
    repo.write(APP, [protected_namespace(ns), keep, managed_deployment(ns, "web", 2)])
    config = env.config(repo, name)
    apply(env, repo, config, "a deployment")
    admin = env.admin
    apps, core = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)
    wait(lambda: len(core.list_namespaced_pod(ns).items) == 2, "the Deployment's Pods")
    (rs,) = apps.list_namespaced_replica_set(ns).items

    repo.write(APP, [protected_namespace(ns), keep])
    out = apply(env, repo, config, "the deployment leaves Git")
    assert m.change("Deployment.apps", ns, "web", "deleted") in out

    wait(
        lambda: (
            not apps.list_namespaced_replica_set(ns).items
            and not core.list_namespaced_pod(ns).items
        ),
        "the garbage collector to delete the ReplicaSet and its Pods",
    )
    deleted_by = {
        (e["objectRef"]["resource"], e["user"]["username"])
        for e in env.stack.plane.audit_events()
        if e["verb"] == "delete"
        and (e.get("objectRef") or {}).get("namespace") == ns
        and (e.get("responseStatus") or {}).get("code") == 200
    }
    gc = f"{CONTROLLER}generic-garbage-collector"
    assert ("replicasets", gc) in deleted_by, deleted_by
    assert ("pods", gc) in deleted_by, deleted_by
    assert rs.metadata.name not in {
        r.metadata.name for r in apps.list_namespaced_replica_set(ns).items
    }


def test_a_managed_services_endpoints_follow_its_changes_in_git(env: Env) -> None:
    """The endpoint controllers copy a Service's labels onto its Endpoints and EndpointSlices
    (the managed label too) and rewrite them when the Service changes: those updates pass."""
    ns, name = unique(PREFIX), unique("sync")
    repo = env.repo()
    service = m.service(ns, "web")
    repo.write(APP, [protected_namespace(ns), managed_deployment(ns, "web", 1), service])
    config = env.config(repo, name)
    apply(env, repo, config, "a service")
    discovery = k8s.DiscoveryV1Api(env.admin)

    def slices(tier: str | None) -> bool:
        found = discovery.list_namespaced_endpoint_slice(
            ns, label_selector="kubernetes.io/service-name=web"
        ).items
        return bool(found) and all(
            s.metadata.labels.get("gitwarden.dev/managed") == "true"
            and s.metadata.labels.get("tier") == tier
            for s in found
        )

    wait(lambda: slices(None), "the Service's managed EndpointSlice")
    service["metadata"]["labels"] = {"tier": "frontend"}
    service["spec"]["ports"] = [{"name": "http", "port": 81, "targetPort": 8080}]
    repo.write(APP, [protected_namespace(ns), managed_deployment(ns, "web", 1), service])
    apply(env, repo, config, "the service changes")
    wait(lambda: slices("frontend"), "the EndpointSlice updated by its controller")
    endpoints = k8s.CoreV1Api(env.admin).read_namespaced_endpoints("web", ns)
    wait(
        lambda: (
            k8s.CoreV1Api(env.admin)
            .read_namespaced_endpoints("web", ns)
            .metadata.labels.get("tier")
            == "frontend"
        ),
        "the Endpoints updated by their controller",
    )
    assert endpoints.metadata.labels["gitwarden.dev/managed"] == "true"


@pytest.mark.usefixtures("gitops_deletes_namespaces")
def test_deleting_a_protected_namespace_full_of_managed_objects_completes(env: Env) -> None:
    ns, name, other = unique(PREFIX), unique("sync"), unique(PREFIX)
    repo = env.repo()
    objects = [
        protected_namespace(ns),
        *(m.configmap(ns, f"cm-{i}", {"i": str(i)}) for i in range(5)),
        managed_deployment(ns, "web", 2),
        m.service(ns, "web"),
        m.role(ns, "readers"),
        m.role_binding(ns, "readers", "carol"),
        env.seal(ns, "db", {"password": "pw-namespace-delete"}),
    ]
    repo.write(APP, objects)
    # Deleting the namespace empties this Sync's namespace; a second one keeps it non-empty.
    repo.write("clusters/test/other.yaml", [m.namespace(other), m.configmap(other, "c", {})])
    apply(env, repo, env.config(repo, name), "a full namespace")
    admin = env.admin
    core = k8s.CoreV1Api(admin)
    wait(lambda: len(core.list_namespaced_pod(ns).items) == 2, "the Deployment's Pods")
    wait(
        lambda: bool(k8s.DiscoveryV1Api(admin).list_namespaced_endpoint_slice(ns).items),
        "the Service's EndpointSlice",
    )

    # A cluster-admin may not delete it (it holds managed objects); GitOps may.
    with pytest.raises(k8s.ApiException) as caught:
        core.delete_namespace(ns)
    assert caught.value.status == 403
    assert "denied the request" in json.loads(caught.value.body or "{}")["message"]
    k8s.CoreV1Api(env.stack.gitops).delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait(gone, f"namespace {ns} to be deleted by the namespace controller", timeout=120)
    deleted_by = {
        e["user"]["username"]
        for e in env.stack.plane.audit_events()
        if e["verb"] in ("delete", "deletecollection")
        and (e.get("objectRef") or {}).get("namespace") == ns
        and (e.get("responseStatus") or {}).get("code") == 200
    }
    assert f"{CONTROLLER}namespace-controller" in deleted_by, deleted_by


def webhook_denials(events: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """Requests our webhook refused: a 403 naming a GitWarden webhook, or its audit verdict."""
    found = []
    for event in events:
        status = event.get("responseStatus") or {}
        message = str(status.get("message", ""))
        annotations = {k: str(v) for k, v in (event.get("annotations") or {}).items()}
        by_webhook = status.get("code") == 403 and ".gitwarden.dev" in message
        verdict = any("gitwarden" in k and "denied" in v for k, v in annotations.items())
        if by_webhook or verdict:
            found.append((event["user"]["username"], event["verb"], event.get("objectRef")))
    return found


def test_no_system_identity_was_denied_by_the_webhook_during_the_module(
    env: Env, started: dt.datetime
) -> None:
    """Read from the audit log: every request of the module, none of a `system:` user refused."""
    events = [
        e
        for e in env.stack.plane.audit_events()
        if dt.datetime.fromisoformat(e["requestReceivedTimestamp"]) >= started
    ]
    system = [e for e in events if str(e["user"]["username"]).startswith("system:")]
    assert webhook_denials(system) == []
    # Not vacuous: the controllers wrote in this module's namespaces, and were let through.
    writers = {
        str(e["user"]["username"]).removeprefix(CONTROLLER)
        for e in system
        if e["verb"] in ("create", "update", "patch", "delete")
        and str((e.get("objectRef") or {}).get("namespace", "")).startswith(f"{PREFIX}-")
        and (e.get("responseStatus") or {}).get("code") in (200, 201)
    }
    expected = {
        "service-account-controller",
        "root-ca-cert-publisher",
        "deployment-controller",
        "replicaset-controller",
        "generic-garbage-collector",
        "namespace-controller",
    }
    assert expected <= writers, writers
    # And the webhook did deny in this module (a human's create, a cluster-admin's delete).
    humans = [e for e in events if not str(e["user"]["username"]).startswith("system:")]
    assert webhook_denials(humans)
    reconcile_stack.assert_never_denied(env, started)
