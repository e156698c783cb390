"""AdmissionReview bodies for tests, built from the golden policy inputs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.harness.controlplane import REPO_ROOT

GOLDEN_PATH = REPO_ROOT / "policies" / "testdata" / "admission" / "golden.json"


def golden() -> dict[str, Any]:
    """The golden file shared with the Rego tests."""
    data: dict[str, Any] = json.loads(Path(GOLDEN_PATH).read_text())
    return data


def _object(meta: dict[str, Any] | None, name: str, namespace: str, kind: dict[str, str]) -> Any:
    if meta is None:
        return None
    api_version = f"{kind['group']}/{kind['version']}" if kind["group"] else kind["version"]
    metadata: dict[str, Any] = {"name": name, "labels": meta["labels"]}
    metadata["annotations"] = {**meta["annotations"], "unrelated.example/big": "x" * 64}
    if meta.get("ownerReferences"):
        metadata["ownerReferences"] = [{**r, "uid": "u-owner"} for r in meta["ownerReferences"]]
    if meta.get("terminating"):
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if meta.get("serviceAccountName"):
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"serviceAccountName": meta["serviceAccountName"], "containers": []},
        }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": api_version,
        "kind": kind["kind"],
        "metadata": metadata,
        "data": {"password": "c2VjcmV0LXZhbHVl"},
    }


def review_from_input(policy_input: dict[str, Any], uid: str | None = None) -> dict[str, Any]:
    """A full AdmissionReview whose slim policy input is `policy_input` (changedFields aside)."""
    i = policy_input
    user = {"username": i["userInfo"]["username"], "groups": i["userInfo"].get("groups", [])}
    if "podName" in i["userInfo"]:
        user["extra"] = {"authentication.kubernetes.io/pod-name": [i["userInfo"]["podName"]]}
    new = _object(i["object"], i["name"], i["namespace"], i["kind"])
    old = _object(i["oldObject"], i["name"], i["namespace"], i["kind"])
    # Recreate the declared changes so that parsing yields the same changedFields and
    # changed annotation keys (labels are in the input in full, so they already differ).
    changes = i.get("metadataChanges", {})
    for key in changes.get("annotations", []) if new is not None and old is not None else []:
        new_value = new["metadata"]["annotations"].get(key)
        if new_value == old["metadata"]["annotations"].get(key):
            new["metadata"]["annotations"][key] = f"{new_value}-changed"
    for changed in i.get("changedFields", []) if new is not None and old is not None else []:
        target, key = (
            (new["metadata"], changed.removeprefix("metadata."))
            if changed.startswith("metadata.")
            else (new, changed)
        )
        old_target = old["metadata"] if target is new["metadata"] else old
        if target.get(key) == old_target.get(key):
            target[key] = ["changed"]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            # namespaceTerminating comes from the webhook's namespace lookup, not the review.
            "kind": i["kind"],
            "resource": i["resource"],
            "subResource": i["subResource"],
            "requestKind": i["kind"],
            "requestResource": i["resource"],
            "name": i["name"],
            "namespace": i["namespace"],
            "operation": i["operation"],
            "userInfo": user,
            "object": new,
            "oldObject": old,
            "dryRun": i["dryRun"],
            "options": None,
        },
    }


def facts(policy_input: dict[str, Any]) -> dict[str, bool]:
    """What the webhook adds beside the review (routes and lookups), as policy_input kwargs."""
    return {
        "namespace_protected": policy_input["namespaceProtected"],
        "namespace_terminating": policy_input["namespaceTerminating"],
        "namespace_holds_managed": policy_input["namespaceHoldsManaged"],
        "pod_live": policy_input["userInfo"].get("podLive", False),
        "crd_holds_managed": policy_input["crdHoldsManaged"],
    }


def body(review: dict[str, Any]) -> bytes:
    """JSON bytes of a review."""
    return json.dumps(review).encode()
