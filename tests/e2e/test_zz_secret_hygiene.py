"""Last of the end-to-end suite: no secret value the tests used is anywhere it was written.

Every plaintext a test handed to the product is in `tests.harness.canaries` (Env.seal
registers what it seals; drift tests register what they patch in). This module adds one value
of its own through a real loop pass (so it always checks something, also when run alone),
then scans, for each value as is and base64-encoded: every log file of the session (the
control plane's processes and the API server's audit log, every webhook, OPA and reconciler
loop log under the session's temporary directory), the texts kept as their process stopped
(loops' and webhooks' /metrics, every `gitwarden` CLI output), every Event in the cluster and
every Sync object with its status. A hit names the file or object, never the value.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.e2e import loop_process, reconcile_stack
from tests.e2e import reconcile_manifests as m
from tests.e2e.reconcile_stack import Env, unique
from tests.harness import canaries
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def one_pass(env: Env) -> Iterator[str]:
    """A loop that applies a Secret holding this module's own canary; yields the value."""
    ns, name = unique("hygiene"), unique("sync")
    secret = canaries.value("hygiene")
    repo = env.repo()
    repo.write(
        "clusters/test/app.yaml", m.small_app(ns, {"k": "v"}, env.seal(ns, "db", {"pw": secret}))
    )
    commit = repo.commit("a secret", "alice")
    processes = loop_process.Running()
    try:
        loop = processes.start(env, env.config(repo, name), log={"level": "debug"})
        loop.applied(commit)
        live = k8s.CoreV1Api(env.admin).read_namespaced_secret("db", ns)
        assert base64.b64decode(live.data["pw"]).decode() == secret  # it really went through
        assert loop.terminate() == 0
        yield secret
    finally:
        processes.stop_all()


def log_files(plane: ControlPlane, basetemp: Path) -> list[Path]:
    files = sorted({*plane.workdir.glob("*.log"), plane.audit_log, *basetemp.rglob("*.log")})
    return [f for f in files if f.is_file()]


def test_the_audit_policy_logs_secrets_at_metadata_level_only(
    one_pass: str, control_plane: ControlPlane
) -> None:
    """The audit log holds no request or response body (Secrets included), as in real clusters."""
    events = control_plane.audit_events()
    secret_events = [e for e in events if (e.get("objectRef") or {}).get("resource") == "secrets"]
    assert secret_events, "no Secret request was audited: the check would prove nothing"
    assert {e["level"] for e in secret_events} == {"Metadata"}
    assert not [e for e in secret_events if "requestObject" in e or "responseObject" in e]


def test_no_secret_value_is_in_any_log_event_status_or_metric(
    one_pass: str,
    env: Env,
    control_plane: ControlPlane,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    assert one_pass in canaries.values()
    files = log_files(control_plane, tmp_path_factory.getbasetemp())
    names = {f.name for f in files}
    # The scan covers what it says: the API server, its audit log, a webhook and a loop.
    assert {"audit.log", "kube-apiserver.log", "webhook.log"} <= names, names
    assert any(n.startswith("loop-") for n in names), names
    hits: list[str] = []
    for path in files:
        hits += [f"{path}: {h}" for h in canaries.found_in(path.read_text(errors="replace"))]
    kept = canaries.kept()
    assert any(where.startswith("loop /metrics") for where, _ in kept)
    for where, text in kept:
        hits += [f"{where}: {h}" for h in canaries.found_in(text)]
    core = k8s.CoreV1Api(env.admin)
    events = core.list_event_for_all_namespaces().items
    assert events
    for event in events:
        text = json.dumps(event.to_dict(), default=str)
        found = canaries.found_in(text)
        hits += [f"Event {event.metadata.namespace}/{event.metadata.name}: {h}" for h in found]
    syncs = k8s.CustomObjectsApi(env.admin).list_cluster_custom_object(
        reconcile_stack.SYNC_GROUP, reconcile_stack.SYNC_VERSION, reconcile_stack.SYNC_PLURAL
    )["items"]
    assert syncs
    for sync in syncs:
        found = canaries.found_in(json.dumps(sync, default=str))
        hits += [f"Sync {sync['metadata']['name']}: {h}" for h in found]
    print(
        f"scanned {len(files)} log files, {len(kept)} kept texts, {len(events)} Events and "
        f"{len(syncs)} Syncs for {len(canaries.values())} secret values"
    )
    assert hits == []
