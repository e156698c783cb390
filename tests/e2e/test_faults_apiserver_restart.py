"""Fault: kube-apiserver restarted in the middle of a pass, on a control plane of its own.

This module starts a second, small control plane (etcd, kube-apiserver, controller manager)
for its one test instead of restarting the session's: a restart that did not come back would
fail every later module, and the later modules' audit checks would read the restart's refused
requests as theirs. It is stopped at the end of the module (bounded: one start, one restart).

The loop applies a 400-object commit; while the pass is running the API server is stopped and
started again. The pass fails Transient, the loop retries, and the commit converges: every
object as in Git, the Sync Ready. The Lease outlasts the restart on purpose (a leader that
cannot renew exits by design, which `test_reconcile_loop_leader` covers).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from tests.e2e import loop_process, reconcile_stack
from tests.e2e import reconcile_manifests as m
from tests.e2e.loop_process import conditions, wait_for
from tests.e2e.reconcile_stack import Env, unique
from tests.harness.controlplane import ControlPlane, running_control_plane

pytestmark = pytest.mark.cluster

FILE = "clusters/test/many.yaml"
COUNT = 400
LONG_LEASE = {"lease_duration": 60.0, "renew_deadline": 40.0, "retry_period": 2.0}


@pytest.fixture(scope="module")
def own_plane() -> Iterator[ControlPlane]:
    with running_control_plane() as plane:
        yield plane


@pytest.fixture(scope="module")
def env(own_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("apiserver-restart")
    with reconcile_stack.running_env(own_plane, own_plane.admin(), workdir) as running:
        yield running


def many(ns: str, value: str) -> list[dict[str, object]]:
    return [m.namespace(ns), *(m.configmap(ns, f"cm-{i:03}", {"k": value}) for i in range(COUNT))]


def test_an_apiserver_restart_during_a_pass_is_retried_and_converges(
    env: Env, own_plane: ControlPlane
) -> None:
    ns, name = unique("restart"), unique("sync")
    repo = env.repo()
    repo.write(FILE, many(ns, "one")[:2])
    first = repo.commit("one object", "alice")
    running = loop_process.Running()
    try:
        loop = running.start(env, env.config(repo, name), leader=LONG_LEASE)
        loop.applied(first)
        repo.write(FILE, many(ns, "two"))
        second = repo.commit("four hundred", "alice")
        wait_for(
            lambda: conditions(env, name).get("Reconciling") == ("True", "Progressing"),
            30,
            "the pass of the big commit running",
            every=0.02,
        )
        away = own_plane.restart_apiserver()
        assert not [
            ln
            for ln in loop.lines()
            if ln.get("revision") == second and ln.get("result") == "applied"
        ], "the pass ended before the restart: the test proves nothing"
        print(f"kube-apiserver away {away:.1f}s during the pass")
        loop.applied(second, timeout=120)
        transient = [ln for ln in loop.lines() if ln.get("result") == "transient"]
        assert transient, "the restart did not reach the pass"
        live = k8s.CoreV1Api(env.admin).list_namespaced_config_map(ns).items
        values = {cm.metadata.name: cm.data for cm in live if cm.metadata.name.startswith("cm-")}
        assert len(values) == COUNT
        assert all(data == {"k": "two"} for data in values.values())
        assert conditions(env, name)["Ready"] == ("True", "Applied")
        assert "Traceback" not in loop.text()
        assert loop.terminate() == 0
    finally:
        running.stop_all()
