"""The rendered chart configures the code as the code reads it, for every value set.

Every GITWARDEN_WEBHOOK_* variable the Deployment sets is a field of `WebhookSettings` and builds
one; the admission document and the reconciler's YAML are read back by the components' own
readers (`webhook.config.from_document`, `reconciler.config.from_document`), which refuse unknown
keys; every file either names is mounted in its container; probes, Services, the registration
and Prometheus point at routes and ports that exist.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from cryptography import x509

from reconciler import config as reconciler_config
from reconciler import controlconfig
from tests.chart import chartfiles, render
from webhook import app as app_mod
from webhook import config as admission_config
from webhook import settings as settings_mod

VALUE_SETS = render.value_sets()
RECONCILER_FILE = Path("/etc/gitwarden/reconciler/reconciler.yaml")
# A pod listens on its own addresses; the NetworkPolicies and Services decide who reaches them.
POD_ADDRESS = "0.0.0.0"  # noqa: S104


def _pod(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    [deployment] = render.of(docs, "Deployment", component)
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name)


def _mounted(container: dict[str, Any], path: Path) -> bool:
    target = PurePosixPath(path)
    return any(
        target == PurePosixPath(m["mountPath"]) or PurePosixPath(m["mountPath"]) in target.parents
        for m in container.get("volumeMounts", [])
    )


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_webhook_environment_is_what_the_settings_read(value_set: str) -> None:
    docs = render.documents(value_set)
    container = _container(_pod(docs, "webhook"), "webhook")
    env = {e["name"]: e["value"] for e in container["env"]}
    known = {
        settings_mod.PREFIX + f.name.upper()
        for f in dataclasses.fields(settings_mod.WebhookSettings)
    }
    assert set(env) <= known, set(env) - known
    settings = settings_mod.WebhookSettings.from_env(env)
    for required in ("tls_cert", "tls_key", "admission_config", "metrics_dir"):
        path = getattr(settings, required)
        assert path is not None, required
        assert _mounted(container, path), required
    if settings.client_ca is not None:
        assert _mounted(container, settings.client_ca)
    port = next(p for p in container["ports"] if p["name"] == "https")["containerPort"]
    assert settings.bind == f"{POD_ADDRESS}:{port}"
    admission = render.file_of(docs, "admission.yaml")
    assert settings.path_annotation == admission["repository"]["path_annotation"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_and_registration_paths_are_routes_of_the_webhook(value_set: str) -> None:
    docs = render.documents(value_set)
    config = admission_config.from_document(render.file_of(docs, "admission.yaml"))
    app = app_mod.create_app(settings_mod.WebhookSettings(), admission=config)
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    container = _container(_pod(docs, "webhook"), "webhook")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes
        assert get["scheme"] == "HTTPS"
        assert get["port"] == "https"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    vwc = render.one(docs, "ValidatingWebhookConfiguration")
    [service] = render.of(docs, "Service", "webhook")
    for hook in vwc["webhooks"]:
        target = hook["clientConfig"]["service"]
        assert target["path"] in routes
        assert (target["name"], target["namespace"]) == (
            service["metadata"]["name"],
            render.NAMESPACE,
        )
        [port] = [p for p in service["spec"]["ports"] if p["port"] == target["port"]]
        assert port["targetPort"] == "https"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_reconciler_config_is_read_by_the_reconciler(value_set: str) -> None:
    docs = render.documents(value_set)
    document = render.file_of(docs, "reconciler.yaml")
    settings = reconciler_config.from_document(document, RECONCILER_FILE)
    pod = _pod(docs, "reconciler")
    container = _container(pod, "reconciler")
    assert container["args"] == ["reconcile", "--config", str(RECONCILER_FILE)]
    # The reconciler reads no environment of its own (one file configures it); HOME keeps git's
    # and ssh's state on the writable emptyDir under a read-only root.
    assert container["env"] == [{"name": "HOME", "value": "/tmp"}]
    assert _mounted(container, Path("/tmp"))
    assert _mounted(container, RECONCILER_FILE)
    assert settings.guard.webhook_configuration_file is not None  # the self-guard is on
    for section in (settings.source, settings.trust, settings.push, settings.guard):
        for field in dataclasses.fields(section):
            value = getattr(section, field.name)
            if isinstance(value, Path):
                assert _mounted(container, value), f"{field.name}: {value} is not mounted"
    assert settings.identity.namespace == render.NAMESPACE
    admission = render.file_of(docs, "admission.yaml")
    # What the reconciler stamps is what the webhook guards.
    assert settings.apply.managed_label_key == admission["managed_label"]["key"]
    assert settings.apply.managed_label_value == admission["managed_label"]["value"]
    assert settings.apply.source_path_annotation == admission["repository"]["path_annotation"]
    assert (admission["repository"]["url"], admission["repository"]["branch"]) == (
        document["source"]["url"],
        settings.source.branch,
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert controlconfig.listen_address(settings.server.listen) == (POD_ADDRESS, ports["http"])
    assert controlconfig.listen_address(settings.keys.listen) == (POD_ADDRESS, ports["keys"])
    if settings.push.listen is not None:
        assert controlconfig.listen_address(settings.push.listen) == (POD_ADDRESS, ports["push"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert settings.leader.enabled
    lease_rule = next(
        r
        for r in render.one(docs, "Role", f"{_prefix(docs)}-reconciler")["rules"]
        if r.get("resourceNames") and r["resources"] == ["leases"]
    )
    assert lease_rule["resourceNames"] == [settings.leader.lease_name]


def _prefix(docs: list[dict[str, Any]]) -> str:
    return str(render.one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"])


def test_two_reconcilers_elect_a_leader_by_default() -> None:
    docs = render.documents("default")
    [deployment] = render.of(docs, "Deployment", "reconciler")
    assert deployment["spec"]["replicas"] == 2
    settings = reconciler_config.from_document(
        render.file_of(docs, "reconciler.yaml"), RECONCILER_FILE
    )
    assert settings.leader.enabled
    assert settings.keys.serve


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_selectors_of_services_and_budgets_match_their_pods(value_set: str) -> None:
    docs = render.documents(value_set)
    for component in ("webhook", "reconciler"):
        [deployment] = render.of(docs, "Deployment", component)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        pod_ports = {
            p["name"] for c in _pod(docs, component)["containers"] for p in c.get("ports", [])
        }
        for service in render.of(docs, "Service", component):
            assert service["spec"]["selector"].items() <= labels.items()
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= pod_ports
        [budget] = render.of(docs, "PodDisruptionBudget", component)
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        scraped = int(annotations["prometheus.io/port"])
        assert scraped in {
            p["containerPort"]
            for c in _pod(docs, component)["containers"]
            for p in c.get("ports", [])
        }
        for policy in render.of(docs, "NetworkPolicy", component):
            assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_webhook_network_policy_opens_the_tls_port_only() -> None:
    docs = render.documents("namespaced-values.yaml")
    [policy] = render.of(docs, "NetworkPolicy", "webhook")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "https", "protocol": "TCP"}]
    assert rule["from"] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    opa = _container(_pod(docs, "webhook"), "opa")
    assert "--addr=127.0.0.1:8181" in opa["args"]
    assert "ports" not in opa


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_opa_loads_the_packaged_policy_and_the_data_the_webhook_derives(value_set: str) -> None:
    docs = render.documents(value_set)
    pod = _pod(docs, "webhook")
    [config_map] = [d for d in render.every(docs, "ConfigMap") if "admission.yaml" in d["data"]]
    sources = sorted(
        p
        for p in (chartfiles.ROOT / "policies" / "admission").glob("*.rego")
        if not p.name.endswith("_test.rego")
    )
    assert sources
    for source in sources:
        assert config_map["data"][source.name] == source.read_text()
    authz = chartfiles.ROOT / "policies" / "opaserver" / "authz.rego"
    assert config_map["data"]["opaserver-authz.rego"] == authz.read_text()
    opa = _container(pod, "opa")
    assert [a for a in opa["args"] if a.endswith(".rego")] == [
        "/etc/gitwarden/policies/opaserver-authz.rego",
        *(f"/etc/gitwarden/policies/{s.name}" for s in sources),
    ]
    # Writes to OPA's API refused, and nothing reloaded behind the decision cache's back.
    assert "--authorization=basic" in opa["args"]
    assert not [a for a in opa["args"] if a.startswith(("--watch", "-w", "--bundle", "-b"))]
    assert not [a for a in opa["args"] if a.startswith(("--config-file", "-c", "--set"))]
    init = _container(pod, "opa-data")
    assert (
        "gitwarden webhook opa-data --config /etc/gitwarden/admission/admission.yaml"
        in init["command"][-1]
    )
    assert "/var/run/gitwarden/opa/data.json" in opa["args"]


def test_chart_copies_are_in_step_with_their_sources() -> None:
    assert chartfiles.drifted() == []


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_sync_crd_is_the_reconcilers_own(value_set: str) -> None:
    docs = render.documents(value_set)
    crd = render.one(docs, "CustomResourceDefinition")
    source = yaml.safe_load((chartfiles.ROOT / "reconciler" / "crds" / "sync.yaml").read_text())
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()


def test_generated_ca_signs_a_certificate_for_the_service() -> None:
    docs = render.documents("default")
    [secret] = [d for d in docs if d["kind"] == "Secret"]
    vwc = render.one(docs, "ValidatingWebhookConfiguration")
    assert {h["clientConfig"]["caBundle"] for h in vwc["webhooks"]} == {secret["data"]["ca.crt"]}
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{render.RELEASE}-webhook.{render.NAMESPACE}.svc" in names.get_values_for_type(
        x509.DNSName
    )
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=365)


def test_cert_manager_injects_the_ca_of_the_certificate_the_webhook_mounts() -> None:
    docs = render.documents("certmanager-values.yaml")
    assert not [d for d in docs if d["kind"] == "Secret"]
    [certificate] = render.every(docs, "Certificate")
    vwc = render.one(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{render.NAMESPACE}/{certificate['metadata']['name']}"
    )
    assert all("caBundle" not in h["clientConfig"] for h in vwc["webhooks"])
    tls = next(v for v in _pod(docs, "webhook")["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == certificate["spec"]["secretName"]
    [service] = render.of(docs, "Service", "webhook")
    assert (
        f"{service['metadata']['name']}.{render.NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    )
    [monitor] = render.every(docs, "ServiceMonitor")
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"http", "https"}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_uninstall_hook_is_the_registration_itself(value_set: str) -> None:
    """The hook must equal the live document: `helm template | kubectl apply` applies both, and
    an empty stand-in applied last would switch admission off."""
    docs = render.documents(value_set)
    live = render.one(docs, "ValidatingWebhookConfiguration")
    [hook] = [d for d in docs if render.is_hook(d)]
    annotations = hook["metadata"]["annotations"]
    assert (hook["kind"], hook["metadata"]["name"]) == (live["kind"], live["metadata"]["name"])
    assert annotations["helm.sh/hook"] == "pre-delete"
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    assert hook["webhooks"] == live["webhooks"]
    assert [d for d in docs if d["kind"] == live["kind"]][-1] == hook  # the one applied last
