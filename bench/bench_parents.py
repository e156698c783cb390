"""What one parent lookup costs the webhook's process: the official client against apitransport.

Starts the harness's control plane (etcd, kube-apiserver, controller manager), creates a
managed Deployment, and on one thread reads its PartialObjectMetadata `--lookups` times the
old way (the official client's `ApiClient.call_api`, as webhook/parents did before: urllib3's
pool, http.client), the new way (`parents.KubeParentLookup`: webhook/apitransport and the
shared answer reader) and bare (the same request's bytes on a TLS socket, read by the reader:
the floor under both), then as many one-item labelled LISTs (`any_labelled`) each way. The
ways alternate for `--rounds` rounds in the same minutes, so the machine's other load falls
on both alike. It prints this process's CPU (user + system, `time.process_time`) per lookup,
the median over the rounds and the spread, and wall time for reference only (the machine is
shared). Both ways authenticate with the same kubeconfig (the admin's client certificate),
TLS verified against the harness CA. 127.0.0.1 only; bounded by rounds times lookups.

    python -m bench.bench_parents [--lookups 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.e2e import webhook_stack
from tests.harness.controlplane import running_control_plane
from webhook import apitransport, httpreader, parents

NAMESPACE, NAME = "default", "bench-parent"
SELECTOR = "gitwarden.dev/managed=true"
_META = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class ClientLookup:
    """The lookup as webhook/parents made it before apitransport: through the client."""

    def __init__(self, kubeconfig: Path, timeout: float) -> None:
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
        self._client = k8s.ApiClient(configuration)
        self._timeout = timeout

    def get(self, path: str, query: dict[str, str], accept: str) -> dict[str, object]:
        method, url, headers, _, _ = self._client.param_serialize(
            "GET",
            path,
            query_params=list(query.items()),
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(
            method, url, header_params=headers, _request_timeout=self._timeout
        )
        status, raw = response.status, response.read()  # type: ignore[no-untyped-call]
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        body = json.loads(raw)
        assert isinstance(body, dict)
        return body

    def metadata(self) -> parents.ParentMeta:
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}"
        meta = self.get(path, {}, _META)["metadata"]
        assert isinstance(meta, dict)
        return parents.ParentMeta(labels=meta.get("labels") or {}, annotations={})

    def any_labelled(self) -> bool:
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        items = self.get(path, {"labelSelector": SELECTOR, "limit": "1"}, _LIST).get("items")
        return bool(items)


class Floor:
    """The same GET's bytes over a TLS socket with the same settings, read by the reader.

    No path building, no headers from the configuration, no JSON: what is left of a lookup
    once the Python around the exchange is gone (TLS records, system calls, the kernel's
    loopback), for scale.
    """

    def __init__(self, kubeconfig: Path, timeout: float) -> None:
        c = k8s.Configuration(proxy="", no_proxy="")
        k8s_config.load_kube_config(str(kubeconfig), client_configuration=c)  # type: ignore[no-untyped-call]
        context = apitransport.tls_context(
            verify=True,
            ca_file=c.ssl_ca_cert,
            ca_data=None,
            cert_file=c.cert_file,
            key_file=c.key_file,
        )
        server = apitransport.Server.from_url(c.host, None)
        raw = socket.create_connection((server.host, server.port), timeout)
        self._sock = context.wrap_socket(raw, server_hostname=server.server_hostname)
        self._wire = (
            f"GET /apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME} HTTP/1.1\r\n"
            f"Host: {server.host}:{server.port}\r\nAccept: {_META}\r\n"
            "Accept-Encoding: identity\r\n\r\n"
        ).encode()

    def exchange(self) -> bool:
        self._sock.sendall(self._wire)
        return httpreader.read_answer(self._sock)[0] == 200


def _timed(call: Callable[[], object], count: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per call over `count` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        call()
    return (
        (time.process_time() - cpu) * 1000 / count,
        (time.perf_counter() - wall) * 1000 / count,
    )


def _row(name: str, figures: list[tuple[float, float]]) -> str:
    cpu = [c for c, _ in figures]
    wall = statistics.median(w for _, w in figures)
    return (
        f"{name:<34} CPU {statistics.median(cpu):6.3f} ms/lookup "
        f"({min(cpu):.3f}-{max(cpu):.3f})   wall {wall:6.3f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with running_control_plane() as plane, tempfile.TemporaryDirectory() as tmp:
        apps = k8s.AppsV1Api(plane.admin())
        apps.create_namespaced_deployment(NAMESPACE, webhook_stack.deployment(NAME))  # type: ignore[arg-type]
        kubeconfig = plane.admin_kubeconfig(Path(tmp) / "admin.kubeconfig")
        old = ClientLookup(kubeconfig, 5.0)
        new = parents.KubeParentLookup.load(kubeconfig, 5.0)
        floor = Floor(kubeconfig, 5.0)
        ways: dict[str, Callable[[], object]] = {
            "GET  official client (before)": old.metadata,
            "GET  apitransport (after)": lambda: new.metadata(
                "apps", "v1", "deployments", NAMESPACE, NAME
            ),
            "GET  floor (the bare TLS exchange)": floor.exchange,
            "LIST official client (before)": old.any_labelled,
            "LIST apitransport (after)": lambda: new.any_labelled(
                "apps", "v1", "deployments", NAMESPACE, SELECTOR
            ),
        }
        for call in ways.values():  # warm: connections open, both answers as expected
            for _ in range(20):
                assert call(), "the lookup did not find the managed Deployment"
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, call in ways.items():
                figures[name].append(_timed(call, args.lookups))
        print(f"{args.lookups} lookups x {args.rounds} rounds, one thread, this process's CPU:")
        for name, rows in figures.items():
            print(_row(name, rows))
        for kind in ("GET ", "LIST"):
            before = statistics.median(c for c, _ in figures[f"{kind} official client (before)"])
            after = statistics.median(c for c, _ in figures[f"{kind} apitransport (after)"])
            print(f"{kind.strip()}: {before / after:.1f}x less CPU per lookup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
