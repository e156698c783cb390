"""The cluster adapter's errors, and the one mapping from an API answer to them.

Owns the rule that decides what the loop does with an API error: 409, 429, 5xx, 401 and the
network retry (`Transient`); 400, 403, 404 and 422 wait for a new revision or configuration
(`Stalled`): 403 and 404 stall on the cluster's side (RBAC, a missing namespace or kind, an
admission denial: `cause_in_cluster`, retried on a slow backoff), 400 and 422 on the revision's.
Every message names the request (verb and object) with the HTTP status and the
Status object's machine `reason` only, never the response body or the Status `message`: the API
server may echo what it was sent, and for a Secret that is the value. A 422 names the invalid
field paths (from `details.causes[].field`) and tells an immutable field from another error.
Must not import the kubernetes client or urllib3 (cluster.py catches those and calls `for_status`
or `unreachable`).
"""

from __future__ import annotations

import json
from typing import Any

from reconciler import errors

# How the API server words an update that touches a field that may not change. A Job's
# template, a Deployment's selector and most immutable fields say the first; a Service's
# clusterIP says the second; an `immutable: true` ConfigMap or Secret says the third.
IMMUTABLE_MARKERS = ("field is immutable", "may not change once set", "immutable is set")


class ClusterError(Exception):
    """Mixed into every error the cluster adapter raises, each also exactly one of `Transient`
    and `Stalled`; `status` is the HTTP status (0: no answer), `reason` a CamelCase code.

    Not a `ReconcileError` itself, so every concrete class picks its base explicitly.
    """

    status: int = 0

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or type(self).__name__


class Unreachable(ClusterError, errors.Transient):
    """No answer: connection refused or reset, TLS failure, timeout."""


class Busy(ClusterError, errors.Transient):
    """429 or 5xx: the API server (or etcd) is overloaded or briefly failing."""


class Conflict(ClusterError, errors.Transient):
    """409: someone changed the object between our read and our write (a precondition)."""


class Expired(ClusterError, errors.Transient):
    """410: a list's continue token expired; the next pass lists again."""


class Unauthorized(ClusterError, errors.Transient):
    """401: credentials rejected; transient, as a mounted token is rotated in place."""


class Rejected(ClusterError, errors.Stalled):
    """400 or another 4xx: the request itself is wrong for this object."""


class Forbidden(ClusterError, errors.Stalled):
    """403: RBAC (or an admission webhook) refused; an administrator's fix ends it."""

    cause_in_cluster = True


class NotFound(ClusterError, errors.Stalled):
    """404: the object, its namespace or its kind does not exist (yet)."""

    cause_in_cluster = True


class Invalid(ClusterError, errors.Stalled):
    """422: the object does not validate; `fields` are the offending field paths."""

    def __init__(
        self, message: str, *, status: int = 422, reason: str = "", fields: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, status=status, reason=reason)
        self.fields = fields


class Immutable(Invalid):
    """422 on a field that may not change once set: only a recreate can apply the change."""


class NotServed(ClusterError, errors.Stalled):
    """The API server serves no resource for the kind (its CRD is missing or not ready)."""

    cause_in_cluster = True


class GroupUnavailable(ClusterError, errors.Transient):
    """The kind's API group is served by an aggregated API server that is not answering
    (discovery says Stale): whether the kind or its objects exist cannot be told yet."""


class NotEstablished(ClusterError, errors.Transient):
    """A CRD did not become Established (or its kinds did not appear) in time."""


class NotGone(ClusterError, errors.Transient):
    """An object deleted for a recreate still exists after the wait (finalizers pending)."""


class NamesNotAccepted(ClusterError, errors.Stalled):
    """A CRD's names conflict with another CRD in the cluster; removing that one ends it."""

    cause_in_cluster = True


def unreachable(what: str, cause: BaseException) -> Unreachable:
    """The error for a request that got no HTTP answer; only the cause's type is quoted."""
    return Unreachable(f"{what}: no answer from the API server ({type(cause).__name__})")


def for_status(what: str, status: int, phrase: str, body: bytes) -> ClusterError:
    """The error for a non-2xx answer to `what` (e.g. `apply ConfigMap ns/app`)."""
    details = _status_object(body)
    reason = str(details.get("reason") or "")
    head = f"{what}: HTTP {status} {phrase}".rstrip()
    if reason:
        head += f" ({reason})"
    if status == 422:
        fields = _cause_fields(details)
        text = head + (f": invalid {', '.join(fields)}" if fields else "")
        invalid = Immutable if _mentions_immutable(details) else Invalid
        return invalid(text, status=status, reason=invalid.__name__, fields=fields)
    cls_for: dict[int, type[ClusterError]] = {
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
        410: Expired,
        429: Busy,
    }
    cls = cls_for.get(status) or (Busy if status >= 500 else Rejected)
    return cls(head, status=status, reason=reason or cls.__name__)


def _status_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) and parsed.get("kind") == "Status" else {}


def _causes(details: dict[str, Any]) -> list[dict[str, Any]]:
    inner = details.get("details")
    causes = inner.get("causes") if isinstance(inner, dict) else None
    return [c for c in causes if isinstance(c, dict)] if isinstance(causes, list) else []


def _cause_fields(details: dict[str, Any]) -> tuple[str, ...]:
    # Field paths name where the problem is (`spec.selector`, `data[tls.key]`): keys, never
    # values. They are what a person needs to find the line in Git.
    fields = (str(c.get("field") or "") for c in _causes(details))
    return tuple(dict.fromkeys(f for f in fields if f))


def _mentions_immutable(details: dict[str, Any]) -> bool:
    # Read, never quoted: the messages may carry the rejected value.
    texts = [str(details.get("message") or "")]
    texts += [str(c.get("message") or "") for c in _causes(details)]
    return any(marker in text for text in texts for marker in IMMUTABLE_MARKERS)
