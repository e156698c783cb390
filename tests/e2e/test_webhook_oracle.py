"""Attack: the webhook endpoint as an oracle and a lookup proxy (issue 9, items 10 and 11).

It runs a webhook stack of its own (with a client CA), so it sits beside the webhook e2e tests:
tests/attacks/ shares one stack per package, and the registration has one name.

Anyone reaching the webhook's port could post reviews and learn from the answers (the
repository, who is GitOps, whether a Deployment exists), and through `/validate/scale` make
the webhook request a URL of their choosing from the API server with its own credentials:
a name carrying `?watch=true` or a `/` went into the path. Now (1) with
GITWARDEN_WEBHOOK_CLIENT_CA the webhook answers reviews only to clients holding a
certificate from that CA, which the real API server presents through its admission
configuration (`--admission-control-config-file`, WebhookAdmissionConfiguration with a
kubeConfigFile); (2) malformed names are refused with HTTP 400 before any lookup, which the
API server's audit log confirms. Also here: a deletecollection denial names the object.
"""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.e2e.webhook_stack import (
    GITOPS_NS,
    GITOPS_SA,
    MANAGED,
    REPO,
    Stack,
    configmap,
    denied_message,
    running_stack,
    wait_until,
)
from tests.harness import pki
from tests.harness.controlplane import LOOPBACK, REPO_ROOT, ControlPlane
from tests.webhook import reviews
from webhook import config as config_mod

pytestmark = pytest.mark.cluster

CONFIG = config_mod.AdmissionConfig(
    namespace=GITOPS_NS, gitops_service_account=GITOPS_SA, repository_url=REPO
)
WEBHOOK_USER = f"system:serviceaccount:{GITOPS_NS}:webhook"
SCALE = reviews.golden()["cases"]["scale_by_human_denied"]["input"]
NAMESPACE_DELETE = reviews.golden()["cases"]["empty_namespace_delete_allowed"]["input"]

# (field, value): each would change the URL of the lookup if it were pasted into it.
MALFORMED: dict[str, tuple[str, str]] = {
    "query-in-name": ("name", "x?watch=true"),
    "slash-in-name": ("name", "a/b"),
    "dot-dot-name": ("name", ".."),
    "escaped-slash": ("name", "x%2Fsecrets"),
    "uppercase-name": ("name", "Web"),
    "fragment-in-name": ("name", "web#frag"),
    "slash-in-namespace": ("namespace", "kube-system/secrets"),
    "query-in-namespace": ("namespace", "team-a?watch=true"),
    "path-in-group": ("resource.group", "apps/v1/namespaces/kube-system"),
    "query-in-version": ("resource.version", "v1?watch=true"),
    "path-in-resource": ("resource.resource", "deployments/x?watch=true"),
}


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane, admin: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The webhook stack, answering reviews only to holders of the API server's client CA."""
    workdir = tmp_path_factory.mktemp("oracle")
    client_ca = workdir / "webhook-client-ca.crt"
    client_ca.write_bytes(control_plane.webhook_client_ca.cert_pem)
    env = {"GITWARDEN_WEBHOOK_CLIENT_CA": str(client_ca)}
    with running_stack(control_plane, admin, workdir, CONFIG, webhook_env=env) as s:
        yield s


def _client_context(stack: Stack, cert: pki.KeyPair | None) -> ssl.SSLContext:
    context = stack.webhook.tls_context()
    if cert is not None:
        directory = stack.workdir / f"client-{uuid.uuid4().hex[:8]}"
        directory.mkdir()
        crt, key = cert.write(directory, "client")
        context.load_cert_chain(str(crt), str(key))
    return context


def _api_server_like(stack: Stack) -> ssl.SSLContext:
    """A client holding a certificate from the CA the API server's own certificate comes from."""
    return _client_context(stack, stack.plane.webhook_client_ca.client("scale-lookup-test"))


def _scale_review(field: str, value: str) -> dict[str, Any]:
    review = reviews.review_from_input(copy.deepcopy(SCALE))
    request = review["request"]
    if field.startswith("resource."):
        request["resource"][field.removeprefix("resource.")] = value
    else:
        request[field] = value
    return review


def _post_scale(stack: Stack, review: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return _post(stack, "/validate/scale", review)


def _post(stack: Stack, path: str, review: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - loopback URL built here
        f"{stack.webhook.url}{path}",
        data=reviews.body(review),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, context=_api_server_like(stack), timeout=10) as r:  # noqa: S310
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _webhook_lookups(stack: Stack, since: int) -> list[str]:
    """Request URIs of the webhook's own API requests among audit events `since` onwards."""
    return [
        e.get("requestURI", "")
        for e in stack.plane.audit_events()[since:]
        if e.get("user", {}).get("username") == WEBHOOK_USER
    ]


def test_malformed_names_are_refused_before_any_lookup(stack: Stack) -> None:
    """Every malformed target gets 400 with a reason; the audit log shows none reached the API."""
    since = len(stack.plane.audit_events())
    answers = {case: _post_scale(stack, _scale_review(*MALFORMED[case])) for case in MALFORMED}
    for case, (status, body) in answers.items():
        assert status == 400, (case, body)
        assert body["error"] == "malformed AdmissionReview"
        assert "not a valid" in body["reason"], (case, body)
        assert "allowed" not in json.dumps(body)

    # Control: a well-formed name is looked up (and, being absent, has nothing to protect: the
    # API server answers that request with 404 itself), so the audit log does record the
    # webhook's lookups.
    control = f"no-such-{uuid.uuid4().hex[:8]}"
    status, body = _post_scale(stack, _scale_review("name", control))
    assert status == 200
    assert body["response"]["allowed"] is True
    wait_until(lambda: bool(_webhook_lookups(stack, since)), "the control lookup in the audit log")
    # The audit log is written in order, so every earlier lookup would be there by now.
    assert _webhook_lookups(stack, since) == [
        f"/apis/apps/v1/namespaces/team-a/deployments/{control}"
    ]


def test_a_namespace_delete_naming_no_namespace_lists_nothing(stack: Stack, namespace: str) -> None:
    """Before: with no name, the webhook listed the configured kinds across all namespaces."""
    since = len(stack.plane.audit_events())

    def review(name: str) -> dict[str, Any]:
        built = reviews.review_from_input(copy.deepcopy(NAMESPACE_DELETE))
        built["request"]["name"] = name
        built["request"]["oldObject"]["metadata"]["name"] = name
        return built

    status, body = _post(stack, "/validate/namespace-delete", review(""))
    assert status == 400, body
    assert "not a valid namespace name" in body["reason"]
    # Control: a namespace's delete is looked into, and only that namespace.
    status, body = _post(stack, "/validate/namespace-delete", review(namespace))
    assert status == 200, body
    wait_until(lambda: bool(_webhook_lookups(stack, since)), "the control lookups in the audit log")
    lookups = _webhook_lookups(stack, since)
    assert all(f"/namespaces/{namespace}/" in uri for uri in lookups), lookups


def test_the_api_server_presents_its_certificate_and_gets_decisions(
    stack: Stack, namespace: str
) -> None:
    """Through the real API server (mutual TLS): a change to a managed object is denied."""
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    message = denied_message(
        lambda: k8s.CoreV1Api(stack.alice).patch_namespaced_config_map(
            "cm", namespace, {"data": {"k": "changed"}}
        )
    )
    assert f"ConfigMap {namespace}/cm is managed by GitOps" in message


def _post_review(context: ssl.SSLContext, stack: Stack) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - loopback URL built here
        f"{stack.webhook.url}/validate",
        data=reviews.body(reviews.review_from_input(SCALE)),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as r:  # noqa: S310
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_clients_without_the_api_servers_certificate_learn_nothing(stack: Stack) -> None:
    """No certificate: 403 before the body is read; a foreign CA's: the handshake fails."""
    status, body = _post_review(_client_context(stack, None), stack)
    assert status == 403
    assert "client certificate" in body["error"]
    assert "response" not in body
    assert "GitOps" not in json.dumps(body)

    foreign = pki.CertificateAuthority("attacker-ca").client("kube-apiserver-webhook-client")
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        _post_review(_client_context(stack, foreign), stack)

    # Probes need no certificate; the same port answers them.
    with urllib.request.urlopen(  # noqa: S310 - loopback URL built here
        f"{stack.webhook.url}/readyz", context=_client_context(stack, None), timeout=10
    ) as resp:
        assert resp.status == 200

    # Each worker writes its log lines in batches (webhook/logbuffer.py): within moments.
    def logged(line: str) -> Callable[[], bool]:
        return lambda: line in stack.webhook.log()

    for line in ("refused a review from 127.0.0.1: no client certificate", "TLS handshake"):
        wait_until(logged(line), f"{line!r} in the log", 5)
    log = stack.webhook.log()
    assert "Traceback" not in log
    assert stack.metric("gitwarden_webhook_unauthenticated_requests_total") >= 1


def test_a_raw_tls_client_without_a_certificate_cannot_post_reviews(stack: Stack) -> None:
    """Straight over a socket, so no client library can hide a retry or a fallback."""
    raw = socket.create_connection((LOOPBACK, stack.webhook.port), timeout=10)
    with stack.webhook.tls_context().wrap_socket(raw, server_hostname=LOOPBACK) as tls:
        body = reviews.body(reviews.review_from_input(SCALE))
        tls.sendall(
            b"POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = tls.recv(65536)
            assert chunk
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 ")


def test_deletecollection_denial_names_the_object(stack: Stack, namespace: str) -> None:
    """`kubectl delete configmaps --all`: the API server asks per object with an empty name."""
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(namespace, configmap("kept", MANAGED))
    message = denied_message(
        lambda: k8s.CoreV1Api(stack.alice).delete_collection_namespaced_config_map(namespace)
    )
    assert f"ConfigMap {namespace}/kept is managed by GitOps" in message
    assert k8s.CoreV1Api(stack.gitops).read_namespaced_config_map("kept", namespace)


def test_the_api_server_is_answered_while_slow_clients_stall_the_port(
    stack: Stack, namespace: str
) -> None:
    """64 one-byte connections (issue 9, item 5): the API server's next call still gets a verdict.

    A frozen webhook would show as "failed calling webhook" after timeoutSeconds instead of
    the webhook's own denial, which `denied_message` tells apart.
    """
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(namespace, configmap("busy", MANAGED))
    stalled = []
    try:
        for _ in range(64):
            sock = socket.create_connection((LOOPBACK, stack.webhook.port), timeout=10)
            sock.sendall(b"\x16")
            stalled.append(sock)
        message = denied_message(
            lambda: k8s.CoreV1Api(stack.alice).patch_namespaced_config_map(
                "busy", namespace, {"data": {"k": "changed"}}
            )
        )
        assert f"ConfigMap {namespace}/busy is managed by GitOps" in message
    finally:
        for sock in stalled:
            sock.close()


def _readme_yaml(kind: str) -> dict[str, Any]:
    """The README's example manifest of `kind` (a ```yaml block)."""
    text = (REPO_ROOT / "README.md").read_text()
    for block in text.split("```yaml\n")[1:]:
        document = yaml.safe_load(block.split("```", 1)[0])
        if isinstance(document, dict) and document.get("kind") == kind:
            return document
    raise AssertionError(f"no {kind} example in the README")


def test_the_readme_network_policy_is_accepted_by_the_api_server(admin: k8s.ApiClient) -> None:
    """The documented NetworkPolicy is a valid object (server-side dry run, strict fields)."""
    policy = _readme_yaml("NetworkPolicy")
    with contextlib.suppress(k8s.ApiException):  # exists once a stack ran
        k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": GITOPS_NS}})
    created = k8s.NetworkingV1Api(admin).create_namespaced_network_policy(
        policy["metadata"]["namespace"], policy, dry_run="All", field_validation="Strict"
    )
    assert created.spec.pod_selector.match_labels == {"app.kubernetes.io/name": "gitwarden-webhook"}
    assert [p.port for rule in created.spec.ingress for p in rule.ports] == [8443, 8443]
    admission = _readme_yaml("AdmissionConfiguration")
    plugin = admission["plugins"][0]["configuration"]
    assert plugin["kind"] == "WebhookAdmissionConfiguration"  # the kind kube-apiserver accepts
