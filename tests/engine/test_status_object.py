"""The Sync status object in the real API server: kubectl shows it and waits on it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pathlib
import subprocess
import uuid
from types import MappingProxyType

import pytest

from gitwarden_cli import main
from reconciler import (
    apply,
    applyplan,
    changeset,
    cluster,
    cluster_errors,
    config,
    objectref,
    status,
    syncstore,
)
from tests.engine.conftest import SETTINGS
from tests.engine_plans import configmap, plan_of, planned
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster
NOW = dt.datetime(2026, 12, 1, 22, 0, tzinfo=dt.UTC)


@pytest.fixture
def kubeconfig(control_plane: ControlPlane, tmp_path: pathlib.Path) -> pathlib.Path:
    return control_plane.admin_kubeconfig(tmp_path / "admin.kubeconfig")


@pytest.fixture
def name() -> str:
    return f"sync-{uuid.uuid4().hex[:8]}"


def kubectl(kubeconfig: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_successful_pass_is_ready_in_kubectl_and_round_trips_its_inventory(
    target: cluster.Cluster, kubeconfig: pathlib.Path, namespace: str, name: str
) -> None:
    applyset = status.applyset_id(name)
    plan = plan_of(
        [planned(configmap(namespace, "a", {"k": "v"}), applyset=applyset)],
        applyset=applyset,
        commit="c" * 40,
    )
    done = apply.run(plan, target, SETTINGS)
    target.write_status(name, status.succeeded(plan, done), NOW)

    waited = kubectl(kubeconfig, "wait", "--for=condition=Ready", f"sync/{name}", "--timeout=20s")
    assert waited.returncode == 0, waited.stderr
    table = kubectl(kubeconfig, "get", "sync", name)
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "REVISION", "SIGNER", "AGE"]
    assert row.split()[:3] == [name, "True", "c" * 12]

    stored = target.inventory(name)
    assert stored.commit == "c" * 40
    assert dict(stored.entries) == dict(status.inventory_after(plan, done, complete=True).entries)
    assert target.stored_commit(name) == "c" * 40
    found = syncstore.read(target, name)
    assert found is not None
    assert found["metadata"]["labels"] == {
        status.APPLYSET_ID_LABEL: applyset,
        config.MANAGED_LABEL_KEY: config.MANAGED_LABEL_VALUE,
    }
    annotations = found["metadata"]["annotations"]
    assert annotations[status.APPLYSET_GROUP_KINDS] == "ConfigMap"
    assert annotations[status.APPLYSET_TOOLING].startswith("gitwarden/")
    crd = json.loads(kubectl(kubeconfig, "get", "crd", syncstore.CRD_NAME, "-o", "json").stdout)
    assert crd["metadata"]["labels"]["applyset.kubernetes.io/is-parent-type"] == "true"


def test_a_stalled_pass_keeps_the_last_applied_commit_and_what_it_applied(
    target: cluster.Cluster, kubeconfig: pathlib.Path, namespace: str, name: str
) -> None:
    applyset = status.applyset_id(name)
    good = plan_of(
        [planned(configmap(namespace, "a", {"k": "1"}), applyset=applyset)],
        applyset=applyset,
        commit="1" * 40,
    )
    target.write_status(name, status.succeeded(good, apply.run(good, target, SETTINGS)), NOW)
    bad_object = configmap(namespace, "b", {})
    bad_object["metadata"]["labels"] = {"x": "not valid!"}
    # A stage is checked before it is written, so what a failed pass applies comes from an
    # earlier stage: the ClusterRole (cluster stage) before the invalid ConfigMap.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"a2-{namespace}"},
        "rules": [],
    }
    bad = plan_of(
        [
            planned(role, applyset=applyset),
            planned(bad_object, applyset=applyset),
        ],
        applyset=applyset,
        previous=target.inventory(name),
        commit="2" * 40,
    )
    with pytest.raises(apply.ApplyStalled) as caught:
        apply.run(bad, target, config_serial())
    written = target.write_status(
        name, status.failed(caught.value, bad), NOW + dt.timedelta(minutes=1)
    )
    conditions = {c["type"]: c for c in written["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Stalled"]["status"]) == ("False", "True")
    assert conditions["Stalled"]["reason"] == "Invalid"
    assert f"ConfigMap {namespace}/b" in conditions["Stalled"]["message"]
    assert written["lastAppliedCommit"] == "1" * 40
    assert written["lastAttemptedCommit"] == "2" * 40
    waited = kubectl(kubeconfig, "wait", "--for=condition=Stalled", f"sync/{name}", "--timeout=20s")
    assert waited.returncode == 0, waited.stderr
    # What the failed pass applied before it stopped is on record, next to what came before,
    # and so is what it planned but did not reach (without a version: never trusted as applied).
    stored = target.inventory(name).entries
    assert {ref.name for ref in stored} == {"a", f"a2-{namespace}", "b"}
    assert [e.resource_version for r, e in stored.items() if r.name == "b"] == [""]


def config_serial() -> config.ApplyConfig:
    return config.ApplyConfig(qps=0, concurrency=1)


def test_ten_thousand_inventory_entries_fit_in_one_object(
    target: cluster.Cluster, name: str
) -> None:
    entries = {
        objectref.ObjectRef(
            "apps", "Deployment", f"team-{i % 50:02d}", f"service-{i:05d}"
        ): applyplan.InventoryEntry(
            hashlib.sha256(str(i).encode()).hexdigest(),
            str(1_000_000 + i),
            f"teams/team-{i % 50:02d}/service-{i:05d}.yaml",
        )
        for i in range(10_000)
    }
    inventory = applyplan.Inventory(commit="d" * 40, entries=MappingProxyType(entries))
    outcome = status.Outcome("d" * 40, "alice", changeset.ChangeSet(), inventory)
    encoded = json.dumps(status.encode_inventory(inventory))
    assert len(encoded) < 1_000_000  # measured: about 0.6 MB; etcd's limit is 1.5 MB
    target.write_status(name, outcome, NOW)
    assert target.inventory(name).entries == entries


def test_gitwarden_status_prints_the_sync_and_exits_by_readiness(
    target: cluster.Cluster,
    kubeconfig: pathlib.Path,
    namespace: str,
    name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main.main(["status", f"--kubeconfig={kubeconfig}", f"--name={name}"]) == main.EXIT_FAILED
    assert "no Sync object" in capsys.readouterr().err
    applyset = status.applyset_id(name)
    plan = plan_of([planned(configmap(namespace, "a", {}), applyset=applyset)], applyset=applyset)
    target.write_status(name, status.succeeded(plan, apply.run(plan, target, SETTINGS)), NOW)
    assert main.main(["status", f"--kubeconfig={kubeconfig}", f"--name={name}"]) == main.EXIT_OK
    text = capsys.readouterr().out
    assert f"Sync {name}: Ready=True (Applied)" in text
    assert "1 created" in text
    assert (
        main.main(["status", f"--kubeconfig={kubeconfig}", f"--name={name}", "--json"])
        == main.EXIT_OK
    )
    shown = json.loads(capsys.readouterr().out)
    assert [row["ref"] for row in shown["status"]["inventory"]] == [f"/ConfigMap/{namespace}/a"]
    target.write_status(name, status.failed(cluster_errors.Busy("apply: HTTP 503")), NOW)
    assert main.main(["status", f"--kubeconfig={kubeconfig}", f"--name={name}"]) == main.EXIT_FAILED
    assert "Ready=False (Busy)" in capsys.readouterr().out


def test_gitwarden_status_without_a_usable_kubeconfig_is_a_usage_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.kubeconfig"
    assert main.main(["status", f"--kubeconfig={missing}"]) == main.EXIT_USAGE
    assert "cannot load cluster credentials" in capsys.readouterr().err
