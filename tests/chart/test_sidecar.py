"""The webhook pod's OPA, run as rendered: the init container's command makes the data document
from the rendered admission.yaml, and `opa` with the sidecar's arguments serves the packaged
policy with it and decides.

Paths under /etc/gitwarden and /var/run/gitwarden are mapped into a temporary directory and
OPA's loopback ports are swapped for free ones; everything else is the rendered command line,
run with the real `gitwarden` entry point and the real opa.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.chart import render
from tests.harness import services
from tests.harness.controlplane import Process, free_port, tool, wait_http

GOLDEN = render.ROOT / "policies" / "testdata" / "admission" / "golden.json"


def _mapped(text: str, root: Path, ports: dict[str, int]) -> str:
    for prefix in ("/etc/gitwarden", "/var/run/gitwarden"):
        text = text.replace(prefix, f"{root}{prefix}")
    for fixed, free in ports.items():
        text = text.replace(fixed, f"127.0.0.1:{free}")
    return text


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310 - a loopback URL built here
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


@pytest.mark.parametrize("value_set", ["default", "hardened-values.yaml"])
def test_sidecar_serves_the_packaged_policy_with_the_derived_data(
    value_set: str, tmp_path: Path
) -> None:
    docs = render.documents(value_set)
    [deployment] = render.of(docs, "Deployment", "webhook")
    pod = deployment["spec"]["template"]["spec"]
    [config_map] = [d for d in render.every(docs, "ConfigMap") if "admission.yaml" in d["data"]]
    for mount in ("/etc/gitwarden/admission", "/etc/gitwarden/policies"):
        target = tmp_path / mount.lstrip("/")
        target.mkdir(parents=True)
        for name, text in config_map["data"].items():
            (target / name).write_text(text)
    (tmp_path / "var/run/gitwarden/opa").mkdir(parents=True)
    ports = {"127.0.0.1:8181": free_port(), "127.0.0.1:8282": free_port()}

    [init] = pod["initContainers"]
    command = [_mapped(part, tmp_path, ports) for part in init["command"]]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    made = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert made.returncode == 0, made.stderr

    opa = next(c for c in pod["containers"] if c["name"] == "opa")
    assert opa["command"] == ["opa"]
    argv = [str(tool("opa")), *(_mapped(a, tmp_path, ports) for a in opa["args"])]
    opa_env = {e["name"]: e["value"] for e in opa.get("env", [])}
    server = Process("opa", argv, tmp_path / "opa.log", env={**os.environ, **opa_env})
    server.start()
    try:
        base = f"http://127.0.0.1:{ports['127.0.0.1:8181']}"
        wait_http(server, f"{base}/health")
        admission = render.file_of(docs, "admission.yaml")
        data = _post(f"{base}/v1/data/gitwarden/admission/gitops", {})["result"]
        assert data["service_account"] == admission["gitops"]["service_account"]
        case = json.loads(GOLDEN.read_text())["cases"]["admin_create_deployment_denied"]
        decision = _post(f"{base}/v1/data/admission/decision", {"input": case["input"]})
        assert decision["result"]["allowed"] is False
        assert decision["result"]["reason"] == case["expect"]["reason"]
        # The decision cache's premise: this sidecar's policy and data cannot be changed.
        write = urllib.request.Request(  # noqa: S310 - the loopback sidecar's http URL
            f"{base}/v1/data/gitwarden/admission", data=b"{}", method="PUT"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(write, timeout=10)  # noqa: S310 - the loopback sidecar
        refused.value.close()
        assert refused.value.code == 401
    finally:
        server.stop()


def test_the_harness_runs_opa_with_the_go_runtime_settings_the_chart_ships() -> None:
    """Tests and benches measure the OPA that is deployed: the same GOGC and GOMEMLIMIT."""
    [deployment] = render.of(render.documents("default"), "Deployment", "webhook")
    opa = next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "opa"
    )
    shipped = {e["name"]: e["value"] for e in opa["env"]}
    assert shipped == services.OPA_ENV
    assert "--disable-telemetry" in opa["args"]
    assert "--authorization=basic" in opa["args"]  # as every harness OPA not asked to be writable
