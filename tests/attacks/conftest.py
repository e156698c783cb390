"""The stack every attack runs against: the session's real API server, OPA and the webhook.

Enforce mode with the default allowances, and a user `alice` whose RBAC allows everything,
so that only GitWarden stands between her and a managed object. Controller identities get
the same RBAC: each test shows what admission alone lets them do. One stack for the package
(the ValidatingWebhookConfiguration has one name); every test works in its own namespace.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from tests.attacks import kit
from tests.e2e.webhook_stack import Stack, revoke, running_stack
from tests.harness.controlplane import ControlPlane


@pytest.fixture(scope="package")
def stack(
    control_plane: ControlPlane, admin: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The webhook stack for `kit.CONFIG`, with alice and the controllers allowed everything."""
    kit.grant_everything(admin)
    kit.install_widget_crd(admin)
    try:
        with running_stack(
            control_plane, admin, tmp_path_factory.mktemp("attacks"), kit.CONFIG
        ) as s:
            yield s
    finally:
        revoke(admin, kit.EVERYTHING)
        kit.remove_crds(admin)
