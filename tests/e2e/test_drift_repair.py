"""Drift repair end to end: watches of the managed kinds and the repairer, on the real stack.

One signed repository is reconciled once by `pipeline.reconcile` as the GitOps identity (the
webhook and OPA enforcing); then each test runs the product's `Watches` and `Repairer` with a
small worker thread (`drift_driver`), changes a managed object as a break-glass user or a
controller would, and checks what the repairer did, how fast, and with how many requests of
the adapter.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s

from reconciler import (
    changeset,
    cluster,
    cluster_errors,
    cluster_watch,
    config,
    discovery,
    drift,
    pipeline,
    watches,
    wiring,
)
from tests.e2e import drift_driver, reconcile_stack
from tests.e2e import reconcile_manifests as m
from tests.e2e.reconcile_stack import Env, unique
from tests.harness import canaries

pytestmark = pytest.mark.cluster

REVERT_WITHIN = 2.0
NAMES = [
    "patched",
    "edited",
    "doomed",
    "tagged",
    "relisted",
    "bystander",
    "impersonated",
    "same-named",
]
ORIGINAL = "steady-state"
TAMPER = json.dumps({"data": {"mode": "tampered-by-patch"}})
SECRET_VALUE = "pw-drift-original-1"
STOLEN_VALUE = "pw-drift-stolen-2"


@dataclass
class Applied:
    """The one pass every test starts from, and the adapter the repairs write through."""

    ns: str
    settings: config.ReconcilerConfig
    process: wiring.Process
    applied: pipeline.Applied

    @property
    def target(self) -> cluster.Cluster:
        return self.process.target

    def repairer(self) -> drift.Repairer:
        repairer = drift.Repairer(self.target, self.settings.apply, self.settings.identity.name)
        repairer.track(self.applied)
        return repairer


@pytest.fixture(scope="module")
def applied(env: Env) -> Iterator[Applied]:
    ns, name = unique("drift"), unique("sync")
    repo = env.repo()
    repo.write(
        "clusters/test/app.yaml",
        [
            m.namespace(ns),
            *(m.configmap(ns, n, {"mode": ORIGINAL}) for n in NAMES),
            m.deployment(ns, "web"),
            env.seal(ns, "db", {"password": SECRET_VALUE}),
        ],
    )
    repo.commit("drift fixtures", "alice")
    settings = config.load(env.config(repo, name))
    process = wiring.build(settings, None)
    try:
        done = pipeline.reconcile(process.ports, settings, None, dt.datetime.now(dt.UTC))
        assert done.changes.counts() == {changeset.Action.CREATED: 11}, done.changes.summary()
        yield Applied(ns, settings, process, done)
    finally:
        process.close()


@pytest.fixture
def driver(applied: Applied) -> Iterator[drift_driver.Driver]:
    with drift_driver.driving(applied.repairer(), applied.target) as running:
        yield running


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Poll `check` every 20 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic()


def configmap(env: Env, ns: str, name: str) -> Any:
    try:
        return k8s.CoreV1Api(env.admin).read_namespaced_config_map(name, ns)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def mode_is(env: Env, ns: str, name: str, mode: str) -> Callable[[], bool]:
    def check() -> bool:
        live = configmap(env, ns, name)
        return live is not None and (live.data or {}).get("mode") == mode

    return check


def break_glass(env: Env, *args: str, editor: str | None = None) -> float:
    """kubectl as the on-call break-glass user; the monotonic time it finished."""
    done = env.kubectl(env.stack.oncall_creds, *args, editor=editor)
    assert done.returncode == 0, done.stderr
    return time.monotonic()


def settled(driver: drift_driver.Driver, env: Env, ns: str, name: str) -> None:
    """Wait until the worker has handled the event of the object's current version."""
    live = configmap(env, ns, name)
    until(lambda: driver.seen(name, live.metadata.resource_version), f"{name}'s own event")


def test_a_break_glass_patch_is_reverted_in_time_naming_kubectl_patch_with_one_request(
    env: Env, applied: Applied, driver: drift_driver.Driver
) -> None:
    before = applied.target.requests
    edited = break_glass(env, "-n", applied.ns, "patch", "configmap", "patched", "-p", TAMPER)
    reverted = until(mode_is(env, applied.ns, "patched", ORIGINAL), "the revert")
    assert reverted - edited <= REVERT_WITHIN
    settled(driver, env, applied.ns, "patched")

    [repair] = driver.repairs_of("patched")
    assert repair.managers == ("kubectl-patch",)
    assert repair.action is changeset.Action.CONFIGURED
    said = repair.message()
    assert said.startswith(f"drift repaired: ConfigMap {applied.ns}/patched was changed")
    assert "kubectl-patch" in said
    assert ORIGINAL not in said
    assert "tampered" not in said
    # One request in all, the apply: the event of our own write caused nothing more.
    assert applied.target.requests - before == 1
    assert driver.errors == []


def test_a_kubectl_edit_is_reverted_and_names_kubectl_edit(
    env: Env, applied: Applied, driver: drift_driver.Driver
) -> None:
    edited = break_glass(
        env, "-n", applied.ns, "edit", "configmap/edited",
        editor=f"sed -i s/{ORIGINAL}/tampered-by-edit/",
    )  # fmt: skip
    reverted = until(mode_is(env, applied.ns, "edited", ORIGINAL), "the revert")
    assert reverted - edited <= REVERT_WITHIN
    settled(driver, env, applied.ns, "edited")
    assert [r.managers for r in driver.repairs_of("edited")] == [("kubectl-edit",)]


def test_a_deleted_managed_object_comes_back(
    env: Env, applied: Applied, driver: drift_driver.Driver
) -> None:
    old = configmap(env, applied.ns, "doomed")
    deleted = break_glass(env, "-n", applied.ns, "delete", "configmap", "doomed")

    def recreated() -> bool:
        live = configmap(env, applied.ns, "doomed")
        return live is not None and live.metadata.uid != old.metadata.uid

    assert until(recreated, "the re-created object") - deleted <= REVERT_WITHIN
    assert configmap(env, applied.ns, "doomed").data == {"mode": ORIGINAL}
    settled(driver, env, applied.ns, "doomed")
    [repair] = driver.repairs_of("doomed")
    assert (repair.cause, repair.action) == (drift.DELETED, changeset.Action.CREATED)
    assert "was deleted" in repair.message()


def test_removing_the_managed_label_is_repaired(
    env: Env, applied: Applied, driver: drift_driver.Driver
) -> None:
    key = applied.settings.apply.managed_label_key
    removed = break_glass(env, "-n", applied.ns, "label", "configmap", "tagged", f"{key}-")

    def labelled() -> bool:
        live = configmap(env, applied.ns, "tagged")
        return (live.metadata.labels or {}).get(key) == "true"

    assert until(labelled, "the label back") - removed <= REVERT_WITHIN
    settled(driver, env, applied.ns, "tagged")
    [repair] = driver.repairs_of("tagged")
    assert repair.cause == drift.UNLABELLED
    assert "lost its managed label" in repair.message()


def test_a_change_made_as_the_gitops_identity_by_another_manager_is_reverted_and_named(
    env: Env, applied: Applied, driver: drift_driver.Driver
) -> None:
    # Admission cannot see impersonation: as far as the webhook knows this is GitOps itself
    # (as with a leaked token). Drift repair still reverts it and says who.
    done = env.kubectl(
        None, f"--as={reconcile_stack.GITOPS_USER}", "-n", applied.ns, "patch", "configmap",
        "impersonated", "-p", TAMPER, "--field-manager=leaked-token-tool",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    edited = time.monotonic()
    reverted = until(mode_is(env, applied.ns, "impersonated", ORIGINAL), "the revert")
    assert reverted - edited <= REVERT_WITHIN
    settled(driver, env, applied.ns, "impersonated")
    assert [r.managers for r in driver.repairs_of("impersonated")] == [("leaked-token-tool",)]


def test_an_apply_under_gitwardens_own_manager_name_is_reverted_too(
    env: Env, applied: Applied, driver: drift_driver.Driver
) -> None:
    live = configmap(env, applied.ns, "same-named")
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "same-named",
            "namespace": applied.ns,
            "labels": live.metadata.labels,
            "annotations": live.metadata.annotations,
        },
        "data": {"mode": "tampered-under-our-name"},
    }
    path = env.workdir / "same-named.json"
    path.write_text(json.dumps(manifest))
    done = env.kubectl(
        None, f"--as={reconcile_stack.GITOPS_USER}", "apply", "--server-side",
        "--force-conflicts", f"--field-manager={applied.target.field_manager}", "-f", str(path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    edited = time.monotonic()
    reverted = until(mode_is(env, applied.ns, "same-named", ORIGINAL), "the revert")
    assert reverted - edited <= REVERT_WITHIN
    settled(driver, env, applied.ns, "same-named")
    [repair] = driver.repairs_of("same-named")
    # Server-side apply records it as ours: the repair says it cannot name anyone else.
    assert repair.managers == ()
    assert "under GitWarden's own field manager name" in repair.message()


def test_a_controllers_status_write_causes_no_request(
    env: Env, applied: Applied, driver: drift_driver.Driver
) -> None:
    controller = k8s.AppsV1Api(
        env.stack.plane.as_service_account("kube-system", "deployment-controller")
    )
    before = applied.target.requests
    # The real deployment controller may already have counted updated replicas: a `replicas`
    # above every count it can have written keeps the status valid.
    written = controller.patch_namespaced_deployment_status(
        "web", applied.ns, {"status": {"observedGeneration": 1, "replicas": 10}}
    )
    version = written.metadata.resource_version
    until(lambda: driver.seen("web", version), "the status event")
    assert applied.target.requests == before
    assert driver.repairs_of("web") == []
    assert driver.errors == []


def test_a_secrets_drift_is_reverted_and_its_values_appear_nowhere(
    env: Env, applied: Applied, driver: drift_driver.Driver
) -> None:
    canaries.register(STOLEN_VALUE)
    stolen = base64.b64encode(STOLEN_VALUE.encode()).decode()
    patch = json.dumps({"data": {"password": stolen}})
    edited = break_glass(env, "-n", applied.ns, "patch", "secret", "db", "-p", patch)
    core = k8s.CoreV1Api(env.admin)

    def restored() -> bool:
        data = core.read_namespaced_secret("db", applied.ns).data or {}
        return base64.b64decode(data.get("password", "")).decode() == SECRET_VALUE

    assert until(restored, "the Secret restored") - edited <= REVERT_WITHIN
    until(lambda: bool(driver.repairs_of("db")), "the repair recorded")
    [repair] = driver.repairs_of("db")
    assert repair.managers == ("kubectl-patch",)
    said = repair.message() + repr(repair) + "".join(repr(e) for e in driver.handled)
    for value in (SECRET_VALUE, STOLEN_VALUE):
        for text in (value, base64.b64encode(value.encode()).decode()):
            assert text not in said


# What the API server sends when a watch asks for history it no longer keeps.
GONE = json.dumps(
    {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "too old resource version: 1 (4242)",
            "reason": "Expired",
            "code": 410,
        },
    }
).encode()


class FromLongAgo:
    """The real adapter, except that its first ConfigMap watch answers 410 Gone, as after a
    disconnection longer than the API server's history. (This API server's watch cache holds
    every event since it started, so no resourceVersion of this session is too old to watch
    from: the answer is the server's own bytes, read by the product's `WatchStream`.)"""

    def __init__(self, target: cluster.Cluster) -> None:
        self._target = target
        self.watches = 0

    @property
    def field_manager(self) -> str:
        return self._target.field_manager

    def resource(self, group: str, kind: str) -> discovery.Resource:
        return self._target.resource(group, kind)

    def list_objects(self, resource: discovery.Resource, selector: str) -> Iterator[cluster.Page]:
        return self._target.list_objects(resource, selector)

    def watch(self, path: str, query: Sequence[tuple[str, str]], timeout: float) -> watches.Stream:
        if not path.endswith("/configmaps"):
            return self._target.watch(path, query, timeout)
        self.watches += 1  # only the ConfigMap watch thread gets here
        if self.watches == 1:
            gone = urllib3.HTTPResponse(body=io.BytesIO(GONE + b"\n"), preload_content=False)
            return cluster_watch.WatchStream(gone, f"watch {path}")
        return self._target.watch(path, query, timeout)


def test_after_410_gone_the_watch_lists_again_and_still_repairs(env: Env, applied: Applied) -> None:
    old = FromLongAgo(applied.target)
    repairer = applied.repairer()
    with drift_driver.driving(repairer, old) as driver:
        until(lambda: "ConfigMap" in driver.restarts, "the restart reported")
        # The relist handed every object of the kind on again, and nothing failed.
        until(lambda: driver.listed() > len(repairer), "the relist")
        # The watch is opened again after the relist, on its own thread: wait for it.
        until(lambda: old.watches >= 2, "the watch opened again")
        edited = break_glass(
            env, "-n", applied.ns, "patch", "configmap", "relisted", "-p", TAMPER
        )  # fmt: skip
        reverted = until(mode_is(env, applied.ns, "relisted", ORIGINAL), "the revert")
        assert reverted - edited <= REVERT_WITHIN
        assert driver.errors == []


def test_a_watch_rbac_does_not_allow_is_forbidden_naming_only_the_request(env: Env) -> None:
    # As alice, who may not list pods (the GitOps identity's audit record stays clean).
    target = cluster.Cluster(env.stack.alice.configuration, config.ApplyConfig())
    try:
        pods = target.resource("", "Pod")
        with pytest.raises(cluster_errors.Forbidden, match=r"^watch /api/v1/pods: HTTP 403"):
            target.watch(pods.path(), [("labelSelector", "a=b")], 5)
    finally:
        target.close()


def test_the_repairs_are_never_denied(env: Env, started: dt.datetime, applied: Applied) -> None:
    assert configmap(env, applied.ns, "bystander").data == {"mode": ORIGINAL}
    reconcile_stack.assert_never_denied(env, started)
