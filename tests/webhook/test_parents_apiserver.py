"""The parent lookups against the real kube-apiserver: found, missing, forbidden, TLS, tokens.

The lookup is configured by the official client's loaders from a kubeconfig (client
certificate or token) or from in-cluster files, and talks to the session's API server, some
tests through a TCP proxy that counts and cuts connections. The API server's audit log says
how many requests really reached it, so "never sent twice" is read where it happens.

The reads made on an event loop (`KubeParentLookup.start`, last here): a small selector loop
plays the serving worker's, waiting for each `Pending` read's socket as the read asks and
advancing it, never blocking. Each read must answer exactly what a thread's read of the same
object answers; connections are kept alive and replaced after the API server's idle close
without a request sent twice; an answer that never comes ends the read at its deadline as a
failure, sent once; and the loop is refused where it would have to wait (a host name, a
credential plugin that runs a command, every connection busy).
"""

from __future__ import annotations

import selectors
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.config import incluster_config

from tests.harness import slowproxy
from tests.harness.controlplane import LOOPBACK, ControlPlane, Credentials
from webhook import apitransport, parents

pytestmark = pytest.mark.cluster

READER = "gitwarden-parents-reader"
RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["namespaces", "configmaps"], "verbs": ["get", "list"]},
    {"apiGroups": ["nope.example.com"], "resources": ["widgets"], "verbs": ["list"]},  # not served
]
MANAGED = {"gitwarden.dev/managed": "true"}


@pytest.fixture(scope="module")
def reader_rbac(admin: k8s.ApiClient) -> None:
    """The ClusterRole READER (the lookups' reads), bound to the user READER cluster-wide."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    binding = {
        "metadata": {"name": READER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": READER},
        "subjects": [{"kind": "User", "name": READER, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    for create, body in (
        (rbac.create_cluster_role, {"metadata": {"name": READER}, "rules": RULES}),
        (rbac.create_cluster_role_binding, binding),
    ):
        try:
            create(body)
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise


@pytest.fixture
def deployment(admin: k8s.ApiClient, namespace: str) -> str:
    """A managed Deployment (labels and an annotation) in the test's namespace."""
    name = f"web-{uuid.uuid4().hex[:6]}"
    body = {
        "metadata": {"name": name, "labels": MANAGED, "annotations": {"a.example/x": "1"}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:0"}]},
            },
        },
    }
    k8s.AppsV1Api(admin).create_namespaced_deployment(namespace, body)
    return name


def kubeconfig(
    plane: ControlPlane, creds: Credentials, path: Path, port: int = 0, **cluster: Any
) -> Path:
    """The plane's kubeconfig for `creds`, to `port` (default the API server's), edited."""
    plane.kubeconfig(creds, path)
    config = yaml.safe_load(path.read_text())
    entry = config["clusters"][0]["cluster"]
    entry["server"] = f"https://{LOOPBACK}:{port or plane.port}"
    entry.update(cluster)
    path.write_text(yaml.safe_dump(config))
    return path


def reader(plane: ControlPlane, tmp_path: Path, port: int = 0, **cluster: Any) -> Path:
    creds = plane.user_credentials(READER)
    return kubeconfig(plane, creds, tmp_path / f"kc-{uuid.uuid4().hex}", port, **cluster)


def gets_of(plane: ControlPlane, namespace: str, name: str) -> int:
    """How many GETs of the Deployment the API server finished, by its audit log."""
    return sum(
        1
        for e in plane.audit_events()
        if e.get("stage") == "ResponseComplete"
        and e.get("verb") == "get"
        and e["user"]["username"] == READER
        and e.get("objectRef", {}).get("namespace") == namespace
        and e.get("objectRef", {}).get("name") == name
    )


def wait_for_gets(plane: ControlPlane, namespace: str, name: str, expected: int) -> int:
    """The audit count once it reaches `expected` (or whatever it is after 5 s)."""
    deadline = time.monotonic() + 5
    while gets_of(plane, namespace, name) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # then a moment more: a resent request would show up here
    return gets_of(plane, namespace, name)


@pytest.mark.usefixtures("reader_rbac")
def test_a_client_certificate_reads_labels_annotations_and_uid(
    control_plane: ControlPlane,
    admin: k8s.ApiClient,
    namespace: str,
    deployment: str,
    tmp_path: Path,
) -> None:
    lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path), 5.0)
    meta = lookup.metadata("apps", "v1", "deployments", namespace, deployment)
    live = k8s.AppsV1Api(admin).read_namespaced_deployment(deployment, namespace)
    assert meta is not None
    assert (meta.labels, meta.uid, meta.terminating) == (MANAGED, live.metadata.uid, False)
    # The deployment controller may have added its revision annotation by now.
    assert meta.annotations["a.example/x"] == "1"
    ns = lookup.metadata("", "v1", "namespaces", "", namespace)
    assert ns is not None
    assert ns.terminating is False
    assert lookup.metadata("apps", "v1", "deployments", namespace, "absent") is None


@pytest.mark.usefixtures("reader_rbac", "deployment")
def test_the_list_finds_a_labelled_object_and_a_kind_not_served_has_none(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path), 5.0)
    selector = "gitwarden.dev/managed=true"
    assert lookup.any_labelled("apps", "v1", "deployments", namespace, selector) is True
    assert lookup.any_labelled("", "v1", "configmaps", namespace, selector) is False
    assert lookup.any_labelled("apps", "v1", "deployments", namespace, "x.example/y=1") is False
    assert lookup.any_labelled("nope.example.com", "v1", "widgets", "", selector) is False


def test_a_forbidden_read_fails_closed_naming_the_object_only(
    control_plane: ControlPlane, namespace: str, deployment: str, tmp_path: Path
) -> None:
    creds = control_plane.user_credentials("nobody-may-read")
    lookup = parents.KubeParentLookup.load(kubeconfig(control_plane, creds, tmp_path / "kc"), 5.0)
    with pytest.raises(parents.LookupFailed) as excinfo:
        lookup.metadata("apps", "v1", "deployments", namespace, deployment)
    assert str(excinfo.value) == f"cannot read deployments {namespace}/{deployment}: HTTP 403"


@pytest.mark.usefixtures("reader_rbac")
@pytest.mark.parametrize(
    ("cluster", "works"),
    [
        ({"tls-server-name": "localhost"}, True),
        ({"tls-server-name": "not-the-apiserver.example"}, False),
        ({"certificate-authority-data": None}, False),
    ],
    ids=["server-name-in-cert", "server-name-not-in-cert", "system-trust-only"],
)
def test_the_server_certificate_is_checked_against_the_ca_and_the_name(  # noqa: PLR0917
    control_plane: ControlPlane,
    namespace: str,
    deployment: str,
    tmp_path: Path,
    cluster: dict[str, Any],
    works: bool,
) -> None:
    """tls-server-name is honoured; a name not in the certificate, or no CA, fails closed."""
    path = reader(control_plane, tmp_path)
    config = yaml.safe_load(path.read_text())
    entry = config["clusters"][0]["cluster"]
    entry.update({k: v for k, v in cluster.items() if v is not None})
    for key in (k for k, v in cluster.items() if v is None):
        del entry[key]
    path.write_text(yaml.safe_dump(config))
    lookup = parents.KubeParentLookup.load(path, 5.0)
    if works:
        assert lookup.metadata("apps", "v1", "deployments", namespace, deployment) is not None
    else:
        with pytest.raises(parents.LookupFailed, match="SSLCertVerificationError"):
            lookup.metadata("apps", "v1", "deployments", namespace, deployment)


@pytest.mark.usefixtures("reader_rbac")
def test_lookups_share_one_connection_per_thread_and_reconnect_after_an_idle_close(
    control_plane: ControlPlane, namespace: str, deployment: str, tmp_path: Path
) -> None:
    """The API server's idle close is noticed before writing: no lookup fails, none is resent."""
    with slowproxy.slow_proxy((LOOPBACK, control_plane.port)) as proxy:
        lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path, proxy.port), 5.0)
        for _ in range(3):
            assert lookup.metadata("apps", "v1", "deployments", namespace, deployment)
        assert proxy.accepted == 1
        proxy.drop()
        time.sleep(0.1)  # the close reaches the client's socket
        assert lookup.metadata("apps", "v1", "deployments", namespace, deployment)
        assert proxy.accepted == 2

        def other_thread() -> None:
            for _ in range(2):
                assert lookup.metadata("apps", "v1", "deployments", namespace, deployment)

        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join(timeout=30)
        assert proxy.accepted == 3  # its own connection, kept for its second lookup
        assert lookup.metadata("apps", "v1", "deployments", namespace, deployment)
        assert proxy.accepted == 3
    assert wait_for_gets(control_plane, namespace, deployment, 7) == 7


@pytest.mark.usefixtures("reader_rbac")
def test_a_connection_lost_after_the_request_was_sent_fails_once_and_is_not_resent(
    control_plane: ControlPlane, namespace: str, deployment: str, tmp_path: Path
) -> None:
    """The request reached the API server, its answer never came: LookupFailed, no retry."""
    with slowproxy.slow_proxy((LOOPBACK, control_plane.port)) as proxy:
        lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path, proxy.port), 5.0)
        assert lookup.metadata("apps", "v1", "deployments", namespace, deployment)
        proxy.swallow = True
        with pytest.raises(parents.LookupFailed, match=f"deployments {namespace}/{deployment}"):
            lookup.metadata("apps", "v1", "deployments", namespace, deployment)
        assert wait_for_gets(control_plane, namespace, deployment, 2) == 2
        proxy.swallow = False
        assert lookup.metadata("apps", "v1", "deployments", namespace, deployment)
        assert proxy.accepted == 2
    assert wait_for_gets(control_plane, namespace, deployment, 3) == 3


@pytest.mark.usefixtures("reader_rbac")
def test_a_rotated_service_account_token_file_is_read_again(
    control_plane: ControlPlane,
    admin: k8s.ApiClient,
    namespace: str,
    deployment: str,
    tmp_path: Path,
) -> None:
    """The in-cluster loader's refresh hook (re-read after a minute) is asked on every lookup.

    The first token's account may not read Deployments; the kubelet-style rotation writes a
    token of one that may. The library re-reads the file once a minute, so this waits for it.
    """
    rbac = k8s.RbacAuthorizationV1Api(admin)
    allowed = f"reader-{uuid.uuid4().hex[:6]}"
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": allowed},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": READER,
            },
            "subjects": [{"kind": "ServiceAccount", "name": allowed, "namespace": namespace}],
        },
    )
    token_file, ca_file = tmp_path / "token", tmp_path / "ca.crt"
    token_file.write_text(control_plane.service_account_token(namespace, "not-a-reader"))
    ca_file.write_bytes(control_plane.ca_file.read_bytes())
    environ = {
        "KUBERNETES_SERVICE_HOST": LOOPBACK,
        "KUBERNETES_SERVICE_PORT": str(control_plane.port),
    }
    configuration = k8s.Configuration(proxy="", no_proxy="")
    # The loader load_incluster_config uses, pointed at these files instead of the pod's.
    loader = incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]  # untyped library
        token_filename=str(token_file), cert_filename=str(ca_file), environ=environ
    )
    loader.load_and_set(configuration)  # type: ignore[no-untyped-call]  # untyped library
    lookup = parents.KubeParentLookup(configuration, 5.0)
    with pytest.raises(parents.LookupFailed, match="HTTP 403"):
        lookup.metadata("apps", "v1", "deployments", namespace, deployment)
    token_file.write_text(control_plane.service_account_token(namespace, allowed))
    rotated = time.monotonic()
    found = None
    while found is None and time.monotonic() - rotated < 90:  # the library's period is 60 s
        try:
            found = lookup.metadata("apps", "v1", "deployments", namespace, deployment)
        except parents.LookupFailed:
            time.sleep(1)
    assert found is not None
    assert found.labels == MANAGED


# ------------------------------------------------------------- reads on an event loop


def run(pending: parents.Pending, budget: float = 10.0) -> tuple[parents.Answered, int]:
    """Drive one read to its end as the worker's loop does: (its answer, the steps it took).

    Past the read's own deadline it is expired, as the worker's `murder_pending` does.
    """
    selector = selectors.DefaultSelector()
    steps = 0
    try:
        ends = time.monotonic() + budget
        while True:
            event = selectors.EVENT_WRITE if pending.wants_write else selectors.EVENT_READ
            key = selector.register(pending.sock, event)
            ready = selector.select(max(min(pending.deadline, ends) - time.monotonic(), 0))
            selector.unregister(key.fileobj)
            if not ready:
                assert time.monotonic() < ends, "the read outlived the test's budget"
                pending.expire()
                return pending.result(), steps
            steps += 1
            if pending.advance():
                return pending.result(), steps
    finally:
        selector.close()


def started(lookup: parents.KubeParentLookup, read: parents.Read) -> parents.Pending:
    pending = lookup.start(read)
    assert pending is not None, "the loop refused a read it should make"
    return pending


@pytest.mark.usefixtures("reader_rbac")
def test_a_loop_read_answers_what_a_threads_read_answers(
    control_plane: ControlPlane, namespace: str, deployment: str, tmp_path: Path
) -> None:
    """Labels, annotations and uid; a missing object; a list with and without a match."""
    lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path), 5.0)
    read = parents.object_read("apps", "v1", "deployments", namespace, deployment)
    found, steps = run(started(lookup, read))
    by_thread = lookup.metadata("apps", "v1", "deployments", namespace, deployment)
    assert isinstance(found, parents.ParentMeta)
    assert by_thread is not None
    # (The deployment controller may add its revision annotation between the two reads.)
    assert (found.labels, found.uid, found.terminating) == (
        by_thread.labels,
        by_thread.uid,
        by_thread.terminating,
    )
    assert (found.labels, found.annotations["a.example/x"]) == (MANAGED, "1")
    assert found.uid
    assert steps >= 2  # connected, then handshake and answer: it never waited in a call
    missing = parents.object_read("apps", "v1", "deployments", namespace, "no-such-thing")
    assert run(started(lookup, missing))[0] is None
    for selector, expected in (("gitwarden.dev/managed=true", True), ("nope=1", False)):
        listing = parents.list_read("apps", "v1", "deployments", namespace, selector)
        assert run(started(lookup, listing))[0] is expected
    unserved = parents.list_read("nope.example.com", "v1", "widgets", namespace, "a=b")
    assert run(started(lookup, unserved))[0] is False


@pytest.mark.usefixtures("reader_rbac")
def test_a_forbidden_loop_read_fails_naming_the_object_only(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path), 5.0)
    read = parents.object_read("", "v1", "secrets", namespace, "db")
    with pytest.raises(
        parents.LookupFailed, match=rf"^cannot read secrets {namespace}/db: HTTP 403$"
    ):
        run(started(lookup, read))


@pytest.mark.usefixtures("reader_rbac")
def test_loop_reads_keep_one_connection_and_replace_it_after_an_idle_close(
    control_plane: ControlPlane, namespace: str, deployment: str, tmp_path: Path
) -> None:
    """One connection for reads in turn; the API server's close is noticed before writing."""
    read = parents.object_read("apps", "v1", "deployments", namespace, deployment)
    with slowproxy.slow_proxy((LOOPBACK, control_plane.port)) as proxy:
        lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path, proxy.port), 5.0)
        for _ in range(3):
            assert run(started(lookup, read))[0]
        assert proxy.accepted == 1
        proxy.drop()
        time.sleep(0.1)  # the close reaches the client's socket
        assert run(started(lookup, read))[0]
        assert proxy.accepted == 2
        # Two at once take two connections; both stay for what follows.
        first, second = started(lookup, read), started(lookup, read)
        assert run(first)[0]
        assert run(second)[0]
        assert proxy.accepted == 3
        assert run(started(lookup, read))[0]
        assert proxy.accepted == 3
    assert wait_for_gets(control_plane, namespace, deployment, 7) == 7


@pytest.mark.usefixtures("reader_rbac")
def test_an_answer_that_never_comes_fails_at_the_deadline_and_is_not_resent(
    control_plane: ControlPlane, namespace: str, deployment: str, tmp_path: Path
) -> None:
    read = parents.object_read("apps", "v1", "deployments", namespace, deployment)
    with slowproxy.slow_proxy((LOOPBACK, control_plane.port)) as proxy:
        lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path, proxy.port), 0.5)
        assert run(started(lookup, read))[0]
        proxy.delay = 3.0
        began = time.monotonic()
        with pytest.raises(parents.LookupFailed, match=r"deployments .*: timed out$"):
            run(started(lookup, read))
        assert 0.4 < time.monotonic() - began < 2.0
        proxy.delay = 0.0
        assert run(started(lookup, read))[0]  # a fresh connection: the late one is closed
        assert proxy.accepted == 2
    assert wait_for_gets(control_plane, namespace, deployment, 3) == 3


@pytest.mark.usefixtures("reader_rbac")
def test_a_cut_connection_fails_the_read_once(
    control_plane: ControlPlane, namespace: str, deployment: str, tmp_path: Path
) -> None:
    read = parents.object_read("apps", "v1", "deployments", namespace, deployment)
    with slowproxy.slow_proxy((LOOPBACK, control_plane.port)) as proxy:
        lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path, proxy.port), 5.0)
        assert run(started(lookup, read))[0]
        proxy.swallow = True
        with pytest.raises(parents.LookupFailed, match=f"deployments {namespace}/{deployment}"):
            run(started(lookup, read))
        proxy.swallow = False
        assert run(started(lookup, read))[0]
    assert wait_for_gets(control_plane, namespace, deployment, 3) == 3


@pytest.mark.usefixtures("reader_rbac")
def test_a_refused_connection_fails_the_read(tmp_path: Path, control_plane: ControlPlane) -> None:
    """Nothing listens: the read fails (at once or on its first step), never hangs."""
    with slowproxy.slow_proxy((LOOPBACK, control_plane.port)) as proxy:
        path = reader(control_plane, tmp_path, proxy.port)
    lookup = parents.KubeParentLookup.load(path, 2.0)  # the proxy has stopped: its port is shut
    read = parents.object_read("apps", "v1", "deployments", "default", "web")
    try:
        pending = lookup.start(read)  # refused at once, or
        failed = "" if pending is None else str(run(pending))  # on the first step
    except parents.LookupFailed as exc:
        failed = str(exc)
    assert failed.startswith("cannot read deployments default/web: "), failed


@pytest.mark.usefixtures("reader_rbac")
def test_every_loop_connection_busy_sends_the_read_to_a_thread(
    control_plane: ControlPlane, namespace: str, deployment: str, tmp_path: Path
) -> None:
    lookup = parents.KubeParentLookup.load(reader(control_plane, tmp_path), 5.0)
    read = parents.object_read("apps", "v1", "deployments", namespace, deployment)
    busy = [started(lookup, read) for _ in range(apitransport.LOOP_CONNECTIONS)]
    assert lookup.start(read) is None
    assert run(busy.pop())[0]  # one is over: its connection carries the next read
    busy.append(started(lookup, read))
    for pending in busy:
        assert run(pending)[0]


@pytest.mark.usefixtures("reader_rbac")
def test_the_loop_refuses_host_names_and_credential_plugins(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """Both would make the loop wait: a resolver, or a command the client runs for a token."""
    named = reader(control_plane, tmp_path)
    config = yaml.safe_load(named.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://localhost:{control_plane.port}"
    named.write_text(yaml.safe_dump(config))
    read = parents.object_read("apps", "v1", "deployments", "default", "web")
    assert parents.KubeParentLookup.load(named, 5.0).start(read) is None
    # A client certificate's reads are the loop's (every test above); an exec plugin's never.
    assert parents.loop_reads_allowed(reader(control_plane, tmp_path))
    config = yaml.safe_load(reader(control_plane, tmp_path).read_text())
    for user in ({"exec": {"command": "get-token"}}, {"auth-provider": {"name": "oidc"}}, None):
        config["users"][0]["user"] = user
        plugin = tmp_path / f"kc-{uuid.uuid4().hex}"
        plugin.write_text(yaml.safe_dump(config))
        assert parents.loop_reads_allowed(plugin) is False, user
    config["users"][0]["user"] = {"token": "static"}
    static = tmp_path / "kc-static"
    static.write_text(yaml.safe_dump(config))
    assert parents.loop_reads_allowed(static)
