"""The guard's cluster adapter: RBAC listing, SubjectAccessReview, the webhook configuration and
GitWarden's namespace, through the official client.

Owns turning API objects into the guard's values and every client error into `GuardError`
(status and reason only: a response body can echo an object). The only module of
`reconciler.guard` that imports `kubernetes`. Objects in GitWarden's namespace are read as
PartialObjectMetadata, so Secret data never reaches this process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client as k8s
from urllib3.exceptions import HTTPError

from reconciler.guard import rbac, selfguard

_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_RBAC = "/apis/rbac.authorization.k8s.io/v1"
_VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
_NAMESPACE_KINDS = (
    ("Deployment", "/apis/apps/v1", "deployments"),
    ("ConfigMap", "/api/v1", "configmaps"),
    ("Secret", "/api/v1", "secrets"),
)
_PROBE_USER = "gitwarden-audit:group-probe"
"""The user a group's SubjectAccessReview names: SAR needs a user or groups, and a made-up
user holds nothing of its own, so the answer is the group's."""


class KubeCluster:
    """The guard's and the audit's view of one cluster."""

    def __init__(self, api: k8s.ApiClient, *, timeout: float = 10.0) -> None:
        self._api = api
        self._timeout = timeout

    # --------------------------------------------------------------------------- requests

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        accept: str = "application/json",
        content_type: str | None = None,
        missing_ok: bool = False,
    ) -> Any:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        what = f"{method} {path}"
        try:
            method, url, headers, serialized, _ = self._api.param_serialize(
                method,
                path,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(
                method, url, header_params=headers, body=serialized, _request_timeout=self._timeout
            )
            status, raw = response.status, response.read()  # type: ignore[no-untyped-call]
        except k8s.ApiException as exc:
            raise selfguard.GuardError(f"{what}: HTTP {exc.status} {exc.reason}") from exc
        except (HTTPError, OSError) as exc:
            raise selfguard.GuardError(
                f"cannot reach the API server ({what}): {type(exc).__name__}"
            ) from exc
        if status == 404 and missing_ok:
            return None
        if not 200 <= status < 300:
            raise selfguard.GuardError(f"{what}: HTTP {status} {_reason(raw)}")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise selfguard.GuardError(f"{what}: the answer is not JSON") from exc

    # ------------------------------------------------------------------------------- RBAC

    def rbac_snapshot(self) -> rbac.Snapshot:
        """Every ClusterRole, Role and binding, as values."""
        roles = [_role(item, "ClusterRole") for item in self._items(f"{_RBAC}/clusterroles")] + [
            _role(item, "Role") for item in self._items(f"{_RBAC}/roles")
        ]
        bindings = [
            _binding(item, "ClusterRoleBinding")
            for item in self._items(f"{_RBAC}/clusterrolebindings")
        ] + [_binding(item, "RoleBinding") for item in self._items(f"{_RBAC}/rolebindings")]
        return rbac.Snapshot(tuple(roles), tuple(bindings))

    def _items(self, path: str) -> list[Mapping[str, Any]]:
        items: list[Mapping[str, Any]] = []
        token = ""
        for _ in range(10_000):  # bounded: 500 per page
            query = [("limit", "500")] + ([("continue", token)] if token else [])
            page = self._call("GET", path, query=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items
        raise selfguard.GuardError(f"GET {path}: too many pages")

    def allowed(self, subject: rbac.Subject, request: rbac.Request, name: str) -> bool:
        """The authorizer's own answer (SubjectAccessReview) for `subject` and `request`."""
        attributes = {
            "verb": request.verb,
            "group": request.group,
            "resource": request.resource,
            "subresource": request.subresource,
            "namespace": request.namespace,
            "name": name,
        }
        spec: dict[str, Any] = {"resourceAttributes": attributes}
        if subject.kind == "Group":
            spec.update(user=_PROBE_USER, groups=[subject.name])
        elif subject.kind == "ServiceAccount":
            spec.update(
                user=subject.username,
                groups=["system:serviceaccounts", f"system:serviceaccounts:{subject.namespace}"],
            )
        else:
            spec["user"] = subject.name
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview"}
        answer = self._call(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            body={**body, "spec": spec},
        )
        return bool((answer.get("status") or {}).get("allowed"))

    # ------------------------------------------------------------------------ self-guard

    def read_webhook_configuration(self, name: str) -> Mapping[str, Any] | None:
        """The live ValidatingWebhookConfiguration, or None."""
        found: Mapping[str, Any] | None = self._call("GET", f"{_VWC}/{name}", missing_ok=True)
        return found

    def apply_webhook_configuration(self, document: Mapping[str, Any]) -> None:
        """Server-side apply as `gitwarden`, forcing conflicts."""
        name = document["metadata"]["name"]
        self._call(
            "PATCH",
            f"{_VWC}/{name}",
            body=json.dumps(document),
            query=[("fieldManager", selfguard.FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def replace_webhook_configuration(self, document: Mapping[str, Any]) -> None:
        """PUT the document (optimistic concurrency through its resourceVersion)."""
        name = document["metadata"]["name"]
        self._call(
            "PUT",
            f"{_VWC}/{name}",
            body=dict(document),
            query=[("fieldManager", selfguard.FIELD_MANAGER)],
            content_type="application/json",
        )

    def namespace_objects(self, namespace: str) -> Sequence[selfguard.ObjectMeta]:
        """The Namespace and its Deployments, ConfigMaps and Secrets, metadata only."""
        found = []
        ns = self._call("GET", f"/api/v1/namespaces/{namespace}", accept=_METADATA, missing_ok=True)
        if ns is not None:
            found.append(_meta("Namespace", ns))
        for kind, base, resource in _NAMESPACE_KINDS:
            page = self._call(
                "GET", f"{base}/namespaces/{namespace}/{resource}", accept=_METADATA_LIST
            )
            found.extend(_meta(kind, item) for item in page.get("items") or [])
        return found


# ---------------------------------------------------------------------------- conversion


def _reason(raw: bytes) -> str:
    # The Status object's reason is a fixed word (Forbidden, NotFound); its message may quote
    # the request, so it is left out.
    try:
        return str(json.loads(raw).get("reason") or "")
    except (ValueError, AttributeError):
        return ""


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


def _role(item: Mapping[str, Any], kind: str) -> rbac.Role:
    metadata = item.get("metadata") or {}
    rules = tuple(
        rbac.Rule(
            verbs=_strings(rule.get("verbs")),
            api_groups=_strings(rule.get("apiGroups")),
            resources=_strings(rule.get("resources")),
            resource_names=_strings(rule.get("resourceNames")),
        )
        for rule in item.get("rules") or []
    )
    selectors = tuple(
        rbac.Selector(
            match_labels=dict(sel.get("matchLabels") or {}),
            match_expressions=tuple(
                (str(e.get("key")), str(e.get("operator")), _strings(e.get("values")))
                for e in sel.get("matchExpressions") or []
            ),
        )
        for sel in (item.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
    )
    return rbac.Role(
        kind=kind,
        name=str(metadata.get("name", "")),
        rules=rules,
        namespace=str(metadata.get("namespace") or ""),
        labels=dict(metadata.get("labels") or {}),
        aggregation=selectors,
    )


def _binding(item: Mapping[str, Any], kind: str) -> rbac.Binding:
    metadata = item.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    ref = item.get("roleRef") or {}
    subjects = tuple(
        rbac.Subject(
            kind=str(s.get("kind", "")),
            name=str(s.get("name", "")),
            # A ServiceAccount subject of a RoleBinding may leave its namespace out.
            namespace=str(
                s.get("namespace") or (namespace if s.get("kind") == "ServiceAccount" else "")
            ),
        )
        for s in item.get("subjects") or []
    )
    return rbac.Binding(
        kind=kind,
        name=str(metadata.get("name", "")),
        role_kind=str(ref.get("kind", "")),
        role_name=str(ref.get("name", "")),
        subjects=subjects,
        namespace=namespace,
    )


def _meta(kind: str, item: Mapping[str, Any]) -> selfguard.ObjectMeta:
    metadata = item.get("metadata") or {}
    return selfguard.ObjectMeta(
        kind=kind,
        name=str(metadata.get("name", "")),
        managed=tuple(selfguard.managed_entry(e) for e in metadata.get("managedFields") or []),
    )
