"""Only the GitOps identity may write the Sync status object, with the webhook enforcing.

The Sync status holds the inventory (what prune may delete, which objects a no-op pass skips)
and the last applied commit. A user whom RBAC lets write it must still be denied by the
webhook, even with the default configuration that leaves other objects' status to controllers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client as k8s

from reconciler import changeset, cluster, config, status, syncstore
from tests.e2e.webhook_stack import GITOPS_NS, GITOPS_SA, REPO, Stack, running_stack
from tests.harness.controlplane import ControlPlane
from webhook import config as config_mod
from webhook import registration

pytestmark = pytest.mark.cluster
CONFIG = config_mod.AdmissionConfig(
    namespace=GITOPS_NS, gitops_service_account=GITOPS_SA, repository_url=REPO
)
SYNC_RULES = [
    {"apiGroups": ["gitwarden.dev"], "resources": ["syncs", "syncs/status"], "verbs": ["*"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["*"],
    },
]


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane, admin: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rbac.create_cluster_role({"metadata": {"name": "e2e-sync-writers"}, "rules": SYNC_RULES})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "e2e-sync-writers"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "e2e-sync-writers",
            },
            "subjects": [
                {"kind": "ServiceAccount", "namespace": GITOPS_NS, "name": GITOPS_SA},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
            ],
        }
    )
    with running_stack(control_plane, admin, tmp_path_factory.mktemp("sync-guard"), CONFIG) as s:
        yield s


def test_the_webhook_and_the_reconciler_name_the_same_status_kind() -> None:
    assert (registration.SYNC_GROUP, registration.SYNC_RESOURCE) == (status.GROUP, status.PLURAL)


def test_only_the_gitops_identity_writes_the_sync_object_and_its_status(stack: Stack) -> None:
    name = f"guarded-{uuid.uuid4().hex[:8]}"
    reconciler = cluster.Cluster(stack.gitops.configuration, config.ApplyConfig(qps=0))
    outcome = status.Outcome("a" * 40, "alice@example.com", changeset.ChangeSet(), None)
    reconciler.write_status(name, outcome, dt.datetime.now(dt.UTC))
    assert reconciler.stored_commit(name) == "a" * 40

    custom = k8s.CustomObjectsApi(stack.alice)
    forged = {"status": {"lastAppliedCommit": "b" * 40}}
    attempts: dict[str, Callable[[], object]] = {
        "status": lambda: custom.patch_cluster_custom_object_status(
            status.GROUP, status.VERSION, status.PLURAL, name, forged
        ),
        "labels": lambda: custom.patch_cluster_custom_object(
            status.GROUP,
            status.VERSION,
            status.PLURAL,
            name,
            {"metadata": {"labels": {config.MANAGED_LABEL_KEY: None}}},
        ),
        "delete": lambda: custom.delete_cluster_custom_object(
            status.GROUP, status.VERSION, status.PLURAL, name
        ),
    }
    for what, attempt in attempts.items():
        with pytest.raises(k8s.ApiException) as caught:
            attempt()
        assert caught.value.status == 403, what
        assert "may not" in str(caught.value.body), what
    assert syncstore.stored_commit(reconciler, name) == "a" * 40
    # The reconciler itself is never denied: a second write goes through.
    reconciler.write_status(
        name, status.Outcome("c" * 40, "", changeset.ChangeSet(), None), dt.datetime.now(dt.UTC)
    )
    assert reconciler.stored_commit(name) == "c" * 40
