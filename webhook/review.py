"""The AdmissionReview v1 wire format: parse a request, build the policy input, build a response.

Owns validation of untrusted request bodies (anything off is `MalformedReview`, answered 400 by
the app) and the three pure translations: body -> `AdmissionRequest`, `AdmissionRequest` ->
the slim OPA input, `Decision` -> AdmissionReview response. It never sees the network, never
logs, and copies only labels, the configured annotations, owner references and the deletion
mark out of objects, plus the keys (never values) of changed labels and annotations, so Secret
data and other object contents never leave this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from webhook import decision

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"

# metadata fields the API server maintains itself; a change to them is not a user's change.
_VOLATILE_METADATA = frozenset(
    {"resourceVersion", "managedFields", "generation", "uid", "creationTimestamp", "selfLink"}
)


# Kubernetes' own name rules (apimachinery validation). Every namespace is a DNS-1123 label.
# Names differ by kind, but every kind's name is a path segment of its URL: never "." or "..",
# never "/" or "%". Objects that can be scaled (workloads, custom resources) have DNS-1123
# subdomain names; theirs are checked before the webhook looks one up.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_API_VERSION = re.compile(r"v[0-9]+((alpha|beta)[0-9]+)?")


class MalformedReview(ValueError):
    """The body is not a usable admission.k8s.io/v1 AdmissionReview request."""


@dataclass(frozen=True)
class OwnerRef:
    """One ownerReference: who owns the object (no contents of either)."""

    api_version: str
    kind: str
    name: str
    controller: bool


@dataclass(frozen=True)
class ObjectMeta:
    """What the policy may know of an object: labels, configured annotations, owners, deletion."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    owner_references: tuple[OwnerRef, ...] = ()
    terminating: bool = False
    """metadata.deletionTimestamp is set."""
    service_account: str = ""
    """A Pod's spec.serviceAccountName (who the pod runs as), else empty."""


@dataclass(frozen=True)
class MetadataChanges:
    """Which label and annotation keys an UPDATE adds, removes or changes (keys, not values)."""

    labels: tuple[str, ...] = ()
    annotations: tuple[str, ...] = ()


@dataclass(frozen=True)
class CrdServed:
    """What a CustomResourceDefinition serves: enough to list its custom resources."""

    group: str
    version: str
    plural: str
    namespaced: bool


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of an AdmissionRequest GitWarden decides on."""

    uid: str
    operation: str
    group: str
    version: str
    kind: str
    resource: str
    resource_group: str
    resource_version: str
    sub_resource: str
    name: str
    namespace: str
    username: str
    groups: tuple[str, ...]
    pod_name: str
    pod_uid: str
    dry_run: bool
    object: ObjectMeta | None
    old_object: ObjectMeta | None
    changed_fields: tuple[str, ...]
    metadata_changes: MetadataChanges = MetadataChanges()
    crd: CrdServed | None = None
    """For a CustomResourceDefinition: what the stored one serves."""

    @property
    def ref(self) -> str:
        """`Kind namespace/name` for logs (no contents)."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


def parse(body: bytes, annotation_keys: frozenset[str]) -> AdmissionRequest:
    """Validate and parse a request body; raise `MalformedReview` with the reason."""
    review = _decode(body)
    if not isinstance(review, dict):
        raise MalformedReview("body is not a JSON object")
    if review.get("apiVersion") != API_VERSION:
        raise MalformedReview(f"apiVersion must be {API_VERSION}")
    if review.get("kind") != KIND:
        raise MalformedReview(f"kind must be {KIND}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("request is missing or not an object")
    operation = _string(request, "operation", required=True)
    if operation not in OPERATIONS:
        raise MalformedReview(f"request.operation must be one of {sorted(OPERATIONS)}")
    kind = _mapping(request, "kind")
    resource = _mapping(request, "resource")
    user = _mapping(request, "userInfo")
    groups = user.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise MalformedReview("request.userInfo.groups must be a list of strings")
    new = _object(request, "object", annotation_keys)
    old = _object(request, "oldObject", annotation_keys)
    if operation == "CREATE" and new is None:
        raise MalformedReview("request.object is required for CREATE")
    if operation == "UPDATE" and (new is None or old is None):
        raise MalformedReview("request.object and request.oldObject are required for UPDATE")
    if operation == "DELETE" and old is None:
        raise MalformedReview("request.oldObject is required for DELETE")
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise MalformedReview("request.dryRun must be a boolean")
    name = _string(request, "name") or _unnamed_object_name(request, operation)
    _check_name(name, _string(request, "namespace"))
    return AdmissionRequest(
        uid=_string(request, "uid", required=True),
        operation=operation,
        group=_string(kind, "group"),
        version=_string(kind, "version"),
        kind=_string(kind, "kind", required=True),
        resource=_string(resource, "resource", required=True),
        resource_group=_string(resource, "group"),
        resource_version=_string(resource, "version"),
        sub_resource=_string(request, "subResource"),
        name=name,
        namespace=_string(request, "namespace"),
        username=_string(user, "username", required=True),
        groups=tuple(groups),
        pod_name=_extra(user, POD_NAME_EXTRA),
        pod_uid=_extra(user, POD_UID_EXTRA),
        dry_run=dry_run,
        object=new,
        old_object=old,
        changed_fields=_changed_fields(request) if operation == "UPDATE" else (),
        metadata_changes=_metadata_changes(request) if operation == "UPDATE" else MetadataChanges(),
        crd=_crd(request, kind),
    )


def _unnamed_object_name(request: dict[str, Any], operation: str) -> str:
    """The object's own name when the request names none, else "".

    A create with generateName has no request name (the object's is generated by now), and
    for `kubectl delete <kind> --all` the API server asks once per object, with an empty
    request.name and the object as oldObject; its name there is what a denial must name. A
    subresource request names its parent, always: there the object's name is never taken.
    """
    if _string(request, "subResource"):
        return ""
    if operation == "CREATE":
        return _object_name(request)
    if operation != "DELETE":
        return ""
    meta = request["oldObject"].get("metadata") or {}  # parsed (and checked) by `_object`
    name = meta.get("name", "")
    if not isinstance(name, str):
        raise MalformedReview("request.oldObject.metadata.name must be a string")
    return name


def _check_name(name: str, namespace: str) -> None:
    """Refuse names no Kubernetes object can have (the API server never sends them)."""
    if namespace and not (len(namespace) <= 63 and _DNS1123_LABEL.fullmatch(namespace)):
        raise MalformedReview("request.namespace is not a valid namespace name (DNS-1123 label)")
    if name in (".", "..") or "/" in name or "%" in name or len(name) > 253:
        raise MalformedReview("request.name is not a valid object name")


def check_lookup_target(request: AdmissionRequest) -> None:
    """Refuse a subresource request whose parent could not exist, before anyone looks it up.

    The parent's group, version, resource, namespace and name become a URL path on the API
    server; each must be what Kubernetes allows for a scalable object, so that no request
    body can make the webhook ask the API server anything else (a `?watch=true`, a `/`).
    """
    name, group = request.name, request.resource_group
    if not (len(name) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(name)):
        raise MalformedReview(
            f"request.name is not a valid name for {request.resource or 'the object'} "
            "(DNS-1123 subdomain), so no such object exists"
        )
    if group and not (len(group) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(group)):
        raise MalformedReview("request.resource.group is not a valid API group")
    if not _API_VERSION.fullmatch(request.resource_version):
        raise MalformedReview("request.resource.version is not a valid API version")
    if not (len(request.resource) <= 63 and _DNS1123_LABEL.fullmatch(request.resource)):
        raise MalformedReview("request.resource.resource is not a valid resource name")


def check_namespace_target(request: AdmissionRequest) -> None:
    """Refuse a namespace delete that names no namespace, before its contents are listed.

    The name is the namespace each list is made in: an empty one would list the configured
    kinds across every namespace (an oracle for whether any managed object exists anywhere).
    """
    if request.resource_group or request.resource != "namespaces":
        return
    if not (len(request.name) <= 63 and _DNS1123_LABEL.fullmatch(request.name)):
        raise MalformedReview("request.name is not a valid namespace name (DNS-1123 label)")


def _crd(request: dict[str, Any], kind: dict[str, Any]) -> CrdServed | None:
    """The served group/version/plural of a CRD request's stored (else new) object."""
    if (
        kind.get("group") != "apiextensions.k8s.io"
        or kind.get("kind") != "CustomResourceDefinition"
    ):
        return None
    obj = request.get("oldObject") or request.get("object")
    spec = obj.get("spec") if isinstance(obj, dict) else None
    if not isinstance(spec, dict):
        return None
    names, versions = spec.get("names"), spec.get("versions")
    served = (
        [
            v.get("name")
            for v in versions
            if isinstance(v, dict) and v.get("served") and isinstance(v.get("name"), str)
        ]
        if isinstance(versions, list)
        else []
    )
    group, plural = spec.get("group"), names.get("plural") if isinstance(names, dict) else None
    if not (isinstance(group, str) and isinstance(plural, str) and group and plural and served):
        return None
    return CrdServed(group, str(served[0]), plural, spec.get("scope") == "Namespaced")


def _object_name(request: dict[str, Any]) -> str:
    obj = request.get("object")
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def _decode(body: bytes) -> Any:
    """The body's JSON value, or `MalformedReview` saying why there is none.

    orjson parses (a fifth of the standard library's CPU on the bench's reviews). What it
    refuses, the standard library is asked about only to name the reason; a body that only the
    standard library would take (NaN, Infinity, a lone surrogate, a number past float64: none
    of which the API server writes) is refused too. Integers past 64 bits become floats, as the
    API server itself stores them.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedReview(f"body is not JSON: {type(exc).__name__}") from None
    except ValueError:
        # Python refuses to convert an integer of more than 4,300 digits (CVE-2020-10735); no
        # AdmissionReview holds one, and it must be a 400, never an internal error.
        raise MalformedReview("body is not usable JSON: a number has too many digits") from None
    raise MalformedReview(
        "body is not strict UTF-8 JSON (NaN, Infinity, a lone surrogate, a number past float64, "
        "or another encoding)"
    )


def _string(container: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = container.get(key, "")
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise MalformedReview(
            f"{key} must be a non-empty string" if required else f"{key} must be a string"
        )
    return value


def _mapping(container: dict[str, Any], key: str) -> dict[str, Any]:
    value = container.get(key)
    if not isinstance(value, dict):
        raise MalformedReview(f"request.{key} is missing or not an object")
    return value


def _extra(user: dict[str, Any], key: str) -> str:
    extra = user.get("extra")
    if extra is None:
        return ""
    if not isinstance(extra, dict):
        raise MalformedReview("request.userInfo.extra must be an object")
    values = extra.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise MalformedReview("request.userInfo.extra values must be lists of strings")
    # The API server sets exactly one value; anything else is not a pod-bound token.
    return values[0] if len(values) == 1 else ""


def _object(
    request: dict[str, Any], key: str, annotation_keys: frozenset[str]
) -> ObjectMeta | None:
    obj = request.get(key)
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise MalformedReview(f"request.{key} must be an object or null")
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        raise MalformedReview(f"request.{key}.metadata must be an object")
    labels = _string_map(meta.get("labels"), f"request.{key}.metadata.labels")
    annotations = _string_map(meta.get("annotations"), f"request.{key}.metadata.annotations")
    return ObjectMeta(
        labels=labels,
        annotations={k: v for k, v in annotations.items() if k in annotation_keys},
        owner_references=_owner_references(meta.get("ownerReferences"), key),
        terminating=bool(meta.get("deletionTimestamp")),
        service_account=_service_account(obj),
    )


def _service_account(obj: dict[str, Any]) -> str:
    if obj.get("kind") != "Pod" or not isinstance(obj.get("spec"), dict):
        return ""
    name = obj["spec"].get("serviceAccountName") or ""
    if not isinstance(name, str):
        raise MalformedReview("request.object.spec.serviceAccountName must be a string")
    return name


def _owner_references(value: Any, key: str) -> tuple[OwnerRef, ...]:
    where = f"request.{key}.metadata.ownerReferences"
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise MalformedReview(f"{where} must be a list of objects")
    refs = []
    for ref in value:
        controller = ref.get("controller", False)
        if not isinstance(controller, bool) and controller is not None:
            raise MalformedReview(f"{where}[].controller must be a boolean")
        refs.append(
            OwnerRef(
                api_version=_string(ref, "apiVersion"),
                kind=_string(ref, "kind"),
                name=_string(ref, "name"),
                controller=bool(controller),
            )
        )
    return tuple(refs)


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MalformedReview(f"{where} must map strings to strings")
    return value


def _changed_fields(request: dict[str, Any]) -> tuple[str, ...]:
    """Top-level fields (and metadata.<field>) that differ between oldObject and object."""
    new, old = request["object"], request["oldObject"]
    changed = [k for k in new.keys() | old.keys() if k != "metadata" and new.get(k) != old.get(k)]
    new_meta, old_meta = new.get("metadata") or {}, old.get("metadata") or {}
    changed += [
        f"metadata.{k}"
        for k in new_meta.keys() | old_meta.keys()
        if k not in _VOLATILE_METADATA and new_meta.get(k) != old_meta.get(k)
    ]
    return tuple(sorted(changed))


def _metadata_changes(request: dict[str, Any]) -> MetadataChanges:
    """Label and annotation keys whose values differ (every key, not only configured ones)."""
    new = request["object"].get("metadata") or {}
    old = request["oldObject"].get("metadata") or {}

    def differing(field: str) -> tuple[str, ...]:
        a, b = new.get(field) or {}, old.get(field) or {}  # parse() checked both are maps
        return tuple(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))

    return MetadataChanges(labels=differing("labels"), annotations=differing("annotations"))


def policy_input(
    request: AdmissionRequest,
    *,
    namespace_protected: bool,
    namespace_terminating: bool = False,
    namespace_holds_managed: bool = False,
    pod_live: bool = False,
    crd_holds_managed: bool = False,
) -> dict[str, Any]:
    """The slim input the Rego policy reads (documented at the top of admission.rego)."""

    def meta(m: ObjectMeta | None) -> dict[str, Any] | None:
        if m is None:
            return None
        return {
            "labels": dict(m.labels),
            "annotations": dict(m.annotations),
            "ownerReferences": [
                {
                    "apiVersion": r.api_version,
                    "kind": r.kind,
                    "name": r.name,
                    "controller": r.controller,
                }
                for r in m.owner_references
            ],
            "terminating": m.terminating,
            "serviceAccountName": m.service_account,
        }

    user: dict[str, Any] = {"username": request.username, "groups": list(request.groups)}
    if request.pod_name:
        user["podName"] = request.pod_name
        # Whether the webhook found that pod alive with the token's uid (pod-bound mode).
        user["podLive"] = pod_live
    return {
        "operation": request.operation,
        "kind": {"group": request.group, "version": request.version, "kind": request.kind},
        "resource": {
            "group": request.resource_group,
            "version": request.resource_version,
            "resource": request.resource,
        },
        "subResource": request.sub_resource,
        "name": request.name,
        "namespace": request.namespace,
        "dryRun": request.dry_run,
        "namespaceProtected": namespace_protected,
        "namespaceTerminating": namespace_terminating,
        "namespaceHoldsManaged": namespace_holds_managed,
        "crdHoldsManaged": crd_holds_managed,
        "changedFields": list(request.changed_fields),
        "metadataChanges": {
            "labels": list(request.metadata_changes.labels),
            "annotations": list(request.metadata_changes.annotations),
        },
        "userInfo": user,
        "object": meta(request.object),
        "oldObject": meta(request.old_object),
    }


def response(uid: str, decision: decision.Decision) -> dict[str, Any]:
    """The AdmissionReview v1 answer to one request."""
    answer: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        answer["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": decision.message or "denied by GitWarden",
        }
    if decision.warnings:
        answer["warnings"] = list(decision.warnings)
    if decision.audit:
        answer["auditAnnotations"] = dict(decision.audit)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": answer}
