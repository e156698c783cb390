"""Building an API client for the reconciler: a kubeconfig file or in-cluster credentials.

Owns only the choice of credentials; everything that talks to the cluster takes the client it
returns. Configuration problems become `ConfigError` naming the source.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from reconciler import errors


class ConfigError(errors.Stalled):
    """No usable cluster credentials."""


def api_client(kubeconfig: Path | None) -> k8s.ApiClient:
    """A client from `kubeconfig`, or from the pod's service account when it is None."""
    return k8s.ApiClient(configuration(kubeconfig))


def configuration(kubeconfig: Path | None) -> k8s.Configuration:
    """The client configuration (host, TLS, credentials) for `kubeconfig` or in-cluster."""
    loaded = k8s.Configuration()
    try:
        if kubeconfig is None:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]  # untyped library
                client_configuration=loaded
            )
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped library
                str(kubeconfig), client_configuration=loaded
            )
    except (k8s_config.ConfigException, OSError) as exc:
        source = str(kubeconfig) if kubeconfig else "in-cluster service account"
        raise ConfigError(f"cannot load cluster credentials from {source}: {exc}") from exc
    return loaded
