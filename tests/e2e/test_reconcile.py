"""`gitwarden reconcile --once` end to end: a signed repository converges, prunes, repairs drift.

The real CLI runs as a child process *as* the GitOps service account (a TokenRequest token,
the ClusterRole in `reconcile_stack`), against the real kube-apiserver with the real webhook
and OPA enforcing. Each test builds its own signed repository and uses its own namespaces and
Sync name, so no test sees another's objects.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.e2e import reconcile_manifests as m
from tests.e2e import reconcile_stack, webhook_stack
from tests.e2e.reconcile_stack import Env, ok, unique
from tests.harness import canaries

pytestmark = pytest.mark.cluster

APP_FILE = "clusters/test/app.yaml"


def labels_and_source(obj: Any) -> tuple[str | None, str | None]:
    """The managed label's value and the source-path annotation of a live object."""
    to_plain = k8s.ApiClient().sanitize_for_serialization
    plain = obj if isinstance(obj, dict) else to_plain(obj)  # type: ignore[no-untyped-call]
    meta = plain["metadata"]
    return (
        (meta.get("labels") or {}).get("gitwarden.dev/managed"),
        (meta.get("annotations") or {}).get("gitwarden.dev/source-path"),
    )


def test_a_signed_commit_converges_and_a_human_edit_is_denied_naming_the_file(env: Env) -> None:
    app, other, name = unique("app"), unique("other"), unique("sync")
    repo = env.repo()
    values = {"db-password": "pw-converge-1", "api-token": "tok-converge-1"}
    repo.write("clusters/test/namespaces.yaml", [m.namespace(app), m.namespace(other)])
    repo.write("clusters/test/crd.yaml", [m.widget_crd()])
    repo.write("clusters/test/widget.yaml", [m.widget(app, "w1", 3)])
    repo.write(
        "clusters/test/rbac.yaml",
        [m.role(app, "readers"), m.role_binding(app, "readers", "carol"), m.cluster_role(name)],
    )
    repo.write(
        APP_FILE,
        [
            m.deployment(app, "web"),
            m.service(app, "web"),
            m.configmap(other, "settings", {"mode": "blue"}),
        ],
    )
    repo.write("clusters/test/secret.yaml", [env.seal(app, "db", values, cli=True)])
    commit = repo.commit("everything", "alice")

    done = env.reconcile(env.config(repo, name))
    out = ok(done)
    assert m.change("Deployment.apps", app, "web", "created") in out

    admin = env.admin
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)
    rbac, custom = k8s.RbacAuthorizationV1Api(admin), k8s.CustomObjectsApi(admin)
    live: dict[str, Any] = {
        "namespace": core.read_namespace(app),
        "deployment": apps.read_namespaced_deployment("web", app),
        "service": core.read_namespaced_service("web", app),
        "configmap": core.read_namespaced_config_map("settings", other),
        "role": rbac.read_namespaced_role("readers", app),
        "rolebinding": rbac.read_namespaced_role_binding("readers", app),
        "clusterrole": rbac.read_cluster_role(name),
        "secret": core.read_namespaced_secret("db", app),
    }
    widget = custom.get_namespaced_custom_object(reconcile_stack.WIDGET_GROUP, "v1", app,
                                                 "widgets", "w1")  # fmt: skip
    assert widget["spec"] == {"size": 3}
    assert labels_and_source(widget) == ("true", "clusters/test/widget.yaml")
    assert labels_and_source(live["deployment"]) == ("true", APP_FILE)
    assert labels_and_source(live["secret"]) == ("true", "clusters/test/secret.yaml")
    for what, obj in live.items():
        assert labels_and_source(obj)[0] == "true", what
    assert live["configmap"].data == {"mode": "blue"}
    secret_values = {k: base64.b64decode(v).decode() for k, v in live["secret"].data.items()}
    assert secret_values == values
    # The plaintext is in the Secret and nowhere else: not in the output, not in the status.
    for value in values.values():
        for text in (value, base64.b64encode(value.encode()).decode()):
            assert text not in done.stdout + done.stderr
            assert text not in str(env.sync(name))

    sync = env.sync(name)
    assert commit in str(sync["status"]), sync
    assert env.condition(name, "Ready")["status"] == "True"
    waited = env.kubectl(None, "wait", "--for=condition=Ready", f"sync/{name}", "--timeout=20s")
    assert waited.returncode == 0, waited.stderr
    status = ok(reconcile_stack.run_cli("status", "--kubeconfig", str(env.kubeconfig),
                                        "--name", name))  # fmt: skip
    assert commit[:12] in status
    assert "alice@example.com" in status
    assert "created" in status

    # A human's edit of the Deployment is denied, and the denial names the file in Git.
    edit = env.kubectl(
        env.stack.alice_creds, "-n", app, "edit", "deployment/web",
        editor="sed -i s/replicas:\\ 1/replicas:\\ 5/",
    )  # fmt: skip
    assert edit.returncode != 0
    assert 'admission webhook "managed.gitwarden.gitwarden.dev" denied the request' in edit.stderr
    assert APP_FILE in edit.stderr, edit.stderr
    assert apps.read_namespaced_deployment("web", app).spec.replicas == 1

    # A later commit signed with OpenPGP changes one object; the pass says exactly that.
    repo.write(
        APP_FILE,
        [
            m.deployment(app, "web"),
            m.service(app, "web"),
            m.configmap(other, "settings", {"mode": "green"}),
        ],
    )
    second = repo.commit("green", "gus")
    out = ok(env.reconcile(env.config(repo, name)))
    assert m.change("ConfigMap", other, "settings", "configured") in out
    assert f"{second[:12]}: 1 configured, 10 unchanged" in out
    assert core.read_namespaced_config_map("settings", other).data == {"mode": "green"}
    assert second in str(env.sync(name)["status"])
    assert "gus@example.com" in str(env.sync(name)["status"])


def test_a_later_commit_prunes_exactly_what_left_git_and_an_empty_tree_deletes_nothing(
    env: Env,
) -> None:
    ns, name = unique("prune"), unique("sync")
    repo = env.repo()
    sealed = env.seal(ns, "creds", {"db-password": "pw-prune-1"})
    repo.write(APP_FILE, [*m.small_app(ns, {"k": "v"}, sealed), m.configmap(ns, "extra", {})])
    repo.commit("initial", "alice")
    config = env.config(repo, name)
    ok(env.reconcile(config))

    core, apps = k8s.CoreV1Api(env.admin), k8s.AppsV1Api(env.admin)
    # Neither of these is in the inventory: one is unlabelled, one carries our label but was
    # created outside Git. Prune touches neither.
    core.create_namespaced_config_map(ns, {"metadata": {"name": "bystander"}, "data": {"a": "b"}})
    k8s.CoreV1Api(env.stack.gitops).create_namespaced_config_map(
        ns, {"metadata": {"name": "foreign", "labels": webhook_stack.MANAGED}}
    )

    repo.write(APP_FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "v"}), sealed])
    repo.commit("drop extra and web", "carol")
    out = ok(env.reconcile(config))
    assert m.change("ConfigMap", ns, "extra", "deleted") in out
    assert m.change("Deployment.apps", ns, "web", "deleted") in out
    assert _gone(lambda: core.read_namespaced_config_map("extra", ns))
    assert _gone(lambda: apps.read_namespaced_deployment("web", ns))
    left = {cm.metadata.name for cm in core.list_namespaced_config_map(ns).items}
    assert {"settings", "bystander", "foreign"} <= left
    assert core.read_namespaced_secret("creds", ns).data

    # A path that renders nothing, then no path at all: nothing is deleted and status says so.
    repo.write(APP_FILE, "# everything moved out\n")
    empty = repo.commit("empty file", "alice")
    _stalls(env, config, name, empty, "NothingToApply")
    repo.remove("clusters/test")
    gone = repo.commit("no directory", "alice")
    _stalls(env, config, name, gone, "PathNotFound")
    assert core.read_namespaced_config_map("settings", ns).data == {"k": "v"}
    assert core.read_namespaced_secret("creds", ns).data
    assert core.read_namespace(ns).status.phase == "Active"


def _stalls(env: Env, config: Any, name: str, commit: str, reason: str) -> None:
    """A pass that exits 1, applies and deletes nothing, and leaves the Sync Stalled."""
    done = env.reconcile(config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert not [line for line in done.stdout.splitlines() if line.endswith(" deleted")]
    stalled = env.condition(name, "Stalled")
    assert stalled["status"] == "True", stalled
    assert stalled["reason"] == reason, stalled
    assert commit[:12] in str(env.sync(name)["status"])
    assert env.condition(name, "Ready")["status"] == "False"


def _gone(read: Any) -> bool:
    try:
        obj = read()
    except k8s.ApiException as exc:
        return bool(exc.status == 404)
    raise AssertionError(f"still there: {obj.metadata.name} ({obj.metadata.deletion_timestamp})")


def test_dry_run_changes_nothing_and_masks_every_secret_value(env: Env) -> None:
    ns, name = unique("dry"), unique("sync")
    repo = env.repo()
    first = {"db-password": "pw-dry-first", "api-token": "tok-dry-first"}
    repo.write(APP_FILE, m.small_app(ns, {"k": "v1"}, env.seal(ns, "creds", first)))
    repo.commit("initial", "alice")
    config = env.config(repo, name)
    # A first dry run, into a namespace that does not exist yet: everything would be created.
    out = ok(env.reconcile(config, "--dry-run"))
    assert m.change("Namespace", "", ns, "created") in out
    assert m.change("Secret", ns, "creds", "created") in out
    assert "nothing was changed" in out
    with pytest.raises(k8s.ApiException) as absent:
        k8s.CoreV1Api(env.admin).read_namespace(ns)
    assert absent.value.status == 404
    assert "pw-dry-first" not in out
    ok(env.reconcile(config))

    second = {"db-password": "pw-dry-second", "api-token": "tok-dry-second"}
    repo.write(
        APP_FILE,
        [
            *m.small_app(ns, {"k": "v2"}, env.seal(ns, "creds", second)),
            m.configmap(ns, "extra-dry", {"x": "y"}),
        ],
    )
    repo.commit("second", "alice")
    before = _versions(env, ns, name)
    done = env.reconcile(config, "--dry-run")
    out = ok(done)
    assert _versions(env, ns, name) == before
    assert _gone(lambda: k8s.CoreV1Api(env.admin).read_namespaced_config_map("extra-dry", ns))

    # The diff shows the ConfigMap change and the new object, and `***` for every Secret value.
    assert "v2" in out
    assert "extra-dry" in out
    for key in second:
        lines = [line for line in out.splitlines() if key in line]
        assert lines, f"the dry run shows no line for Secret key {key}:\n{out}"
        assert all("***" in line for line in lines), lines
    for value in (*first.values(), *second.values()):
        for text in (value, base64.b64encode(value.encode()).decode()):
            assert text not in done.stdout
            assert text not in done.stderr

    # The real pass applies what the dry run showed.
    ok(env.reconcile(config))
    live = k8s.CoreV1Api(env.admin).read_namespaced_secret("creds", ns)
    assert {k: base64.b64decode(v).decode() for k, v in live.data.items()} == second


def _versions(env: Env, ns: str, name: str) -> dict[str, str]:
    """resourceVersion of every object in `ns` GitWarden could touch, and of the Sync."""
    core, apps = k8s.CoreV1Api(env.admin), k8s.AppsV1Api(env.admin)
    found = {"sync": str(env.sync(name)["metadata"]["resourceVersion"])}
    for listing in (
        core.list_namespaced_config_map(ns),
        core.list_namespaced_secret(ns),
        apps.list_namespaced_deployment(ns),
    ):
        for item in listing.items:
            found[f"{item.kind or type(item).__name__}/{item.metadata.name}"] = str(
                item.metadata.resource_version
            )
    found["namespace"] = str(core.read_namespace(ns).metadata.resource_version)
    return found


def test_a_break_glass_edit_is_taken_back_by_the_next_pass(env: Env) -> None:
    ns, name = unique("glass"), unique("sync")
    repo = env.repo()
    sealed = env.seal(ns, "creds", {"a": canaries.value("reconcile")})
    repo.write(APP_FILE, m.small_app(ns, {"k": "v"}, sealed))
    repo.commit("initial", "alice")
    config = env.config(repo, name)
    ok(env.reconcile(config))

    edit = env.kubectl(
        env.stack.oncall_creds, "-n", ns, "edit", "deployment/web",
        editor="sed -i s/replicas:\\ 1/replicas:\\ 4/",
    )  # fmt: skip
    assert edit.returncode == 0, edit.stderr
    assert "break-glass" in edit.stderr.lower(), edit.stderr  # the webhook's warning
    apps = k8s.AppsV1Api(env.admin)
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 4

    out = ok(env.reconcile(config))
    assert m.change("Deployment.apps", ns, "web", "configured") in out
    assert "1 configured, 3 unchanged" in out  # the Namespace, the ConfigMap, the Secret
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 1


def test_the_sync_object_and_its_status_are_written_only_by_the_gitops_identity(
    env: Env,
) -> None:
    """alice may do anything RBAC allows (everything); admission still refuses her the Sync.

    A forged status is how an attacker would try to move the verified range's base or steer
    prune, so the status subresource is checked as the object is.
    """
    ns, name = unique("guard"), unique("sync")
    repo = env.repo()
    sealed = env.seal(ns, "creds", {"a": canaries.value("reconcile")})
    repo.write(APP_FILE, m.small_app(ns, {"k": "v"}, sealed))
    commit = repo.commit("initial", "alice")
    ok(env.reconcile(env.config(repo, name)))
    g, v, p = reconcile_stack.SYNC_GROUP, reconcile_stack.SYNC_VERSION, reconcile_stack.SYNC_PLURAL
    forged = {"status": {"lastAppliedCommit": "0" * 40}}
    new = {"apiVersion": f"{g}/{v}", "kind": "Sync", "metadata": {"name": unique("forged")}}
    with reconcile_stack.allowed_everything(env.admin, "alice"):
        alice = k8s.CustomObjectsApi(env.stack.alice)
        attempts: dict[str, Callable[[], object]] = {
            "labels": lambda: alice.patch_cluster_custom_object(
                g, v, p, name, {"metadata": {"labels": {"x": "y"}}}
            ),
            "status": lambda: alice.patch_cluster_custom_object_status(g, v, p, name, forged),
            "delete": lambda: alice.delete_cluster_custom_object(g, v, p, name),
            # Carries no managed label: only the guarded cluster-scoped kind catches it.
            "create": lambda: alice.create_cluster_custom_object(g, v, p, new),
        }
        for what, attempt in attempts.items():
            message = reconcile_stack.denied_by_gitwarden(attempt)
            assert "alice may not" in message, what
    assert commit in str(env.sync(name)["status"])
    assert "0" * 40 not in str(env.sync(name)["status"])


def test_the_reconcilers_requests_are_never_denied(env: Env, started: dt.datetime) -> None:
    """Runs last in the module: every request the GitOps identity made since it started."""
    reconcile_stack.assert_never_denied(env, started)
