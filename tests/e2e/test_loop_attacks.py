"""Attacks whose defence is the running reconciler loop, or a refused revision, end to end.

One `gitwarden reconcile` loop process runs as the GitOps service account for the module (real
kube-apiserver and controllers, OPA and the webhook enforcing). Each attack changes a managed
object in a way admission lets through (impersonating the GitOps account, a break-glass user)
or cannot be told from GitWarden (its own field manager name), and the test shows the loop's
drift repair reverting it within seconds with a DriftRepaired Event naming the field manager.
A cluster-admin using GitWarden's manager name is denied outright. A SealedSecret copied under
another name or into another namespace does not open: the revision stalls naming the copy and
its file.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client as k8s

from reconciler import config as reconciler_config
from tests.e2e import loop_process, reconcile_stack, webhook_stack
from tests.e2e import reconcile_manifests as m
from tests.e2e.loop_process import wait_for
from tests.e2e.reconcile_stack import Env, unique
from tests.harness.controlplane import Credentials

pytestmark = pytest.mark.cluster

FILE = "clusters/test/app.yaml"
NAMES = ("impersonated", "forged-extras", "admin-ssa", "glass-ssa", "glass-left")
GIT = "from-git"
REVERT_WITHIN = 3.0  # seconds from the change to the object back as in Git


@dataclass(frozen=True)
class Running:
    ns: str
    name: str
    loop: loop_process.Loop


@pytest.fixture(scope="module")
def running(env: Env) -> Iterator[Running]:
    ns, name = unique("attack"), unique("sync")
    repo = env.repo()
    repo.write(FILE, [m.namespace(ns), *(m.configmap(ns, n, {"k": GIT}) for n in NAMES)])
    commit = repo.commit("attack fixtures", "alice")
    processes = loop_process.Running()
    try:
        # A long interval: only drift repair can revert within a test.
        loop = processes.start(env, env.config(repo, name), loop={"interval": 300.0})
        loop.applied(commit)
        yield Running(ns, name, loop)
        assert loop.terminate() == 0
    finally:
        processes.stop_all()


def data(env: Env, ns: str, name: str) -> dict[str, str]:
    return dict(k8s.CoreV1Api(env.admin).read_namespaced_config_map(name, ns).data or {})


def repaired(env: Env, sync: str, what: str) -> list[str]:
    """The DriftRepaired Events' messages on Sync `sync` about `what` (Kind ns/name)."""
    listed = k8s.CoreV1Api(env.admin).list_namespaced_event(
        reconcile_stack.EVENTS_NAMESPACE, field_selector=f"involvedObject.name={sync}"
    )
    return [
        str(e.message) for e in listed.items if e.reason == "DriftRepaired" and what in e.message
    ]


def reverted_and_reported(env: Env, run: Running, cm: str, changed: float) -> str:
    """The object back as in Git within REVERT_WITHIN seconds; the one Event about it."""
    wait_for(lambda: data(env, run.ns, cm) == {"k": GIT}, REVERT_WITHIN + 2, f"{cm} reverted")
    took = time.monotonic() - changed
    assert took <= REVERT_WITHIN, took
    what = f"ConfigMap {run.ns}/{cm}"
    wait_for(lambda: bool(repaired(env, run.name, what)), 10, f"a DriftRepaired Event on {cm}")
    [message] = repaired(env, run.name, what)
    assert "tampered" not in message  # names, never values
    return message


def impersonating(env: Env, extras: dict[str, str]) -> k8s.CoreV1Api:
    """The admin's client impersonating the GitOps service account (with `extras`)."""
    client = k8s.ApiClient(env.admin.configuration)
    client.set_default_header("Impersonate-User", reconcile_stack.GITOPS_USER)  # type: ignore[no-untyped-call]  # untyped
    for key, value in extras.items():
        client.set_default_header(f"Impersonate-Extra-{key}", value)  # type: ignore[no-untyped-call]  # untyped
    return k8s.CoreV1Api(client)


@pytest.mark.parametrize(
    ("cm", "extras"),
    [
        ("impersonated", {}),
        (
            "forged-extras",
            {
                "authentication.kubernetes.io%2Fpod-name": "gitwarden-reconciler-0",
                "authentication.kubernetes.io%2Fpod-uid": "00000000-0000-0000-0000-000000000000",
            },
        ),
    ],
)
def test_impersonating_the_gitops_account_is_reverted_and_the_event_names_the_manager(
    env: Env, running: Running, cm: str, extras: dict[str, str]
) -> None:
    # Admission cannot tell this from the reconciler itself: it passes, and the loop reverts it.
    forged = impersonating(env, extras)
    forged.patch_namespaced_config_map(
        cm, running.ns, {"data": {"k": "tampered"}}, field_manager="stolen-identity"
    )
    changed = time.monotonic()
    message = reverted_and_reported(env, running, cm, changed)
    assert "by field manager stolen-identity" in message, message


def ssa(env: Env, ns: str, cm: str, creds: Credentials | None) -> tuple[int, str]:
    """kubectl apply --server-side under GitWarden's own field manager name."""
    live = k8s.CoreV1Api(env.admin).read_namespaced_config_map(cm, ns)
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": cm,
            "namespace": ns,
            "labels": live.metadata.labels,
            "annotations": live.metadata.annotations,
        },
        "data": {"k": "tampered-under-our-name"},
    }
    path = env.workdir / f"{cm}-{unique('ssa')}.json"
    path.write_text(json.dumps(manifest))
    manager = reconciler_config.ApplyConfig().field_manager
    done = env.kubectl(
        creds,
        "apply", "--server-side", "--force-conflicts", f"--field-manager={manager}",
        "-f", str(path),
    )  # fmt: skip
    return done.returncode, done.stderr


def test_cluster_admin_applying_under_gitwardens_manager_name_is_denied(
    env: Env, running: Running
) -> None:
    code, said = ssa(env, running.ns, "admin-ssa", None)
    assert code != 0
    assert f'admission webhook "{webhook_stack.HOOK}" denied' in said, said
    assert data(env, running.ns, "admin-ssa") == {"k": GIT}


def test_a_break_glass_apply_under_gitwardens_manager_name_is_reverted_and_says_so(
    env: Env, running: Running
) -> None:
    code, said = ssa(env, running.ns, "glass-ssa", env.stack.oncall_creds)
    assert code == 0, said
    changed = time.monotonic()
    message = reverted_and_reported(env, running, "glass-ssa", changed)
    # Server-side apply records the change as GitWarden's: the Event cannot name anyone.
    assert "under GitWarden's own field manager name" in message, message
    assert "by field manager" not in message


def test_a_break_glass_change_left_in_place_is_reverted_within_seconds(
    env: Env, running: Running
) -> None:
    done = env.kubectl(
        env.stack.oncall_creds, "-n", running.ns, "patch", "configmap", "glass-left",
        "--type=merge", "-p", '{"data":{"k":"tampered-left-in-place"}}',
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "break-glass" in done.stderr.lower(), done.stderr
    changed = time.monotonic()
    message = reverted_and_reported(env, running, "glass-left", changed)
    assert "by field manager kubectl-patch" in message, message


@pytest.mark.parametrize("moved", ["name", "namespace"])
def test_a_sealed_secret_copied_elsewhere_stalls_the_revision_naming_the_file(
    env: Env, moved: str
) -> None:
    ns, name = unique("copy"), unique("sync")
    other = unique("other")
    sealed = env.seal(ns, "creds", {"password": "pw-copied-canary-1"})
    copy = json.loads(json.dumps(sealed))
    if moved == "name":
        copy["metadata"]["name"] = "creds-copy"
    else:
        copy["metadata"]["namespace"] = other
    repo = env.repo()
    repo.write(FILE, [m.namespace(ns), sealed])
    repo.write(
        "clusters/test/copy.yaml", [*([m.namespace(other)] if moved != "name" else []), copy]
    )
    bad = repo.commit("a sealed secret copied", "alice")
    output = reconcile_stack.refused(env.reconcile(env.config(repo, name)))
    # The refusal names the copied object and the file it sits in.
    where = f"SealedSecret {copy['metadata']['namespace']}/{copy['metadata']['name']}"
    assert where in output, output
    assert "(in clusters/test/copy.yaml" in output, output
    assert "no key could decrypt it" in output, output
    assert "pw-copied-canary-1" not in output
    stalled = env.condition(name, "Stalled")
    assert stalled["status"] == "True", stalled
    assert bad[:12] in stalled["message"]
    assert where in stalled["message"], stalled
    assert "(in clusters/test/copy.yaml" in stalled["message"], stalled
    core = k8s.CoreV1Api(env.admin)
    # Nothing of the revision was applied: not even the namespace.
    with pytest.raises(k8s.ApiException) as caught:
        core.read_namespace(ns)
    assert caught.value.status == 404


def test_a_commit_changed_after_signing_is_refused_and_nothing_applied(env: Env) -> None:
    """The signed commit's tree swapped for another (signature kept): a bad signature."""
    ns, name = unique("resigned"), unique("sync")
    repo = env.repo()
    repo.write(FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": GIT})])
    good = repo.commit("signed", "alice")
    repo.write(FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "tampered"})])
    repo.git("add", "-A")
    evil_tree = repo.git("write-tree").strip()
    # Read raw: the helper strips output, and the body's last newline is signed too.
    body = subprocess.run(
        ["git", "cat-file", "commit", good], cwd=repo.path, capture_output=True, check=True
    ).stdout.decode()
    good_tree = repo.git("rev-parse", f"{good}^{{tree}}").strip()
    assert f"tree {good_tree}\n" in body
    assert "gpgsig" in body
    forged_body = body.replace(f"tree {good_tree}\n", f"tree {evil_tree}\n", 1)
    path = env.workdir / f"forged-{unique('c')}"
    path.write_text(forged_body)
    forged = repo.git("hash-object", "-t", "commit", "-w", str(path)).strip()
    repo.git("update-ref", "refs/heads/main", forged)
    repo.git("reset", "-q", "--hard", forged)
    output = reconcile_stack.refused(env.reconcile(env.config(repo, name)))
    assert forged[:12] in output, output
    assert "bad-signature" in output, output
    stalled = env.condition(name, "Stalled")
    assert stalled["status"] == "True", stalled
    assert forged[:12] in stalled["message"]
    with pytest.raises(k8s.ApiException) as caught:
        k8s.CoreV1Api(env.admin).read_namespace(ns)
    assert caught.value.status == 404


def test_the_loops_requests_are_never_denied(env: Env, started: dt.datetime) -> None:
    reconcile_stack.assert_never_denied(env, started)
