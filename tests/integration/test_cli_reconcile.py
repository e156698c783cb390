"""`gitwarden reconcile --once` against the real kube-apiserver: exit codes, the printed
ChangeSet, refusals that name the commit, dry runs that change nothing and mask Secrets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import uuid

import pytest
import yaml
from kubernetes import client as k8s

from gitwarden_cli import main
from reconciler.sealed import objects
from reconciler.services import kube_keys
from tests import sealed_keys
from tests.harness import signedrepo
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster


@dataclasses.dataclass
class Setup:
    repo: signedrepo.SignedRepo
    config: pathlib.Path
    kubeconfig: pathlib.Path
    namespace: str
    anchor: str

    def run(self, *extra: str) -> int:
        args = ["reconcile", "--config", str(self.config), "--kubeconfig", str(self.kubeconfig)]
        return main.main([*args, *extra])


def manifests_for(namespace: str, value: str, *, secret: bool = True) -> dict[str, str]:
    meta = {"name": "settings", "namespace": namespace}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"mode": value}}
    files = {"apps/settings.yaml": yaml.safe_dump(cm)}
    if secret:
        sealed = objects.seal(
            {"kind": "Secret", "metadata": {"name": "db", "namespace": namespace},
             "stringData": {"password": "hunter2-never-printed"}},
            sealed_keys.sealing_key(2048, 0).certificate,
            sealed_keys.EPOCH + dt.timedelta(days=1),
        )  # fmt: skip
        files["apps/db.yaml"] = yaml.safe_dump(sealed)
    return files


@pytest.fixture
def setup(
    tmp_path: pathlib.Path, control_plane: ControlPlane, admin: k8s.ApiClient, namespace: str
) -> Setup:
    repo = signedrepo.build(tmp_path / "git")
    anchor = repo.commit({"README.md": "the anchor"})
    keys_ns = f"gw-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": keys_ns}})
    kube_keys.write_key(admin, keys_ns, sealed_keys.sealing_key(2048, 0))
    settings = {
        "source": {"url": str(repo.path), "paths": ["apps"], "cache_dir": str(tmp_path / "cache")},
        "trust": {"anchor": anchor, "allowed_signers": str(repo.allowed_signers)},
        "identity": {"namespace": keys_ns, "name": f"sync-{uuid.uuid4().hex[:8]}"},
        "apply": {"qps": 1000, "burst": 1000},
    }
    path = tmp_path / "gitwarden.yaml"
    path.write_text(yaml.safe_dump(settings))
    kubeconfig = control_plane.admin_kubeconfig(tmp_path / "kubeconfig")
    return Setup(repo, path, kubeconfig, namespace, anchor)


def test_a_pass_applies_and_a_second_changes_nothing(
    setup: Setup, admin: k8s.ApiClient, capsys: pytest.CaptureFixture[str]
) -> None:
    tip = setup.repo.commit(manifests_for(setup.namespace, "one"))
    assert setup.run("--once") == main.EXIT_OK
    out = capsys.readouterr().out
    assert f"{tip[:12]}: 2 created" in out
    assert f"ConfigMap {setup.namespace}/settings created" in out
    core = k8s.CoreV1Api(admin)
    live = core.read_namespaced_config_map("settings", setup.namespace)
    assert live.metadata.labels["gitwarden.dev/managed"] == "true"
    assert live.metadata.annotations["gitwarden.dev/source-path"] == "apps/settings.yaml"
    assert core.read_namespaced_secret("db", setup.namespace).data["password"]
    assert setup.run("--once") == main.EXIT_OK
    assert f"{tip[:12]}: 2 unchanged" in capsys.readouterr().out


def test_an_unsigned_commit_is_refused_naming_it_and_nothing_changes(
    setup: Setup, admin: k8s.ApiClient, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.repo.commit(manifests_for(setup.namespace, "one", secret=False))
    assert setup.run("--once") == main.EXIT_OK
    bad = setup.repo.commit(manifests_for(setup.namespace, "evil", secret=False), signed=False)
    capsys.readouterr()
    assert setup.run("--once") == main.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"{bad}: unsigned" in err
    assert "Traceback" not in err
    live = k8s.CoreV1Api(admin).read_namespaced_config_map("settings", setup.namespace)
    assert live.data == {"mode": "one"}


def test_a_dry_run_prints_masked_diffs_and_changes_nothing(
    setup: Setup, admin: k8s.ApiClient, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.repo.commit(manifests_for(setup.namespace, "one"))
    assert setup.run("--once", "--dry-run") == main.EXIT_OK
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "***" in out
    assert "dry run: nothing was changed" in out
    core = k8s.CoreV1Api(admin)
    with pytest.raises(k8s.ApiException) as caught:
        core.read_namespaced_config_map("settings", setup.namespace)
    assert caught.value.status == 404


def test_configuration_errors_exit_2_naming_the_key(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    text = setup.config.read_text().replace(setup.anchor, "main")
    setup.config.write_text(text)
    assert setup.run("--once") == main.EXIT_USAGE
    assert "trust.anchor: must be a full commit id" in capsys.readouterr().err


def test_a_dry_run_without_once_is_a_usage_error(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup.run("--dry-run") == main.EXIT_USAGE
    assert "--dry-run needs --once" in capsys.readouterr().err


def test_an_attacker_written_stored_commit_is_ignored_reported_and_lets_nothing_through(
    setup: Setup, admin: k8s.ApiClient, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.repo.commit(manifests_for(setup.namespace, "one", secret=False))
    assert setup.run("--once") == main.EXIT_OK
    name = yaml.safe_load(setup.config.read_text())["identity"]["name"]
    custom = k8s.CustomObjectsApi(admin)
    forged = "f" * 40
    custom.patch_cluster_custom_object_status(
        "gitwarden.dev", "v1alpha1", "syncs", name, {"status": {"lastAppliedCommit": forged}}
    )
    capsys.readouterr()
    assert setup.run("--once") == main.EXIT_OK
    assert f"ignored the stored last-applied commit {forged}" in capsys.readouterr().err
    written = custom.get_cluster_custom_object("gitwarden.dev", "v1alpha1", "syncs", name)
    assert any(forged in w for w in written["status"]["warnings"])
    # Now the forged value names an unsigned commit on top: it is still refused.
    unsigned = setup.repo.commit(manifests_for(setup.namespace, "evil", secret=False), signed=False)
    custom.patch_cluster_custom_object_status(
        "gitwarden.dev", "v1alpha1", "syncs", name, {"status": {"lastAppliedCommit": unsigned}}
    )
    assert setup.run("--once") == main.EXIT_FAILED
    assert f"{unsigned}: unsigned" in capsys.readouterr().err
    live = k8s.CoreV1Api(admin).read_namespaced_config_map("settings", setup.namespace)
    assert live.data == {"mode": "one"}


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"apps/README.md": "moved elsewhere"}, "renders zero objects"),
        ({"README.md": "apps/ is gone"}, "the configured path is not in the commit"),
    ],
)
def test_an_empty_or_missing_path_deletes_nothing_and_says_so(
    setup: Setup,
    admin: k8s.ApiClient,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str],
    says: str,
) -> None:
    setup.repo.commit(manifests_for(setup.namespace, "one", secret=False))
    assert setup.run("--once") == main.EXIT_OK
    setup.repo.commit(files)
    capsys.readouterr()
    assert setup.run("--once") == main.EXIT_FAILED
    assert says in capsys.readouterr().err
    assert k8s.CoreV1Api(admin).read_namespaced_config_map("settings", setup.namespace).data


def test_a_protected_kind_is_pruned_only_when_git_allowed_it_last_time(
    setup: Setup, admin: k8s.ApiClient, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = yaml.safe_load(setup.config.read_text())
    settings["apply"]["protected_kinds"] = ["ConfigMap"]
    setup.config.write_text(yaml.safe_dump(settings))

    def cm(name: str, allow: bool) -> str:
        meta: dict[str, object] = {"name": name, "namespace": setup.namespace}
        if allow:
            meta["annotations"] = {"gitwarden.dev/prune": "allow"}
        return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})

    keep = {"apps/keep.yaml": cm("keep", False)}
    setup.repo.commit(
        {**keep, "apps/a.yaml": cm("allowed", True), "apps/b.yaml": cm("kept", False)}
    )
    assert setup.run("--once") == main.EXIT_OK
    setup.repo.commit(keep)
    capsys.readouterr()
    assert setup.run("--once") == main.EXIT_OK
    out = capsys.readouterr().out
    assert f"ConfigMap {setup.namespace}/allowed deleted" in out
    names = {
        c.metadata.name
        for c in k8s.CoreV1Api(admin).list_namespaced_config_map(setup.namespace).items
    }
    assert {"keep", "kept"} <= names
    assert "allowed" not in names


def test_a_pass_that_fails_half_way_keeps_what_it_applied_on_record(
    setup: Setup, admin: k8s.ApiClient, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler import objectref, status

    broken = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "web", "namespace": setup.namespace}, "spec": {}}  # fmt: skip
    # The ClusterRole's stage (cluster-scoped) is applied before the namespaced stage, whose
    # dry-run check then refuses the Deployment: nothing of that stage is written.
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": f"halfway-{setup.namespace}"}, "rules": []}  # fmt: skip
    files = manifests_for(setup.namespace, "one", secret=False)
    setup.repo.commit(
        {**files, "apps/web.yaml": yaml.safe_dump(broken), "apps/role.yaml": yaml.safe_dump(role)}
    )
    assert setup.run("--once") == main.EXIT_FAILED
    err = capsys.readouterr().err
    assert "Deployment.apps" in err
    assert "before it stopped: 1 created" in err
    name = yaml.safe_load(setup.config.read_text())["identity"]["name"]
    sync = k8s.CustomObjectsApi(admin).get_cluster_custom_object(
        "gitwarden.dev", "v1alpha1", "syncs", name
    )
    recorded = status.decode_inventory(sync["status"])
    assert (
        objectref.ObjectRef(
            "rbac.authorization.k8s.io", "ClusterRole", "", f"halfway-{setup.namespace}"
        )
        in recorded.entries
    )
    # Planned but not applied (its stage was refused whole): on record for a later prune, with
    # no digest or version, so the next pass applies it rather than trusting it.
    unreached = recorded.entries[objectref.ObjectRef("", "ConfigMap", setup.namespace, "settings")]
    assert (unreached.digest, unreached.resource_version) == ("", "")
    core = k8s.CoreV1Api(admin)
    assert "settings" not in {
        c.metadata.name for c in core.list_namespaced_config_map(setup.namespace).items
    }
