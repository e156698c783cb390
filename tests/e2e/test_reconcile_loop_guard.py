"""The running loop keeps GitWarden's own webhook configuration and retries cluster-side stalls.

`gitwarden reconcile --config F` runs as a child process *as* the GitOps service account against
the real kube-apiserver (webhook and OPA enforcing), its self-guard fed the document that
`gitwarden webhook configuration` prints, with exactly the chart's RBAC on that one object (get,
watch, patch, update by name; no create). alice, who may patch webhook configurations, switches
GitWarden off three ways; each is put back within seconds by the watch (the pass interval is a
minute), and the Event names her field manager. A deleted configuration that the reconciler may
not create again is reported loudly. Then a pass that RBAC forbids stalls, an admin grants the
RBAC, and the same process applies the same commit with no new commit and no restart.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from reconciler.guard import selfguard
from tests.e2e import loop_process, reconcile_stack, webhook_stack
from tests.e2e import reconcile_manifests as m
from tests.e2e.loop_process import conditions, wait_for
from tests.e2e.reconcile_stack import Env, unique

pytestmark = pytest.mark.cluster

APP_FILE = "clusters/test/app.yaml"
NAME = "gitwarden"  # registration.NAME, as the stack registers it
GUARD_RBAC = "e2e-reconciler-selfguard"
EDITOR_RBAC = "e2e-webhook-config-editor"
RESTORED_WITHIN = 5.0


@pytest.fixture(scope="module")
def rbac(env: Env) -> Iterator[None]:
    """The chart's rule for the GitOps identity (by name, no create) and alice's patch right."""
    vwc = {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["validatingwebhookconfigurations"],
    }
    gitops = webhook_stack._sa(webhook_stack.GITOPS_NS, webhook_stack.GITOPS_SA)
    rule = {**vwc, "resourceNames": [NAME], "verbs": ["get", "watch", "patch", "update"]}
    webhook_stack._grant(env.admin, GUARD_RBAC, [gitops], [rule])
    editor = {**vwc, "verbs": ["get", "list", "patch", "update"]}
    webhook_stack._grant(env.admin, EDITOR_RBAC, [webhook_stack._user("alice")], [editor])
    try:
        yield
    finally:
        webhook_stack.revoke(env.admin, GUARD_RBAC, EDITOR_RBAC)


@pytest.fixture(scope="module")
def expected(env: Env) -> Path:
    """What `gitwarden webhook configuration` prints for the stack's admission document."""
    ca = env.workdir / "webhook-ca.crt"
    ca.write_bytes(env.stack.plane.webhook_ca.cert_pem)
    done = reconcile_stack.run_cli(
        "webhook", "configuration",
        "--config", str(env.workdir / "admission-config.yaml"),
        "--url", env.stack.webhook.url,
        "--ca-bundle", str(ca),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = env.workdir / "webhook-configuration.yaml"
    path.write_text(done.stdout)
    return path


@pytest.fixture
def loops() -> Iterator[loop_process.Running]:
    yield from loop_process.running()


def _live(env: Env) -> dict[str, Any]:
    api = k8s.AdmissionregistrationV1Api(env.admin)
    found = api.api_client.sanitize_for_serialization(
        api.read_validating_webhook_configuration(NAME)
    )
    assert isinstance(found, dict)
    return found


def _as_expected(env: Env, expected: Path) -> bool:
    target = selfguard.Target(yaml.safe_load(expected.read_text()), webhook_stack.GITOPS_NS)
    try:
        return not selfguard.differences(target, _live(env))
    except k8s.ApiException as exc:
        if exc.status == 404:
            return False
        raise


def _events(env: Env, sync: str, reason: str) -> list[str]:
    listed = k8s.CoreV1Api(env.admin).list_namespaced_event(
        reconcile_stack.EVENTS_NAMESPACE, field_selector=f"involvedObject.name={sync}"
    )
    return [str(e.message) for e in listed.items if e.reason == reason]


def _start(env: Env, loops: loop_process.Running, expected: Path, **loop: Any) -> tuple[Any, str]:
    ns, sync = unique("guarded"), unique("sync")
    repo = env.repo()
    repo.write(APP_FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "v1"})])
    commit = repo.commit("initial", "alice")
    running = loops.start(
        env,
        env.config(repo, sync),
        guard={"webhook_configuration_file": str(expected)},
        loop={"interval": 60.0, **loop},  # only the watch can be this fast
    )
    running.applied(commit)
    wait_for(
        lambda: conditions(env, sync).get("WebhookConfiguration") == ("True", "AsExpected"),
        30,
        "the WebhookConfiguration condition",
    )
    return running, sync


def _index(env: Env, hook: str) -> int:
    return [w["name"] for w in _live(env)["webhooks"]].index(hook)


def _attacks(managed: int, ruled: int) -> list[list[dict[str, Any]]]:
    """A matchCondition that exempts alice, failurePolicy Ignore, a rule removed."""
    exempt = {"name": "not-alice", "expression": 'request.userInfo.username != "alice"'}
    return [
        [{"op": "add", "path": f"/webhooks/{managed}/matchConditions/-", "value": exempt}],
        [{"op": "replace", "path": f"/webhooks/{managed}/failurePolicy", "value": "Ignore"}],
        [{"op": "remove", "path": f"/webhooks/{ruled}/rules/0"}],
    ]


def test_alices_three_ways_to_switch_gitwarden_off_are_undone_within_seconds_naming_her_manager(
    env: Env, rbac: None, expected: Path, loops: loop_process.Running
) -> None:
    running, sync = _start(env, loops, expected)
    assert _as_expected(env, expected)
    managed = _index(env, webhook_stack.HOOK)
    # A webhook with more than one rule: one of them goes.
    hooks = _live(env)["webhooks"]
    ruled = next(i for i, w in enumerate(hooks) if len(w.get("rules") or []) > 1)
    took = []
    for number, patch in enumerate(_attacks(managed, ruled), 1):
        done = env.kubectl(
            env.stack.alice_creds,
            "patch", "validatingwebhookconfiguration", NAME, "--type=json", "-p", json.dumps(patch),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        began = time.monotonic()
        wait_for(lambda: _as_expected(env, expected), RESTORED_WITHIN, f"attack {number} undone")
        took.append(round(time.monotonic() - began, 2))
        wait_for(
            lambda: len(_events(env, sync, "WebhookConfigurationRestored")) >= number,  # noqa: B023  # called before the next iteration
            10,
            f"the Event of attack {number}",
        )
    print(f"restored after {took} s")  # the README quotes it (`pytest -s`)
    messages = _events(env, sync, "WebhookConfigurationRestored")
    assert all("kubectl-patch (Update" in text for text in messages), messages
    assert any(f"webhooks[{webhook_stack.HOOK}].matchConditions[not-alice]" in t for t in messages)
    assert any(f"webhooks[{webhook_stack.HOOK}].failurePolicy" in t for t in messages)
    assert any(f"webhooks[{hooks[ruled]['name']}].rules" in t for t in messages)
    assert all('alice"' not in t and "Ignore" not in t for t in messages)  # paths, not values
    lines = [ln for ln in running.lines() if "restored (server-side apply" in str(ln["message"])]
    assert len(lines) >= 3
    assert all(ln["managers"] == ["kubectl-patch"] for ln in lines), lines
    exposed = running.get("/metrics")[1]
    assert 'gitwarden_webhook_configuration_restores_total{result="restored"} 3.0' in exposed
    assert "gitwarden_webhook_configuration_intact 1.0" in exposed
    owners = {e["manager"] for e in _live(env)["metadata"]["managedFields"]}
    assert "kubectl-patch" not in owners
    assert conditions(env, sync)["WebhookConfiguration"] == ("True", "Restored")
    # alice is denied again: her exemption is gone.
    ns = unique("after")
    k8s.CoreV1Api(env.admin).create_namespace({"metadata": {"name": ns}})
    k8s.CoreV1Api(env.stack.gitops).create_namespaced_config_map(
        ns, webhook_stack.configmap("cm", webhook_stack.MANAGED)
    )
    webhook_stack.denied_message(
        lambda: k8s.CoreV1Api(env.stack.alice).patch_namespaced_config_map(
            "cm", ns, {"data": {"k": uuid.uuid4().hex}}
        )
    )
    assert running.terminate() == 0


def test_a_deleted_configuration_the_reconciler_may_not_create_is_reported_loudly(
    env: Env, rbac: None, expected: Path, loops: loop_process.Running
) -> None:
    running, sync = _start(env, loops, expected)
    document = yaml.safe_load(expected.read_text())
    env.stack.plane.delete_validating_webhook(NAME)
    try:
        wait_for(
            lambda: conditions(env, sync).get("WebhookConfiguration", ("", ""))[1] == "Missing",
            RESTORED_WITHIN,
            "the Missing condition",
        )
        wait_for(
            lambda: bool(_events(env, sync, "WebhookConfigurationNotRestored")),
            10,
            "the Event",
        )
        [message, *_] = _events(env, sync, "WebhookConfigurationNotRestored")
        assert f"ValidatingWebhookConfiguration {NAME} was deleted; NOT restored" in message
        assert "no create" in message
        exposed = running.get("/metrics")[1]
        assert 'gitwarden_webhook_configuration_restores_total{result="failed"}' in exposed
        assert "gitwarden_webhook_configuration_intact 0.0" in exposed
        assert any(
            ln["level"] == "error" and "NOT restored" in ln["message"] for ln in running.lines()
        )
    finally:
        env.stack.plane.register_validating_webhook(document)  # an admin puts it back
    # The watch sees it come back: the condition says so without a pass.
    wait_for(
        lambda: conditions(env, sync).get("WebhookConfiguration") == ("True", "AsExpected"),
        RESTORED_WITHIN,
        "the condition back to True",
    )
    assert running.terminate() == 0


LIMITS_RBAC = "e2e-reconciler-limitranges"


def test_a_pass_rbac_forbids_stalls_then_applies_by_itself_once_an_admin_grants_the_rbac(
    env: Env, loops: loop_process.Running
) -> None:
    ns, sync = unique("rbacfix"), unique("sync")
    repo = env.repo()
    limits = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "limits", "namespace": ns},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "100m"}}]},
    }
    repo.write(APP_FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "v"}), limits])
    commit = repo.commit("a LimitRange the GitOps identity may not write yet", "alice")
    running = loops.start(
        env,
        env.config(repo, sync),
        loop={"interval": 1.0, "stall_retry_max_intervals": 4.0},
    )
    stalled = running.wait_log(lambda ln: ln.get("result") == "stalled", what="the stall")
    assert stalled["reason"] == "Forbidden", stalled
    assert conditions(env, sync)["Stalled"][0] == "True"
    try:
        gitops = webhook_stack._sa(webhook_stack.GITOPS_NS, webhook_stack.GITOPS_SA)
        webhook_stack._grant(
            env.admin,
            LIMITS_RBAC,
            [gitops],
            [{"apiGroups": [""], "resources": ["limitranges"], "verbs": [
                "get", "list", "watch", "create", "patch", "delete"]}],
        )  # fmt: skip
        granted = time.monotonic()
        running.applied(commit, timeout=20)  # the same commit: nothing new in Git
        print(f"applied {time.monotonic() - granted:.2f} s after the grant")
        assert repo.head() == commit
        assert running.proc.poll() is None  # the same process, never restarted
        live = k8s.CoreV1Api(env.admin).read_namespaced_limit_range("limits", ns)
        assert live.spec.limits[0].default == {"cpu": "100m"}
        assert conditions(env, sync)["Ready"] == ("True", "Applied")
        stalls = [ln for ln in running.lines() if ln.get("result") == "stalled"]
        # Retried on the backoff (1, 2, 4, 4 ... s), not once per tip check, not in a storm.
        assert 1 <= len(stalls) <= 12, len(stalls)
    finally:
        webhook_stack.revoke(env.admin, LIMITS_RBAC)
    assert running.terminate() == 0
