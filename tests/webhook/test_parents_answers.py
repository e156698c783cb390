"""The parent lookup against a scripted TLS server: every odd answer fails closed.

The real API server answers well; this server (TLS with a test CA, on 127.0.0.1) answers
request n with whatever the test scripts, so each odd answer is shown to be a `LookupFailed`
(never an allow, never an exception the app would turn into a 500) after exactly one
request, and what the lookup sends is read byte for byte.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.harness import pki
from tests.harness.controlplane import LOOPBACK
from webhook import apitransport, facts, parents

TOKEN = "t0ken-for-the-lookups"
META = json.dumps({"metadata": {"name": "web", "labels": {"a": "b"}, "uid": "u-1"}}).encode()


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


@contextmanager
def scripted(tmp_path: Path, answer: Callable[[int], bytes]) -> Iterator[tuple[Path, list[bytes]]]:
    """A TLS server answering request n with answer(n); yields a kubeconfig and the requests."""
    ca = pki.CertificateAuthority("gitwarden-test-scripted-ca")
    crt, key = ca.serving([LOOPBACK]).write(tmp_path, "scripted")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    server = socket.create_server((LOOPBACK, 0))
    server.settimeout(0.05)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():  # bounded: the test sets it on the way out
            try:
                raw, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(5)
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(0.1)  # then short waits, so the test's end is noticed
                    while request := _read_request(conn, stop):
                        seen.append(request)
                        reply = answer(len(seen))
                        if not reply:
                            time.sleep(1)  # no answer at all: the client's timeout decides
                            break
                        conn.sendall(reply)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": f"https://{LOOPBACK}:{server.getsockname()[1]}",
                    "certificate-authority-data": base64.b64encode(ca.cert_pem).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    try:
        yield kubeconfig, seen
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def _read_request(conn: ssl.SSLSocket, stop: threading.Event) -> bytes:
    """One request's head, or b"" at the end of the stream or when the test is over."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            if stop.is_set():
                return b""
            continue
        if not chunk:
            return b""
        data += chunk
    return data


def _lookup(kubeconfig: Path, timeout: float = 2.0) -> parents.KubeParentLookup:
    return parents.KubeParentLookup.load(kubeconfig, timeout)


def test_the_request_is_one_get_with_the_token_and_no_compression(tmp_path: Path) -> None:
    with scripted(tmp_path, lambda _n: _ok(META)) as (kubeconfig, seen):
        lookup = _lookup(kubeconfig)
        for _ in range(2):
            meta = lookup.metadata("apps", "v1", "deployments", "team-a", "web")
            assert meta == parents.ParentMeta(labels={"a": "b"}, annotations={}, uid="u-1")
        assert lookup.any_labelled("", "v1", "configmaps", "team-a", "x.example/y=1") is False
    first, *_ = seen
    lines = first.decode().split("\r\n")
    assert lines[0] == "GET /apis/apps/v1/namespaces/team-a/deployments/web HTTP/1.1"
    assert f"Authorization: Bearer {TOKEN}" in lines
    assert "Accept-Encoding: identity" in lines
    assert "Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1" in lines
    assert seen[2].startswith(
        b"GET /api/v1/namespaces/team-a/configmaps"
        b"?labelSelector=x.example%2Fy%3D1&limit=1 HTTP/1.1\r\n"
    )
    assert len(seen) == 3


def test_a_proxy_in_the_environment_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY naming a port nothing listens on: the lookup still goes straight there."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    with scripted(tmp_path, lambda _n: _ok(META)) as (kubeconfig, seen):
        assert _lookup(kubeconfig).metadata("apps", "v1", "deployments", "team-a", "web")
    assert len(seen) == 1


def test_a_kubeconfig_proxy_url_is_refused_not_bypassed(tmp_path: Path) -> None:
    with scripted(tmp_path, lambda _n: _ok(META)) as (kubeconfig, seen):
        config = yaml.safe_load(kubeconfig.read_text())
        config["clusters"][0]["cluster"]["proxy-url"] = "http://127.0.0.1:1"
        kubeconfig.write_text(yaml.safe_dump(config))
        with pytest.raises(ValueError, match="proxy-url"):
            _lookup(kubeconfig)
        # Served, the refusal is a LookupFailed (fail closed) that says why, for the operator.
        lazy = facts.LazyLookup(kubeconfig, 2.0, None)
        with pytest.raises(parents.LookupFailed, match="names a proxy-url"):
            lazy.get()
    assert seen == []


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (_ok(b"<html>not json</html>"), "not JSON"),
        (_ok(b"\xff\xfe{}"), "not JSON"),
        (_ok(b"[" * 100_000 + b"]" * 100_000), "not JSON"),
        (_ok(b'["metadata"]'), "not an object"),
        (_ok(b'{"kind":"Status"}'), "no metadata"),
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}", "HTTP 500"),
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}", "HTTP 401"),
        (
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n",
            "302",
        ),
        (_ok(META, b"Content-Encoding: gzip\r\n"), "BadAnswer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n", "BadAnswer"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "BadAnswer"),
        (b"", "TimeoutError"),
    ],
    ids=[
        "html",
        "not-utf8",
        "nested-past-the-stack",
        "a-list",
        "no-metadata",
        "500",
        "401",
        "redirect-not-followed",
        "compressed",
        "oversized",
        "not-http",
        "no-answer",
    ],
)
def test_an_odd_answer_fails_closed_after_one_request(
    tmp_path: Path, reply: bytes, message: str
) -> None:
    with scripted(tmp_path, lambda _n: reply) as (kubeconfig, seen):
        lookup = _lookup(kubeconfig, timeout=0.5)
        with pytest.raises(parents.LookupFailed) as excinfo:
            lookup.metadata("apps", "v1", "deployments", "team-a", "web")
    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith("cannot read deployments team-a/web: ")
    assert len(seen) == 1


def test_404_is_no_such_object_and_the_connection_is_kept(tmp_path: Path) -> None:
    missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}"
    with scripted(tmp_path, lambda n: missing if n == 1 else _ok(META)) as (kubeconfig, seen):
        lookup = _lookup(kubeconfig)
        assert lookup.metadata("apps", "v1", "deployments", "team-a", "web") is None
        assert lookup.any_labelled("apps", "v1", "deployments", "team-a", "a=b") is False
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("token", "message"),
    [("abc\r\nX-Injected: 1", "would break the request"), ("t\u00f6k\u20ac", "not latin-1")],
    ids=["line-break", "not-latin-1"],
)
def test_a_token_the_request_cannot_carry_is_never_sent(
    tmp_path: Path, token: str, message: str
) -> None:
    """A LookupFailed (fail closed), never a ValueError the app would answer with a 500."""
    with scripted(tmp_path, lambda _n: _ok(META)) as (kubeconfig, seen):
        config = yaml.safe_load(kubeconfig.read_text())
        config["users"][0]["user"]["token"] = token
        kubeconfig.write_text(yaml.safe_dump(config))
        with pytest.raises(parents.LookupFailed, match=message):
            _lookup(kubeconfig).metadata("apps", "v1", "deployments", "team-a", "web")
    assert seen == []


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6443", "https://u:p@127.0.0.1", "https://:p@127.0.0.1", "https://h/?x=1"],
)
def test_only_an_https_server_url_without_credentials_or_query_is_taken(url: str) -> None:
    with pytest.raises(ValueError, match="https://host"):
        apitransport.Server.from_url(url, None)


def test_the_server_url_keeps_its_path_prefix_and_ipv6_host() -> None:
    server = apitransport.Server.from_url("https://[fd00::1]/k8s/", None)
    assert server == apitransport.Server("fd00::1", 443, "/k8s", "fd00::1")
    named = apitransport.Server.from_url("https://10.0.0.1:6443", "kubernetes.default.svc")
    assert (named.port, named.server_hostname) == (6443, "kubernetes.default.svc")
