"""Prune's apply-time guard and the immutable-field rule, against the real kube-apiserver."""

from __future__ import annotations

import uuid
from types import MappingProxyType

import pytest
from kubernetes import client as k8s

from reconciler import (
    apply,
    applyplan,
    changeset,
    cluster,
    config,
    errors,
    objectref,
    status,
    wiring,
)
from tests.engine.conftest import SETTINGS, Counted
from tests.engine_plans import configmap, deployment, plan_of, planned
from tests.harness import controllers

pytestmark = pytest.mark.cluster
Action = changeset.Action


def cm_ref(namespace: str, name: str) -> objectref.ObjectRef:
    return objectref.ObjectRef("", "ConfigMap", namespace, name)


def test_prune_deletes_exactly_the_listed_objects_that_are_still_ours(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    names = ("keep", "gone", "relabelled")
    first = plan_of(
        [planned(configmap(namespace, n, {"n": n}), applyset=applyset) for n in names],
        applyset=applyset,
    )
    done = apply.run(first, target, SETTINGS)
    core = k8s.CoreV1Api(counted.plane.admin())
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "unrelated"}})
    # Someone took "relabelled" out of GitWarden's hands: it must survive the prune.
    core.patch_namespaced_config_map(
        "relabelled", namespace, {"metadata": {"labels": {config.MANAGED_LABEL_KEY: None}}}
    )
    previous = status.inventory_after(first, done, complete=True)
    second = plan_of(
        [planned(configmap(namespace, "keep", {"n": "keep"}), applyset=applyset)],
        applyset=applyset,
        previous=previous,
        prune=[
            cm_ref(namespace, "gone"),
            cm_ref(namespace, "relabelled"),
            cm_ref(namespace, "never-was"),
        ],
    )
    result = apply.run(second, target, SETTINGS)
    pruned = {c.ref.name: (c.action, c.detail) for c in result.changes if c.stage == "prune"}
    assert pruned == {
        "gone": (Action.DELETED, ""),
        "relabelled": (Action.SKIPPED, f"no longer labelled {config.MANAGED_LABEL_KEY}=true"),
        "never-was": (Action.DELETED, "already gone"),
    }
    left = set(controllers.own_names(core.list_namespaced_config_map(namespace).items))
    assert left == {"keep", "relabelled", "unrelated"}
    # The skipped object leaves the inventory: it is not ours any more.
    entries = status.inventory_after(second, result, complete=True).entries
    assert set(entries) == {cm_ref(namespace, "keep")}


def test_prune_is_off_when_configured_off(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    first = plan_of([planned(configmap(namespace, "a", {}), applyset=applyset)], applyset=applyset)
    done = apply.run(first, target, SETTINGS)
    second = plan_of(
        [],
        applyset=applyset,
        previous=status.inventory_after(first, done, complete=True),
        prune=[cm_ref(namespace, "a")],
    )
    assert apply.run(second, target, config.ApplyConfig(qps=0, prune=False)).changes == ()
    assert k8s.CoreV1Api(counted.plane.admin()).read_namespaced_config_map("a", namespace)


def test_an_immutable_field_change_is_stalled_naming_the_object(
    target: cluster.Cluster, admin: k8s.ApiClient, namespace: str, applyset: str
) -> None:
    first = plan_of(
        [
            planned(configmap(namespace, "cm", {"a": "1"}), applyset=applyset),
            planned(deployment(namespace, "web", app="v1"), "apps/web.yaml", applyset=applyset),
        ],
        applyset=applyset,
    )
    apply.run(first, target, SETTINGS)
    moved = plan_of(
        [
            planned(configmap(namespace, "cm", {"a": "2"}), applyset=applyset),
            planned(deployment(namespace, "web", app="v2"), "apps/web.yaml", applyset=applyset),
        ],
        applyset=applyset,
    )
    with pytest.raises(apply.ApplyStalled) as caught:
        apply.run(moved, target, SETTINGS)
    message = str(caught.value)
    assert f"Deployment.apps {namespace}/web" in message
    assert "apps/web.yaml" in message
    assert "spec.selector" in message
    assert caught.value.reason == "ImmutableField"
    # The stage is checked (dryRun=All) before any of it is written: the ConfigMap beside the
    # refused Deployment was not applied either.
    assert caught.value.changes.changes == ()
    live = k8s.CoreV1Api(admin).read_namespaced_config_map("cm", namespace)
    assert live.data == {"a": "1"}


def test_an_immutable_field_change_recreates_when_allowed(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    apply.run(
        plan_of(
            [planned(deployment(namespace, "web", app="v1"), recreate=True, applyset=applyset)],
            applyset=applyset,
        ),
        target,
        SETTINGS,
    )
    apps = k8s.AppsV1Api(counted.plane.admin())
    old_uid = apps.read_namespaced_deployment("web", namespace).metadata.uid
    result = apply.run(
        plan_of(
            [planned(deployment(namespace, "web", app="v2"), recreate=True, applyset=applyset)],
            applyset=applyset,
        ),
        target,
        SETTINGS,
    )
    (change,) = result.changes
    assert (change.action, change.detail) == (
        Action.CONFIGURED,
        "recreated: an immutable field changed",
    )
    live = apps.read_namespaced_deployment("web", namespace)
    assert live.metadata.uid != old_uid
    assert live.spec.selector.match_labels == {"app": "v2"}


def test_a_services_cluster_ip_is_immutable_too(
    target: cluster.Cluster, namespace: str, applyset: str
) -> None:
    def service(ip: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "svc", "namespace": namespace},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
        }

    apply.run(
        plan_of([planned(service("10.0.0.77"), applyset=applyset)], applyset=applyset),
        target,
        SETTINGS,
    )
    with pytest.raises(apply.ApplyStalled, match=f"Service {namespace}/svc"):
        apply.run(
            plan_of([planned(service("10.0.0.78"), applyset=applyset)], applyset=applyset),
            target,
            SETTINGS,
        )


def test_prune_never_deletes_an_object_that_another_applyset_took_over(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    # Attack: the object moved to another GitWarden Sync's path (or someone relabelled its
    # part-of label to another set). It still carries the managed label, so a check of that
    # label alone made this set's next pass delete the other set's object.
    first = plan_of(
        [planned(configmap(namespace, "moved", {"n": "1"}), applyset=applyset)],
        applyset=applyset,
    )
    done = apply.run(first, target, SETTINGS)
    other = status.applyset_id("another-sync")
    core = k8s.CoreV1Api(counted.plane.admin())
    core.patch_namespaced_config_map(
        "moved", namespace, {"metadata": {"labels": {status.APPLYSET_PART_OF_LABEL: other}}}
    )
    second = plan_of(
        [planned(configmap(namespace, "stays", {}), applyset=applyset)],
        applyset=applyset,
        previous=status.inventory_after(first, done, complete=True),
        prune=[cm_ref(namespace, "moved")],
    )
    diffs = apply.diff(second, target, SETTINGS)
    assert [(d.ref.name, d.action) for d in diffs if d.ref.name == "moved"] == [
        ("moved", Action.SKIPPED)
    ]
    result = apply.run(second, target, SETTINGS)
    pruned = [(c.ref.name, c.action) for c in result.changes if c.stage == "prune"]
    assert pruned == [("moved", Action.SKIPPED)]
    labels = core.read_namespaced_config_map("moved", namespace).metadata.labels
    assert labels[status.APPLYSET_PART_OF_LABEL] == other


def test_a_kind_whose_aggregated_api_is_down_is_never_pruned_as_gone(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    # Attack: take the aggregated API server of a group down (or make it unreachable). Its
    # group version shows as Stale in discovery, with no kinds; prune read that as "kind not
    # served: already gone", dropped the object from the inventory, and so never pruned it.
    group = f"s{uuid.uuid4().hex[:8]}.example.com"
    registration = k8s.ApiregistrationV1Api(counted.plane.admin())
    service = {"namespace": namespace, "name": "nothing-serves-this", "port": 443}
    registration.create_api_service(
        {
            "metadata": {"name": f"v1.{group}"},
            "spec": {
                "group": group, "version": "v1", "groupPriorityMinimum": 100,
                "versionPriority": 10, "insecureSkipTLSVerify": True, "service": service,
            },
        }
    )  # fmt: skip
    try:
        gone = objectref.ObjectRef(group, "Widget", namespace, "w")
        entry = applyplan.InventoryEntry("d", "1", "widgets.yaml")
        previous = applyplan.Inventory("c" * 40, MappingProxyType({gone: entry}))
        second = plan_of(
            [planned(configmap(namespace, "stays", {}), applyset=applyset)],
            applyset=applyset,
            previous=previous,
            prune=[gone],
        )
        with pytest.raises(apply.ApplyTransient, match=group) as caught:
            apply.run(second, target, SETTINGS)
        assert all(c.stage != "prune" for c in caught.value.changes.changes)
        with pytest.raises(errors.Transient, match=group):
            apply.diff(second, target, SETTINGS)
        # Load asks the same discovery whether a kind is namespaced: "retry", not "unknown".
        with pytest.raises(errors.Transient, match=group):
            wiring.ClusterPort(target).namespaced(group, "Widget")
    finally:
        registration.delete_api_service(f"v1.{group}")


@pytest.mark.parametrize("name", ["..", "."])
def test_a_dot_segment_name_in_the_inventory_never_prunes_what_the_url_resolves_to(
    target: cluster.Cluster, counted: Counted, applyset: str, name: str
) -> None:
    # Attack: an inventory row `/ConfigMap/<ns>/..` (written by whoever can write the Sync
    # status, e.g. break-glass). Its URL `.../namespaces/<ns>/configmaps/..` resolves to the
    # Namespace itself: the label check read the managed Namespace's labels and the delete
    # (its uid as precondition) removed the whole namespace, past the protected-kinds guard.
    # `.` resolves to the collection (a delete there is a deletecollection).
    ns_name = f"t-{uuid.uuid4().hex[:10]}"
    first = plan_of(
        [planned({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name}},
                 applyset=applyset),
         planned(configmap(ns_name, "bystander", {}), applyset=applyset)],
        applyset=applyset,
    )  # fmt: skip
    apply.run(first, target, SETTINGS)
    forged = objectref.ObjectRef("", "ConfigMap", ns_name, name)
    entry = applyplan.InventoryEntry("d", "1", "apps/app.yaml")
    second = plan_of(
        first.objects(),
        applyset=applyset,
        previous=applyplan.Inventory("c" * 40, MappingProxyType({forged: entry})),
        prune=[forged],
    )
    with pytest.raises(errors.Stalled, match="not an object name"):
        apply.run(second, target, SETTINGS)
    core = k8s.CoreV1Api(counted.plane.admin())
    assert core.read_namespace(ns_name).metadata.deletion_timestamp is None
    assert core.read_namespaced_config_map("bystander", ns_name)
