"""Two replicas on one Lease: only the leader applies and repairs; SIGKILL it, the other takes over.

Both processes run `gitwarden reconcile` on the same configuration (one Sync, one Lease) as
the GitOps service account against the real kube-apiserver with the webhook enforcing. A
break-glass edit (allowed, warned) is reverted by the leader within 2 s and the Event names the
field manager that made it; after the leader is killed the standby leads within the Lease
duration and keeps repairing. Neither is ever denied, and the standby writes nothing.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from reconciler import controlconfig
from tests.e2e import loop_process, reconcile_stack, webhook_stack
from tests.e2e import reconcile_manifests as m
from tests.e2e.loop_process import Loop, wait_for
from tests.e2e.reconcile_stack import Env, unique

pytestmark = pytest.mark.cluster

FILE = "clusters/test/app.yaml"


@pytest.fixture
def loops() -> Iterator[loop_process.Running]:
    yield from loop_process.running()


def leads(loop: Loop) -> bool:
    return any(ln["message"] == "leading: starting the worker" for ln in loop.lines())


def cert_served(loop: Loop) -> str:
    """What the replica's certificate endpoint serves once it has read the keys (503 before)."""
    line = loop.wait_log(lambda ln: "cert.pem on" in str(ln["message"]), 30, "cert endpoint")
    url = f"http://127.0.0.1:{int(str(line['message']).rsplit(':', 1)[-1])}/v1/cert.pem"
    served: list[str] = []

    def fetched() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                served.append(answer.read().decode())
        except urllib.error.HTTPError as exc:
            if exc.code != 503:  # 503: no key read yet
                raise
            return False
        return True

    wait_for(fetched, 20, "the certificate served", every=0.2)
    return served[-1]


def break_glass(env: Env, ns: str, value: str) -> float:
    """A break-glass patch of the managed ConfigMap; returns when kubectl was started."""
    began = time.monotonic()
    done = env.kubectl(
        env.stack.oncall_creds, "-n", ns, "patch", "configmap", "settings",
        "--type=merge", "-p", f'{{"data":{{"k":"{value}"}}}}',
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "break-glass" in done.stderr.lower(), done.stderr
    return began


def reverted_within(env: Env, ns: str, since: float, seconds: float) -> float:
    core = k8s.CoreV1Api(env.admin)
    wait_for(
        lambda: core.read_namespaced_config_map("settings", ns).data == {"k": "git"},
        seconds,
        "the break-glass edit reverted",
        every=0.02,
    )
    return time.monotonic() - since


def repaired_events(env: Env, name: str) -> list[str]:
    listed = k8s.CoreV1Api(env.admin).list_namespaced_event(
        reconcile_stack.EVENTS_NAMESPACE, field_selector=f"involvedObject.name={name}"
    )
    return [str(e.message) for e in listed.items if e.reason == "DriftRepaired"]


def test_only_the_leader_applies_and_repairs_and_the_standby_takes_over_after_sigkill(
    env: Env, loops: loop_process.Running
) -> None:
    ns, name = unique("lead"), unique("sync")
    repo = env.repo()
    repo.write(FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "git"})])
    commit = repo.commit("initial", "alice")
    config = env.config(repo, name)
    sections = {
        "loop": {"interval": 300.0},  # only drift repair can revert within the test
        # Every replica serves the sealing certificate; renew_days 0: no new key is made.
        "keys": {"serve": True, "listen": "127.0.0.1:0", "renew_days": 0},
    }
    first, second = loops.start(env, config, **sections), loops.start(env, config, **sections)
    wait_for(lambda: leads(first) or leads(second), 30, "a leader")
    leader, standby = (first, second) if leads(first) else (second, first)
    leader.applied(commit)
    time.sleep(1.0)
    assert not leads(standby)
    assert standby.get("/readyz")[0] == 200  # a healthy standby is ready
    assert standby.get("/healthz")[0] == 200
    assert "gitwarden_leader 0.0" in standby.get("/metrics")[1]
    assert "gitwarden_leader 1.0" in leader.get("/metrics")[1]
    for replica in (leader, standby):
        assert cert_served(replica) == env.cert.read_text()

    took = reverted_within(env, ns, break_glass(env, ns, "glass-1"), 2.0)
    print(f"break-glass edit reverted by the leader in {took:.2f}s")
    wait_for(lambda: bool(repaired_events(env, name)), 10, "a DriftRepaired Event")
    message = repaired_events(env, name)[0]
    assert f"ConfigMap {ns}/settings" in message
    assert "kubectl-patch" in message  # the field manager that made the change

    leader.kill()
    killed = time.monotonic()
    wait_for(lambda: leads(standby), 15, "the standby leads")
    took_over = time.monotonic() - killed
    print(f"standby leading {took_over:.2f}s after the leader's SIGKILL")
    assert took_over < 3.0 + 2.0  # lease_duration, plus a retry period and the poll
    # The new leader's first pass verifies from the anchor and finds nothing to change.
    standby.applied(commit)
    took = reverted_within(env, ns, break_glass(env, ns, "glass-2"), 2.0)
    print(f"break-glass edit reverted by the new leader in {took:.2f}s")
    wait_for(lambda: len(repaired_events(env, name)) >= 2, 10, "a second DriftRepaired Event")
    # Before it led, the standby wrote nothing: no pass, no repair in its log.
    before = [ln for ln in standby.lines()]
    led_at = next(i for i, ln in enumerate(before) if ln["message"].startswith("leading: start"))
    assert not [ln for ln in before[:led_at] if ln.get("result") or ln.get("managers")]
    assert standby.terminate() == 0


def test_a_leader_that_sees_its_lease_taken_exits_1_at_once_without_a_traceback(
    env: Env, loops: loop_process.Running
) -> None:
    ns, name = unique("lost"), unique("sync")
    repo = env.repo()
    repo.write(FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "git"})])
    commit = repo.commit("initial", "alice")
    loop = loops.start(env, env.config(repo, name))
    loop.applied(commit)
    coordination = k8s.CoordinationV1Api(env.admin)
    lease_name, namespace = controlconfig.DEFAULT_LEASE, webhook_stack.GITOPS_NS
    lease = coordination.read_namespaced_lease(lease_name, namespace)
    assert lease.spec.holder_identity  # ours
    # Another holder, as after a partition in which a standby took over: stop leading now.
    lease.spec.holder_identity = "intruder"
    lease.spec.renew_time = dt.datetime.now(dt.UTC)
    coordination.replace_namespaced_lease(lease_name, namespace, lease)
    taken = time.monotonic()
    assert loop.proc.wait(10) == 1
    print(f"exited {time.monotonic() - taken:.2f}s after the Lease was taken")
    assert time.monotonic() - taken < 3.0  # a retry period (0.5 s) and the main thread's poll
    assert "Traceback" not in loop.text()
    assert any("lost the Lease while leading" in str(ln["message"]) for ln in loop.lines())
    coordination.delete_namespaced_lease(lease_name, namespace)  # the next test starts afresh


def test_the_replicas_requests_are_never_denied(env: Env, started: dt.datetime) -> None:
    """Runs last in the module: every request the GitOps identity made since it started."""
    reconcile_stack.assert_never_denied(env, started)
