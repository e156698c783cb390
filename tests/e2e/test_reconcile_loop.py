"""The long-running reconciler end to end: conditions per phase, stalls, SIGTERM, no plaintext.

`gitwarden reconcile --config F` runs as a child process *as* the GitOps service account
against the real kube-apiserver with the webhook and OPA enforcing; the tests watch the Sync
object with kubectl (`get`, `wait --for=condition=...`) and read the process's JSON log.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from reconciler import controlconfig
from tests.e2e import loop_process, reconcile_stack, webhook_stack
from tests.e2e import reconcile_manifests as m
from tests.e2e.loop_process import conditions, wait_for
from tests.e2e.reconcile_stack import Env, unique

pytestmark = pytest.mark.cluster

APP_FILE = "clusters/test/app.yaml"
MANY_FILE = "clusters/test/many.yaml"


@pytest.fixture
def loops() -> Iterator[loop_process.Running]:
    yield from loop_process.running()


def many(ns: str, count: int, value: str = "v") -> list[dict[str, Any]]:
    """A Namespace and `count` small ConfigMaps: enough for a pass that takes seconds."""
    return [m.namespace(ns), *(m.configmap(ns, f"cm-{i:03}", {"k": value}) for i in range(count))]


def sync_events(env: Env, name: str) -> list[k8s.CoreV1Event]:
    listed = k8s.CoreV1Api(env.admin).list_namespaced_event(
        reconcile_stack.EVENTS_NAMESPACE, field_selector=f"involvedObject.name={name}"
    )
    return list(listed.items)


def kubectl_ok(env: Env, *args: str) -> str:
    done = env.kubectl(None, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kubectl_shows_progressing_then_applied_then_stalled_by_a_bad_signature(
    env: Env, loops: loop_process.Running
) -> None:
    ns, name = unique("phases"), unique("sync")
    repo = env.repo()
    repo.write(MANY_FILE, many(ns, 20))
    first = repo.commit("initial", "alice")
    config = env.config(repo, name)
    loop = loops.start(env, config)
    loop.applied(first)
    kubectl_ok(env, "wait", "--for=condition=Ready", f"sync/{name}", "--timeout=30s")
    table = kubectl_ok(env, "get", "syncs", name, "-o", "wide")
    assert "True" in table
    assert first[:12] in table
    assert "alice@example.com" in table

    # A bigger commit: while it is applied the Sync is Reconciling, Ready Unknown.
    repo.write(MANY_FILE, many(ns, 400, "v2"))
    second = repo.commit("four hundred", "alice")
    kubectl_ok(env, "wait", "--for=condition=Reconciling", f"sync/{name}", "--timeout=30s")
    seen = conditions(env, name)
    assert seen["Ready"] == ("Unknown", "Progressing"), seen
    assert seen["Stalled"][0] == "False", seen
    assert second[:12] in str(env.sync(name)["status"]["conditions"])
    during = kubectl_ok(env, "get", "syncs", name, "-o", "wide")
    assert "Unknown" in during
    assert "Progressing" in during
    loop.applied(second, timeout=90)
    kubectl_ok(env, "wait", "--for=condition=Ready", f"sync/{name}", "--timeout=30s")
    assert conditions(env, name)["Reconciling"] == ("False", "Applied")
    assert env.sync(name)["status"]["inventory"]["count"] == 401

    # An unsigned commit: Stalled, Ready False naming the refusal; kubectl wait sees both.
    repo.write(MANY_FILE, many(ns, 400, "v3"))
    unsigned = repo.commit("unsigned", None)
    kubectl_ok(env, "wait", "--for=condition=Stalled", f"sync/{name}", "--timeout=30s")
    waited = env.kubectl(None, "wait", "--for=condition=Ready", f"sync/{name}", "--timeout=2s")
    assert waited.returncode != 0  # Ready is False: kubectl wait times out
    seen = conditions(env, name)
    assert seen["Ready"] == ("False", "RevisionRefused"), seen
    assert seen["Stalled"] == ("True", "RevisionRefused"), seen
    status = env.sync(name)["status"]
    assert status["lastAppliedCommit"] == second
    assert status["lastAttemptedCommit"] == unsigned
    refused = kubectl_ok(env, "get", "syncs", name, "-o", "wide")
    assert "RevisionRefused" in refused
    assert k8s.CoreV1Api(env.admin).read_namespaced_config_map("cm-000", ns).data == {"k": "v2"}
    reasons = [(e.type, e.reason) for e in sync_events(env, name)]
    assert ("Normal", "Applied") in reasons
    assert ("Warning", "RevisionRefused") in reasons
    described = kubectl_ok(env, "describe", "sync", name)
    assert "RevisionRefused" in described  # kubectl finds the Events of a cluster-scoped object
    exposed = loop.get("/metrics")[1]
    assert 'gitwarden_verification_failures_total{reason="unsigned"} 1.0' in exposed, exposed
    assert 'gitwarden_reconcile_passes_total{result="stalled"} 1.0' in exposed
    assert 'gitwarden_objects_applied_total{action="created"} 401.0' in exposed  # 21 + 380
    assert 'gitwarden_objects_applied_total{action="configured"} 20.0' in exposed


def test_a_stalled_tip_is_only_checked_until_a_signed_commit_moves_it(
    env: Env, loops: loop_process.Running
) -> None:
    ns, name = unique("stall"), unique("sync")
    repo = env.repo()
    repo.write(APP_FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "v1"})])
    repo.commit("unsigned first", None)
    loop = loops.start(env, env.config(repo, name), loop={"interval": 0.5})
    loop.wait_log(lambda line: line.get("result") == "stalled", what="stalled")
    time.sleep(4.0)  # eight intervals
    stalls = [line for line in loop.lines() if line.get("result") == "stalled"]
    assert len(stalls) == 1, stalls  # no retry storm: one pass, then cheap tip checks
    assert len(sync_events(env, name)) == 1
    repo.write(APP_FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "v2"})])
    signed = repo.commit("signed on top", "alice")
    # The whole range since the anchor is verified: the unsigned commit is still in it.
    wait_for(
        lambda: len([ln for ln in loop.lines() if ln.get("result") == "stalled"]) == 2,
        20,
        "a new tip runs one more pass",
    )
    assert signed in str(env.sync(name)["status"]["lastAttemptedCommit"])


def test_sigterm_during_a_pass_exits_0_without_a_traceback_and_keeps_the_record(
    env: Env, loops: loop_process.Running
) -> None:
    ns, name = unique("term"), unique("sync")
    repo = env.repo()
    repo.write(MANY_FILE, many(ns, 400))
    commit = repo.commit("four hundred", "alice")
    loop = loops.start(env, env.config(repo, name))
    core = k8s.CoreV1Api(env.admin)

    def applying() -> bool:
        try:
            # Managed ones only: kube-root-ca.crt appears as soon as the namespace does.
            managed = "gitwarden.dev/managed=true"
            return bool(core.list_namespaced_config_map(ns, limit=1, label_selector=managed).items)
        except k8s.ApiException:
            return False  # the namespace is not there yet

    wait_for(applying, 60, "the first ConfigMap applied")
    began = time.monotonic()
    assert loop.terminate() == 0, loop.text()
    stopped_in = time.monotonic() - began
    assert stopped_in < 10.0
    assert "Traceback" not in loop.text()
    lines = loop.lines()
    assert lines[-1]["message"] == "stopped"
    assert any(str(ln["message"]).startswith("released Lease") for ln in lines)
    lease = k8s.CoordinationV1Api(env.admin).read_namespaced_lease(
        controlconfig.DEFAULT_LEASE, webhook_stack.GITOPS_NS
    )
    assert not lease.spec.holder_identity  # handed back: a standby takes it at its next try
    status = env.sync(name)["status"]
    assert status.get("lastAppliedCommit") != commit  # it did not finish
    # Everything it may have created is on record (the write-ahead: all 401 planned).
    assert status["inventory"]["count"] == 401
    live = core.list_namespaced_config_map(ns).items
    assert 0 < len([cm for cm in live if cm.metadata.name.startswith("cm-")]) < 400
    # A restart converges on the commit.
    again = loops.start(env, env.config(repo, name))
    again.applied(commit, timeout=90)
    assert again.terminate() == 0


def test_secret_plaintext_is_never_in_logs_events_or_status(
    env: Env, loops: loop_process.Running
) -> None:
    ns, name = unique("quiet"), unique("sync")
    repo = env.repo()
    values = {"db-password": "pw-loop-plaintext-1", "api-token": "tok-loop-plaintext-1"}
    sealed = env.seal(ns, "creds", values)
    repo.write(APP_FILE, m.small_app(ns, {"k": "v"}, sealed))
    first = repo.commit("initial", "alice")
    loop = loops.start(env, env.config(repo, name), log={"level": "debug"})
    loop.applied(first)
    second_values = {"db-password": "pw-loop-plaintext-2", "api-token": "tok-loop-plaintext-2"}
    repo.write(APP_FILE, m.small_app(ns, {"k": "v2"}, env.seal(ns, "creds", second_values)))
    second = repo.commit("rotate", "alice")
    loop.applied(second)
    live = k8s.CoreV1Api(env.admin).read_namespaced_secret("creds", ns)
    assert {k: base64.b64decode(v).decode() for k, v in live.data.items()} == second_values
    status_code, exposed = loop.get("/metrics")
    assert status_code == 200
    assert f'gitwarden_revision_info{{commit="{second}"}} 1.0' in exposed, exposed
    assert loop.terminate() == 0
    texts = {
        "metrics": exposed,
        "log": loop.text(),
        "events": json.dumps([e.to_dict() for e in sync_events(env, name)], default=str),
        "status": json.dumps(env.sync(name), default=str),
    }
    assert "Applied" in texts["events"]
    assert second[:12] in texts["log"]
    for value in (*values.values(), *second_values.values()):
        for text in (value, base64.b64encode(value.encode()).decode()):
            for where, content in texts.items():
                assert text not in content, where


def test_the_loops_requests_are_never_denied(env: Env, started: dt.datetime) -> None:
    """Runs last in the module: every request the GitOps identity made since it started."""
    reconcile_stack.assert_never_denied(env, started)
