"""`/v1/cert.pem` over real HTTP on 127.0.0.1, fetched by urllib and by kubeseal itself."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reconciler import manifests
from reconciler.sealed import keys, objects
from reconciler.services import certserver
from tests import sealed_keys
from tests.integration import kubeseal_tool


class Ring:
    """The current key ring, swapped by the test the way rotation swaps it."""

    def __init__(self) -> None:
        self.ring = keys.KeyRing()

    def cert_pem(self) -> bytes:
        return self.ring.newest().certificate_pem()


@pytest.fixture
def served() -> Iterator[tuple[Ring, str]]:
    ring = Ring()
    with certserver.CertServer(certserver.Settings("127.0.0.1", 0), ring.cert_pem) as server:
        yield ring, f"http://127.0.0.1:{server.port}"


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  # 127.0.0.1 only
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_serves_the_newest_certificate_and_follows_renewal(served: tuple[Ring, str]) -> None:
    ring, base = served
    assert get(base + "/v1/cert.pem")[0] == 503
    ring.ring = sealed_keys.ring(0)
    status, content_type, body = get(base + "/v1/cert.pem")
    assert (status, content_type) == (200, "application/x-pem-file")
    assert body == sealed_keys.sealing_key(index=0).certificate_pem()
    ring.ring = sealed_keys.ring(0, 1)
    assert get(base + "/v1/cert.pem")[2] == sealed_keys.sealing_key(index=1).certificate_pem()
    assert get(base + "/v1/other")[0] == 404


def test_kubeseal_seals_with_the_served_certificate(
    served: tuple[Ring, str], tmp_path: Path
) -> None:
    ring, base = served
    # kubeseal refuses expired certificates, so this one is made valid from now.
    ring.ring = keys.KeyRing.of(
        [keys.certify(sealed_keys.private_key(), keys.SystemClock().now(), keys.KeyPolicy())]
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "web", "namespace": "app"},
        "stringData": {"token": "abc"},
    }
    out = kubeseal_tool.run(
        ["--cert", base + "/v1/cert.pem", "-o", "yaml"], json.dumps(secret).encode(), tmp_path
    )
    chooser = objects.KeyChooser(ring.ring, manifests.KeyHints())
    assert objects.unseal(yaml.safe_load(out), chooser).data["token"].reveal() == b"abc"
