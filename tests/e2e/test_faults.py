"""Faults end to end, with the reconciler loop running: git, OPA and the API server misbehave.

The git remote unreachable (Transient: the status says so, the loop retries with backoff and
recovers when it is back), returning a corrupt pack (refused, nothing applied) and returning
a different history (a force-push: Stalled). OPA slow (answers just over the webhook's
engine timeout) and down, through a proxy in front of it: a human change is denied, never
allowed. The module's environment puts that proxy between the webhook and OPA.
"""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.e2e import loop_process, reconcile_stack, webhook_stack
from tests.e2e import reconcile_manifests as m
from tests.e2e.loop_process import conditions, wait_for
from tests.e2e.reconcile_stack import Env, unique
from tests.harness import gitopsrepo, httpgit, slowproxy
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

FILE = "clusters/test/app.yaml"


@pytest.fixture(scope="module")
def proxy() -> Iterator[slowproxy.SlowProxy]:
    with slowproxy.slow_proxy() as running:
        yield running


@pytest.fixture(scope="module")
def env(
    control_plane: ControlPlane,
    admin: k8s.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
    started: object,  # before the first request, as the shared fixture does
    proxy: slowproxy.SlowProxy,
) -> Iterator[Env]:
    """The shared environment, with the webhook asking OPA through `proxy`."""
    workdir = tmp_path_factory.mktemp("faults")
    wanted = {"GITWARDEN_WEBHOOK_OPA_URL": proxy.url}
    with reconcile_stack.running_env(control_plane, admin, workdir, wanted) as running:
        opa = urllib.parse.urlsplit(running.stack.opa.url)
        proxy.target = (str(opa.hostname), int(opa.port or 80))
        yield running


@pytest.fixture
def loops() -> Iterator[loop_process.Running]:
    yield from loop_process.running()


def settings(env: Env, ns: str) -> dict[str, str]:
    return dict(k8s.CoreV1Api(env.admin).read_namespaced_config_map("settings", ns).data or {})


def app(ns: str, value: str) -> list[dict[str, object]]:
    return [m.namespace(ns), m.configmap(ns, "settings", {"k": value})]


def transients(loop: loop_process.Loop) -> list[dict[str, object]]:
    return [line for line in loop.lines() if line.get("result") == "transient"]


def test_an_unreachable_remote_is_transient_retried_with_backoff_and_recovers(
    env: Env, loops: loop_process.Running
) -> None:
    ns, name = unique("away"), unique("sync")
    repo = env.repo()
    repo.write(FILE, app(ns, "one"))
    first = repo.commit("one", "alice")
    loop = loops.start(env, env.config(repo, name))
    loop.applied(first)
    gone = repo.path.with_name(repo.path.name + "-away")
    repo.path.rename(gone)  # the remote is not there any more
    try:
        wait_for(lambda: len(transients(loop)) >= 4, 30, "four transient passes")
    finally:
        gone.rename(repo.path)
    seen = conditions(env, name)
    assert seen["Reconciling"] == ("True", "FetchError"), seen
    assert seen["Ready"] == ("False", "FetchError"), seen
    assert seen["Stalled"][0] == "False", seen
    ready = env.condition(name, "Ready")
    assert "could not read from remote repository" in ready["message"].lower(), ready
    # Backoff: retry_base 0.5 s doubling to retry_max 2 s, so the gaps grow, then hold.
    stamps = [loop_process_time(line) for line in transients(loop)[:4]]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[-1] > gaps[0], gaps
    assert settings(env, ns) == {"k": "one"}
    repo.write(FILE, app(ns, "two"))
    second = repo.commit("two", "alice")
    loop.applied(second, timeout=30)
    assert settings(env, ns) == {"k": "two"}
    assert conditions(env, name)["Ready"] == ("True", "Applied")
    assert loop.terminate() == 0


def loop_process_time(line: dict[str, object]) -> float:
    """A JSON log line's time as seconds (the loop logs ISO-8601 `time`)."""
    return dt.datetime.fromisoformat(str(line["time"])).timestamp()


def test_a_remote_returning_a_different_history_stalls_and_changes_nothing(
    env: Env, loops: loop_process.Running
) -> None:
    ns, name = unique("rewritten"), unique("sync")
    repo = env.repo()
    repo.write(FILE, app(ns, "one"))
    repo.commit("one", "alice")
    repo.write(FILE, app(ns, "two"))
    applied = repo.commit("two", "alice")
    loop = loops.start(env, env.config(repo, name))
    loop.applied(applied)
    repo.reset(repo.anchor)
    repo.write(FILE, app(ns, "rewritten"))
    rewritten = repo.commit("rewritten, every commit signed", "bob")
    wait_for(lambda: conditions(env, name).get("Stalled", ("",))[0] == "True", 30, "Stalled")
    stalled = env.condition(name, "Stalled")
    assert applied[:12] in stalled["message"], stalled
    assert rewritten[:12] in str(env.sync(name)["status"])
    assert env.sync(name)["status"]["lastAppliedCommit"] == applied
    assert settings(env, ns) == {"k": "two"}
    assert loop.terminate() == 0


def bare_mirror(repo: gitopsrepo.GitOpsRepo, root: Path) -> Path:
    bare = root / "app.git"
    if not bare.exists():
        subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
    repo.git("push", "-q", "--force", str(bare), "main")
    return bare


def test_a_corrupt_pack_is_refused_and_nothing_is_applied(
    env: Env, loops: loop_process.Running, tmp_path: Path
) -> None:
    ns, name = unique("corrupt"), unique("sync")
    repo = env.repo()
    repo.write(FILE, app(ns, "one"))
    first = repo.commit("one", "alice")
    served = tmp_path / "served"
    served.mkdir()
    bare_mirror(repo, served)
    with httpgit.https_git_server(served) as server:
        source = {"url": server.url("app.git"), "ca_bundle": str(server.write_ca(tmp_path / "ca"))}
        loop = loops.start(env, env.config(repo, name), source=source)
        loop.applied(first)
        server.faults.corrupt_packs = True
        repo.write(FILE, app(ns, "from-a-corrupt-pack"))
        second = repo.commit("two", "alice")
        bare_mirror(repo, served)
        wait_for(lambda: len(transients(loop)) >= 2, 30, "two refused fetches")
        assert settings(env, ns) == {"k": "one"}
        assert env.sync(name)["status"]["lastAppliedCommit"] == first
        assert conditions(env, name)["Ready"] == ("False", "FetchError")
        said = " ".join(str(line.get("message")) for line in transients(loop))
        assert "git failed" in said, said
        server.faults.corrupt_packs = False
        loop.applied(second, timeout=30)
        assert settings(env, ns) == {"k": "from-a-corrupt-pack"}
        assert loop.terminate() == 0


def human_patch_denied(env: Env, ns: str) -> tuple[str, float]:
    """alice's patch of a managed ConfigMap: the denial message and how long it took."""
    alice = k8s.CoreV1Api(env.stack.alice)
    began = time.monotonic()
    with pytest.raises(k8s.ApiException) as caught:
        alice.patch_namespaced_config_map("cm", ns, {"data": {"k": "human"}})
    took = time.monotonic() - began
    assert caught.value.status in (403, 500), caught.value.body
    return str(caught.value.body), took


@pytest.fixture
def managed(env: Env) -> Iterator[str]:
    ns = unique("opa")
    admin = k8s.CoreV1Api(env.admin)
    admin.create_namespace({"metadata": {"name": ns}})
    with reconcile_stack.allowed_everything(env.admin, "alice"):
        gitops = k8s.CoreV1Api(env.stack.gitops)
        gitops.create_namespaced_config_map(
            ns, webhook_stack.configmap("cm", webhook_stack.MANAGED)
        )
        yield ns


@pytest.mark.parametrize("delay", [1.3, 3.5])
def test_a_slow_opa_denies_a_human_change_and_never_allows_it(
    env: Env, proxy: slowproxy.SlowProxy, managed: str, delay: float
) -> None:
    """1.3 s: just over the webhook's engine timeout (1 s); 3.5 s: over the API server's (3 s).

    Either way the webhook gives up on OPA at its own timeout and denies, well before the API
    server's: the denial is GitWarden's fail-closed message, not a webhook call failure.
    """
    proxy.delay = delay
    try:
        message, took = human_patch_denied(env, managed)
    finally:
        proxy.delay = 0.0
    print(f"OPA answering after {delay}s: denied in {took:.2f}s")
    assert "policy engine unavailable" in message, message
    assert "fail-closed" in message, message
    assert took < 3.0
    live = k8s.CoreV1Api(env.admin).read_namespaced_config_map("cm", managed)
    assert live.data == {"k": "v"}
    # Back to normal speed: the ordinary denial, naming Git.
    message, _ = human_patch_denied(env, managed)
    assert "is managed by GitOps" in message, message


def test_opa_down_denies_a_human_change(env: Env, proxy: slowproxy.SlowProxy, managed: str) -> None:
    proxy.refuse = True
    try:
        message, took = human_patch_denied(env, managed)
    finally:
        proxy.refuse = False
    assert "policy engine unavailable" in message, message
    assert took < 3.0
    assert k8s.CoreV1Api(env.admin).read_namespaced_config_map("cm", managed).data == {"k": "v"}
