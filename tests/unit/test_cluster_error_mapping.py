"""The cluster adapter's one mapping from an API answer to our errors (pure, no cluster)."""

from __future__ import annotations

import json

import pytest

from reconciler import cluster_errors, errors, syncstore

VALUE = "super-secret-value"


def status_body(
    reason: str, message: str = "", causes: list[dict[str, str]] | None = None
) -> bytes:
    body: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
    }
    if causes is not None:
        body["details"] = {"causes": causes}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "reason", "expected", "base"),
    [
        (400, "BadRequest", cluster_errors.Rejected, errors.Stalled),
        (401, "Unauthorized", cluster_errors.Unauthorized, errors.Transient),
        (403, "Forbidden", cluster_errors.Forbidden, errors.Stalled),
        (404, "NotFound", cluster_errors.NotFound, errors.Stalled),
        (409, "Conflict", cluster_errors.Conflict, errors.Transient),
        (410, "Expired", cluster_errors.Expired, errors.Transient),
        (413, "RequestEntityTooLarge", cluster_errors.Rejected, errors.Stalled),
        (422, "Invalid", cluster_errors.Invalid, errors.Stalled),
        (429, "TooManyRequests", cluster_errors.Busy, errors.Transient),
        (500, "InternalError", cluster_errors.Busy, errors.Transient),
        (503, "ServiceUnavailable", cluster_errors.Busy, errors.Transient),
        (504, "Timeout", cluster_errors.Busy, errors.Transient),
    ],
)
def test_each_status_maps_to_one_error_that_quotes_no_message(
    status: int, reason: str, expected: type[Exception], base: type[Exception]
) -> None:
    error = cluster_errors.for_status(
        "apply Secret ns/db", status, "Phrase", status_body(reason, f"echo {VALUE}")
    )
    assert type(error) is expected
    assert isinstance(error, base)
    assert error.status == status
    assert str(error).startswith(f"apply Secret ns/db: HTTP {status} Phrase")
    assert VALUE not in str(error)


@pytest.mark.parametrize(
    "message",
    ["field is immutable", "may not change once set", "field is immutable when `immutable` is set"],
)
def test_an_immutable_field_is_told_apart_by_the_servers_words(message: str) -> None:
    body = status_body(
        "Invalid",
        f'Job.batch "x" is invalid: spec.template: Invalid value: {VALUE}: {message}',
        [{"field": "spec.template", "message": message, "reason": "FieldValueInvalid"}],
    )
    error = cluster_errors.for_status("apply Job.batch ns/x", 422, "Unprocessable Entity", body)
    assert isinstance(error, cluster_errors.Immutable)
    assert error.fields == ("spec.template",)
    assert (
        str(error)
        == "apply Job.batch ns/x: HTTP 422 Unprocessable Entity (Invalid): invalid spec.template"
    )


def test_a_body_that_is_not_a_status_is_never_quoted() -> None:
    error = cluster_errors.for_status(
        "read Secret ns/db", 500, "Internal Server Error", f"<html>{VALUE}</html>".encode()
    )
    assert isinstance(error, cluster_errors.Busy)
    assert str(error) == "read Secret ns/db: HTTP 500 Internal Server Error"


def test_unreachable_quotes_only_the_type_of_the_cause() -> None:
    error = cluster_errors.unreachable("list ConfigMap", OSError(f"reset while sending {VALUE}"))
    assert str(error) == "list ConfigMap: no answer from the API server (OSError)"
    assert isinstance(error, errors.Transient)


def all_subclasses(cls: type[Exception]) -> set[type[Exception]]:
    found: set[type[Exception]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def test_every_cluster_error_is_exactly_one_of_transient_and_stalled() -> None:
    assert issubclass(syncstore.InventoryUnreadable, cluster_errors.ClusterError)
    classes = all_subclasses(cluster_errors.ClusterError)
    assert cluster_errors.Immutable in classes
    for cls in classes:
        assert issubclass(cls, errors.Transient) != issubclass(cls, errors.Stalled), cls
