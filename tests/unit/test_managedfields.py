"""Drift classification from managedFields, with plain objects as the API server returns them.

The objects below are shaped like real answers: after GitWarden's apply (manager `gitwarden`,
operation Apply) and after what a person or a controller does next (a value changed with
`kubectl edit`, a field removed, a status write, a field added by someone else, a same-named
apply with another value).
"""

from __future__ import annotations

import copy
from typing import Any

from reconciler import managedfields

OURS = "gitwarden"
T0, T1 = "2026-12-02T00:00:00Z", "2026-12-02T00:00:05Z"


def entry(manager: str, operation: str, fields: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": "apps/v1",
        "time": extra.pop("time", T0),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        **extra,
    }


OUR_FIELDS: dict[str, Any] = {
    "f:metadata": {"f:labels": {"f:gitwarden.dev/managed": {}}},
    "f:spec": {
        "f:replicas": {},
        "f:template": {
            "f:spec": {
                "f:containers": {
                    'k:{"name":"app"}': {".": {}, "f:image": {}, "f:name": {}},
                }
            }
        },
    },
}


def applied() -> dict[str, Any]:
    """A Deployment right after our apply (with a defaulted field we do not own)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "app",
            "resourceVersion": "100",
            "labels": {"gitwarden.dev/managed": "true"},
            "managedFields": [entry(OURS, "Apply", copy.deepcopy(OUR_FIELDS))],
        },
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:1", "imagePullPolicy": "IfNotPresent"}
                    ]
                }
            },
        },
        "status": {},
    }


def digest(obj: dict[str, Any]) -> bytes:
    return managedfields.owned_digest(obj, OURS)


def test_a_status_write_and_another_managers_new_field_leave_the_digest_alone() -> None:
    before = applied()
    after = applied()
    after["metadata"]["resourceVersion"] = "101"
    after["status"] = {"replicas": 1, "observedGeneration": 1}
    after["metadata"]["managedFields"].append(
        entry("kube-controller-manager", "Update", {"f:status": {"f:replicas": {}}},
              subresource="status", time=T1)
    )  # fmt: skip
    after["metadata"].setdefault("annotations", {})["note"] = "added by someone"
    after["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    assert digest(after) == digest(before)


def test_a_value_taken_over_by_kubectl_edit_changes_the_digest_and_names_it() -> None:
    before = applied()
    after = applied()
    after["spec"]["replicas"] = 5
    # Server-side apply moves the changed field from our entry to the editor's.
    del after["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:replicas"]
    after["metadata"]["managedFields"].append(
        entry("kubectl-edit", "Update", {"f:spec": {"f:replicas": {}}}, time=T1)
    )
    assert digest(after) != digest(before)
    shape = {"spec": {"replicas": 1, "template": {}}, "metadata": {"labels": {}}}
    found = managedfields.others(after, OURS)
    assert managedfields.changers(found, OURS, shape, T0) == ("kubectl-edit",)


def test_a_removed_field_changes_the_digest() -> None:
    before = applied()
    after = applied()
    del after["metadata"]["labels"]["gitwarden.dev/managed"]
    del after["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"]
    assert digest(after) != digest(before)


def test_a_same_named_apply_with_another_value_changes_the_digest() -> None:
    before = applied()
    after = applied()
    after["spec"]["template"]["spec"]["containers"][0]["image"] = "attacker:latest"
    assert digest(after) != digest(before)
    assert managedfields.others(after, OURS) == ()


def test_a_list_item_found_by_its_key_and_absent_fields_never_equal_a_value() -> None:
    obj = applied()
    fields: dict[str, Any] = {"f:spec": {"f:template": {"f:spec": {"f:containers": {
        'k:{"name":"app"}': {"f:image": {}},
        'k:{"name":"gone"}': {"f:image": {}},
    }}}}}  # fmt: skip
    projected = managedfields.project(fields, obj)
    containers = projected["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert containers['k:{"name":"app"}'] == {"f:image": [1, "app:1"]}
    assert containers['k:{"name":"gone"}'] == [0]
    # A field whose value is [0] is still told apart from a missing one.
    assert managedfields.project({"f:x": {}}, {"x": [0]}) != managedfields.project({"f:x": {}}, {})


def test_set_members_and_indexes_are_projected() -> None:
    obj = {"spec": {"finalizers": ["a", "b"], "args": ["--x", "--y"]}}
    fields: dict[str, Any] = {
        "f:spec": {"f:finalizers": {'v:"a"': {}, 'v:"z"': {}}, "f:args": {"i:1": {}}}
    }
    projected = managedfields.project(fields, obj)
    assert projected["f:spec"]["f:finalizers"] == {'v:"a"': [1, "a"], 'v:"z"': [0]}
    assert projected["f:spec"]["f:args"] == {"i:1": [1, "--y"]}


def test_no_entry_of_ours_is_a_digest_of_its_own() -> None:
    obj = applied()
    obj["metadata"]["managedFields"] = []
    assert digest(obj) != digest(applied())


def test_changers_skip_co_owners_from_before_our_apply_and_name_our_name_under_update() -> None:
    shape = {"spec": {"replicas": 1}}
    old_owner = managedfields.Entry("helm", "Update", "", T0, {"f:spec": {"f:replicas": {}}})
    impostor = managedfields.Entry(OURS, "Update", "", T1, {"f:spec": {"f:replicas": {}}})
    status = managedfields.Entry(
        "kube-controller-manager", "Update", "status", T1, {"f:status": {"f:replicas": {}}}
    )
    found = managedfields.changers((old_owner, impostor, status), OURS, shape, T1)
    assert found == ("gitwarden (Update)",)
    assert managedfields.changers((old_owner,), OURS, shape, "") == ("helm",)


def test_a_secrets_values_are_hashed_never_kept_in_what_is_returned() -> None:
    secret = {
        "metadata": {
            "managedFields": [entry(OURS, "Apply", {"f:data": {"f:password": {}}})],
        },
        "data": {"password": "c3VwZXItc2VjcmV0"},
    }
    found = digest(secret)
    assert len(found) == 16
    assert b"c3VwZXItc2VjcmV0" not in found
    assert "c3VwZXItc2VjcmV0" not in repr(managedfields.others(secret, "someone-else"))
