"""The apply stage against the real kube-apiserver: actions, force, CRDs, no-op cost."""

from __future__ import annotations

import logging
import time

import pytest
from kubernetes import client as k8s

from reconciler import apply, applyplan, changeset, cluster, config, status
from tests.engine.conftest import SETTINGS, Counted, settle_deployments
from tests.engine_plans import configmap, crd, deployment, plan_of, planned, planned_secret
from tests.harness import controllers

pytestmark = pytest.mark.cluster
Action = changeset.Action


def actions(changes: changeset.ChangeSet) -> dict[str, Action]:
    return {c.ref.name: c.action for c in changes.changes}


def after(plan: applyplan.ApplyPlan, changes: changeset.ChangeSet) -> applyplan.Inventory:
    return status.inventory_after(plan, changes, complete=True)


def objects(namespace: str, applyset: str, data: str = "1") -> list[applyplan.PlannedObject]:
    return [
        planned(configmap(namespace, "settings", {"level": data}), applyset=applyset),
        planned(deployment(namespace, "web"), applyset=applyset),
        planned_secret(namespace, "token", {"token": b"s3cr3t-value"}, applyset=applyset),
    ]


def test_first_pass_creates_and_second_is_unchanged_without_a_write(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str, admin: k8s.ApiClient
) -> None:
    first = plan_of(objects(namespace, applyset), applyset=applyset)
    created = apply.run(first, target, SETTINGS)
    assert actions(created) == {
        "settings": Action.CREATED,
        "web": Action.CREATED,
        "token": Action.CREATED,
    }
    assert all(c.resource_version for c in created.changes)

    # The deployment controller writes the Deployment after it is created: the next pass sees
    # a resourceVersion it did not record and applies it again, a no-op that changes nothing.
    settle_deployments(admin, namespace)
    before = len(counted.audited())
    second = plan_of(
        objects(namespace, applyset), applyset=applyset, previous=after(first, created)
    )
    again = apply.run(second, target, SETTINGS)
    assert set(actions(again).values()) == {Action.UNCHANGED}
    written = {e["objectRef"]["name"] for e in counted.audited()[before:] if e["verb"] == "patch"}
    assert written == {"web"}
    # Once nobody else has written since the recorded pass: nothing per object.
    before = len(counted.audited())
    third = plan_of(objects(namespace, applyset), applyset=applyset, previous=after(second, again))
    assert set(actions(apply.run(third, target, SETTINGS)).values()) == {Action.UNCHANGED}
    requests = counted.audited()[before:]
    # One metadata list per kind (ConfigMap, Deployment, Secret), nothing per object.
    assert sorted(e["verb"] for e in requests) == ["list", "list", "list"]


def test_a_change_in_git_is_configured_and_the_rest_left_alone(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    first = plan_of(objects(namespace, applyset), applyset=applyset)
    created = apply.run(first, target, SETTINGS)
    # A pass recorded after the deployment controller's writes (see the test above).
    settle_deployments(counted.plane.admin(), namespace)
    refreshed = plan_of(
        objects(namespace, applyset), applyset=applyset, previous=after(first, created)
    )
    done = apply.run(refreshed, target, SETTINGS)
    before = len(counted.audited())
    changed = plan_of(
        objects(namespace, applyset, data="2"), applyset=applyset, previous=after(refreshed, done)
    )
    result = apply.run(changed, target, SETTINGS)
    assert actions(result) == {
        "settings": Action.CONFIGURED,
        "web": Action.UNCHANGED,
        "token": Action.UNCHANGED,
    }
    patches = [e for e in counted.audited()[before:] if e["verb"] == "patch"]
    # The changed object is checked (dryRun=All) and then written; the others cost nothing.
    checks = [e for e in patches if "dryRun=All" in e["requestURI"]]
    writes = [e for e in patches if "dryRun=All" not in e["requestURI"]]
    assert [e["objectRef"]["name"] for e in checks] == ["settings"]
    assert [e["objectRef"]["name"] for e in writes] == ["settings"]
    live = k8s.CoreV1Api(target_admin(counted)).read_namespaced_config_map("settings", namespace)
    assert live.data == {"level": "2"}


def target_admin(counted: Counted) -> k8s.ApiClient:
    return counted.plane.admin()


def test_apply_without_inventory_tells_unchanged_from_configured(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    plan = plan_of(objects(namespace, applyset), applyset=applyset)
    apply.run(plan, target, SETTINGS)
    # The deployment controller's status write landing between the pass's list and its apply
    # of "web" would move the version the answer is compared with (seen once in CI).
    settle_deployments(counted.plane.admin(), namespace)
    # No inventory: every object is applied, and the server's answer (same resourceVersion)
    # tells that nothing changed.
    assert set(actions(apply.run(plan, target, SETTINGS)).values()) == {Action.UNCHANGED}


def test_force_takes_back_a_field_another_manager_changed(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    plan = plan_of(objects(namespace, applyset), applyset=applyset)
    done = apply.run(plan, target, SETTINGS)
    core = k8s.CoreV1Api(counted.plane.admin())
    # What `kubectl edit` does: an update by another field manager.
    core.patch_namespaced_config_map(
        "settings", namespace, {"data": {"level": "edited"}}, field_manager="kubectl-edit"
    )
    repaired = apply.run(
        plan_of(objects(namespace, applyset), applyset=applyset, previous=after(plan, done)),
        target,
        SETTINGS,
    )
    assert actions(repaired)["settings"] is Action.CONFIGURED
    live = core.read_namespaced_config_map("settings", namespace)
    assert live.data == {"level": "1"}
    owners = {
        m.manager for m in live.metadata.managed_fields if m.fields_v1 and "f:data" in m.fields_v1
    }
    assert owners == {"gitwarden"}


def test_a_deleted_object_is_created_again(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    plan = plan_of(objects(namespace, applyset), applyset=applyset)
    done = apply.run(plan, target, SETTINGS)
    k8s.CoreV1Api(counted.plane.admin()).delete_namespaced_config_map("settings", namespace)
    again = apply.run(
        plan_of(objects(namespace, applyset), applyset=applyset, previous=after(plan, done)),
        target,
        SETTINGS,
    )
    assert actions(again)["settings"] is Action.CREATED


def test_a_crd_and_its_custom_resource_in_one_plan(
    target: cluster.Cluster, counted: Counted, namespace: str, applyset: str
) -> None:
    group = f"{applyset[9:17].lower().replace('-', 'x').replace('_', 'y')}.example.com"
    definition = planned(crd(group, "Widget", "widgets"), "crds/widget.yaml", applyset=applyset)
    widget = planned(
        {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1", "namespace": namespace},
            "spec": {"size": 3},
        },
        "apps/widget.yaml",
        applyset=applyset,
    )
    plan = plan_of([definition, widget], applyset=applyset)
    done = apply.run(plan, target, SETTINGS)
    assert [(c.stage, c.action) for c in done.changes] == [
        ("crds", Action.CREATED),
        ("namespaced", Action.CREATED),
    ]
    custom = k8s.CustomObjectsApi(counted.plane.admin())
    assert custom.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w1")["spec"] == {
        "size": 3
    }
    # A second pass with the inventory skips both, the CRD wait included.
    again = apply.run(
        plan_of([definition, widget], applyset=applyset, previous=after(plan, done)),
        target,
        SETTINGS,
    )
    assert set(actions(again).values()) == {Action.UNCHANGED}


def test_a_no_op_pass_costs_one_paginated_list_per_kind_whatever_the_object_count(
    counted: Counted, namespace: str, admin: k8s.ApiClient, applyset: str
) -> None:
    paged = cluster.Cluster(admin.configuration, SETTINGS, user_agent=counted.agent, page_size=50)
    many = [
        planned(configmap(namespace, f"cm-{i:03d}", {"i": str(i)}), applyset=applyset)
        for i in range(120)
    ]
    many += [planned(deployment(namespace, f"web-{i}"), applyset=applyset) for i in range(10)]
    first = plan_of(many, applyset=applyset)
    created = apply.run(first, paged, SETTINGS)
    assert created.summary() == "130 created"
    # A pass recorded after the deployment controller's writes (see the first test).
    settle_deployments(admin, namespace)
    refreshed = plan_of(many, applyset=applyset, previous=after(first, created))
    done = apply.run(refreshed, paged, SETTINGS)
    before = len(counted.audited())
    again = apply.run(
        plan_of(many, applyset=applyset, previous=after(refreshed, done)), paged, SETTINGS
    )
    assert again.summary() == "130 unchanged"
    lists = [e["objectRef"]["resource"] for e in counted.audited()[before:]]
    # 120 ConfigMaps in pages of 50 are three lists; ten Deployments one.
    assert sorted(lists) == ["configmaps"] * 3 + ["deployments"]


def test_parallel_apply_fits_the_connection_pool_and_the_rate_limit_holds(
    admin: k8s.ApiClient, namespace: str, applyset: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="urllib3")
    settings = config.ApplyConfig(concurrency=8, qps=40, burst=1)
    limited = cluster.Cluster(admin.configuration, settings)
    many = [planned(configmap(namespace, f"p-{i:02d}", {}), applyset=applyset) for i in range(40)]
    started = time.monotonic()
    done = apply.run(plan_of(many, applyset=applyset), limited, settings)
    elapsed = time.monotonic() - started
    assert done.summary() == "40 created"
    # Discovery (2), one list, 40 checks (dryRun=All) and 40 applies, at 40 per second after
    # a burst of one.
    assert limited.requests == 83
    assert elapsed >= 82 / 40 * 0.95
    # urllib3 warns and drops connections when more threads than pooled connections talk.
    assert "Connection pool is full" not in caplog.text


def test_an_object_the_api_server_refuses_stops_its_stage_before_anything_is_written(
    target: cluster.Cluster, admin: k8s.ApiClient, namespace: str, applyset: str
) -> None:
    """A bad manifest (here an invalid label value) is refused by the dry-run check of its
    stage, so the valid objects beside it are not applied either."""
    bad = configmap(namespace, "bad", {})
    bad["metadata"]["labels"] = {"x": "not valid!"}
    plan = plan_of(
        [
            planned(configmap(namespace, "good", {"k": "1"}), applyset=applyset),
            planned(deployment(namespace, "web"), applyset=applyset),
            planned(bad, "apps/bad.yaml", applyset=applyset),
        ],
        applyset=applyset,
    )
    with pytest.raises(apply.ApplyStalled) as caught:
        apply.run(plan, target, SETTINGS)
    assert f"ConfigMap {namespace}/bad" in str(caught.value)
    assert caught.value.changes.changes == ()
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)
    assert controllers.own_names(core.list_namespaced_config_map(namespace).items) == []
    assert apps.list_namespaced_deployment(namespace).items == []
