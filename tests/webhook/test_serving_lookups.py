"""Reads from the API server made on the serving worker's event loop, under real gunicorn.

One worker with one request thread, the decision cache on, a real OPA and the session's real
kube-apiserver reached through a proxy that can hold its answers back. A scale review waits
for the read of its parent on the event loop: while that read hangs, the worker goes on
answering (from memory on the loop, and a cache miss on its only thread, which the waiting
review does not hold), and at the read's deadline the review is answered fail-closed, sent
once. The worker's exit line counts the reads its event loop waited for.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.harness import slowproxy
from tests.harness.controlplane import LOOPBACK, ControlPlane
from tests.harness.services import OpaServer, WebhookServer
from tests.webhook import reviews
from tests.webhook.test_parents_apiserver import (
    MANAGED,
    reader,
    reader_rbac,  # noqa: F401  # a fixture
    wait_for_gets,
)
from tests.webhook.test_serving_fastpath import connect, read_answer, request
from webhook import app as app_mod

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("reader_rbac")]

GOLDEN = reviews.golden()["cases"]
SCALE = GOLDEN["scale_by_human_denied"]["input"]
CONFIGMAP = GOLDEN["user_update_configmap_denied"]["input"]
_READ_WAITS = re.compile(r"which waited for (\d+) reads from the API server")


def _scale(namespace: str, name: str) -> bytes:
    case = {**SCALE, "namespace": namespace, "name": name}
    return reviews.body(reviews.review_from_input(case, uid=f"scale-{uuid.uuid4().hex[:8]}"))


def _configmap(name: str) -> bytes:
    case = {**CONFIGMAP, "name": name}
    return reviews.body(reviews.review_from_input(case, uid=f"cm-{uuid.uuid4().hex[:8]}"))


def _response(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    response = json.loads(body)["response"]
    assert isinstance(response, dict)
    return response


def test_a_hanging_read_holds_no_thread_and_fails_closed_at_its_deadline(
    control_plane: ControlPlane,
    admin: k8s.ApiClient,
    namespace: str,
    opa_server: OpaServer,
    tmp_path: Path,
) -> None:
    name = f"web-{uuid.uuid4().hex[:6]}"
    k8s.AppsV1Api(admin).create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": name, "labels": MANAGED},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:0"}]},
                },
            },
        },
    )
    with slowproxy.slow_proxy((LOOPBACK, control_plane.port)) as proxy:
        server = WebhookServer.self_signed(
            tmp_path,
            env={
                "GITWARDEN_WEBHOOK_OPA_URL": opa_server.url,
                "GITWARDEN_WEBHOOK_OPA_TIMEOUT": "1.0",  # also the reads' deadline
                "GITWARDEN_WEBHOOK_WORKERS": "1",
                "GITWARDEN_WEBHOOK_THREADS": "1",
                "GITWARDEN_WEBHOOK_DECISION_CACHE": "4096",
                "GITWARDEN_WEBHOOK_KUBECONFIG": str(reader(control_plane, tmp_path, proxy.port)),
            },
        )
        server.start()
        waiting, other = connect(server), connect(server)
        try:
            pending_w, pending_o = bytearray(), bytearray()
            for _ in range(2):  # OPA's decision, then the cache's; a fresh read each time
                waiting.sendall(request("/validate/parent", _scale(namespace, name)))
                assert _response(read_answer(waiting, pending_w))["allowed"] is False
            other.sendall(request("/validate", _configmap("cm")))
            assert _response(read_answer(other, pending_o))["allowed"] is False
            proxy.delay = 5.0  # the API server's answers are held back from now on
            began = time.monotonic()
            waiting.sendall(request("/validate/parent", _scale(namespace, name)))
            time.sleep(0.1)  # the review is waiting for its read on the event loop
            for cm in ("cm", "cm", "another-cm"):  # from memory, then OPA on the one thread
                other.sendall(request("/validate", _configmap(cm)))
                assert _response(read_answer(other, pending_o))["allowed"] is False
            answered_others = time.monotonic() - began
            failed = _response(read_answer(waiting, pending_w))
            waited = time.monotonic() - began
        finally:
            waiting.close()
            other.close()
            server.stop()
        proxy.delay = 0.0
    assert answered_others < 0.9, "the worker waited with the read"
    assert 0.9 <= waited < 2.5, waited
    assert failed["allowed"] is False
    assert app_mod.LOOKUP_FAILED in str(failed["status"])
    log = server.log()
    assert f"cannot read deployments {namespace}/{name}: timed out" in log
    found = _READ_WAITS.findall(log)
    assert found == ["3"], found
    assert wait_for_gets(control_plane, namespace, name, 3) == 3  # the hung one sent once
