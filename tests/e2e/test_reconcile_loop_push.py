"""The push receiver: a wrong HMAC gets 401 and runs nothing; a right one applies the new commit.

The reconciler runs with a long interval (no pass would come on its own during the test) and
a GitHub-style receiver on 127.0.0.1; the request is a real HTTP POST with
`X-Hub-Signature-256` over the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from tests.e2e import loop_process
from tests.e2e import reconcile_manifests as m
from tests.e2e.reconcile_stack import Env, unique

pytestmark = pytest.mark.cluster

FILE = "clusters/test/app.yaml"
SECRET = b"push-secret-e2e-0123456789"


@pytest.fixture
def loops() -> Iterator[loop_process.Running]:
    yield from loop_process.running()


def post(port: int, body: bytes, signature: str) -> int:
    request = urllib.request.Request(  # http to 127.0.0.1, a test
        f"http://127.0.0.1:{port}/hook",
        data=body,
        headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def passes(loop: loop_process.Loop) -> int:
    return len([ln for ln in loop.lines() if ln.get("result")])


def test_a_wrong_hmac_runs_nothing_and_a_right_one_applies_the_new_signed_commit(
    env: Env, loops: loop_process.Running
) -> None:
    ns, name = unique("push"), unique("sync")
    repo = env.repo()
    repo.write(FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "v1"})])
    first = repo.commit("initial", "alice")
    secret_file = env.workdir / f"{name}-github-secret"
    secret_file.write_bytes(SECRET + b"\n")
    loop = loops.start(
        env,
        env.config(repo, name),
        loop={"interval": 600.0},
        push={"listen": "127.0.0.1:0", "github_secret_file": str(secret_file)},
    )
    loop.applied(first)
    _, port = loop.ports()
    assert port is not None

    repo.write(FILE, [m.namespace(ns), m.configmap(ns, "settings", {"k": "v2"})])
    second = repo.commit("second", "alice")
    body = json.dumps({"ref": "refs/heads/main", "after": second}).encode()
    good = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    forged = "sha256=" + hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    before = passes(loop)
    for signature in (forged, "sha256=" + "0" * 64, "", "sha1=abc"):
        assert post(port, body, signature) == 401
    time.sleep(2.0)
    assert passes(loop) == before  # nothing ran
    core = k8s.CoreV1Api(env.admin)
    assert core.read_namespaced_config_map("settings", ns).data == {"k": "v1"}

    pushed = time.monotonic()
    assert post(port, body, good) == 202
    loop.applied(second, timeout=30)
    print(f"push to applied: {time.monotonic() - pushed:.2f}s")
    assert core.read_namespaced_config_map("settings", ns).data == {"k": "v2"}
    assert SECRET.decode() not in loop.text()
    assert loop.terminate() == 0
