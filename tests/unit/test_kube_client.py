"""Cluster credentials: a malformed kubeconfig is a clear error, never a library traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import kube_client

_CONTEXT = (
    "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
    "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
    "users: [{name: u, user: {token: s3cret-token-value}}]\n"
)


@pytest.mark.parametrize(
    "text",
    [
        "token: s3cret-token-value: [",  # not YAML
        "just text",  # YAML, not a mapping
        "apiVersion: v1\nclusters: 5\n",  # wrong shapes
        _CONTEXT + "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', "
        "certificate-authority-data: '!!notb64'}}]\n",  # bad base64
        "",
    ],
)
def test_malformed_kubeconfig_is_a_config_error_without_its_contents(
    tmp_path: Path, text: str
) -> None:
    """Each malformed file raises ConfigError naming the file, never quoting a token."""
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(kube_client.ConfigError) as excinfo:
        kube_client.api_client(path)
    assert str(path) in str(excinfo.value)
    assert "s3cret-token-value" not in str(excinfo.value)
