"""The RBAC audit: which subjects hold a permission that defeats admission, and through what.

Owns turning RBAC holdings into findings (one per subject, permission and binding), sorting
each into `finding`, `expected` (an expected identity accounts for it) or `unavoidable`
(system:masters, which RBAC cannot take anything from), and confirming each with the
authorizer's own answer when a `confirm` callback is given. Pure apart from that callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from reconciler.guard import checks, rbac

FINDING, EXPECTED, UNAVOIDABLE = "finding", "expected", "unavoidable"
Confirm = Callable[[rbac.Subject, rbac.Request, str], bool]

_EVERYONE = {
    "system:authenticated": "every authenticated user",
    "system:unauthenticated": "anonymous requests",
    "system:serviceaccounts": "every service account",
}


@dataclass(frozen=True)
class Finding:
    """`subject` holds `permission` (as `requests`) via `via`."""

    subject: rbac.Subject
    permission: str
    description: str
    requests: tuple[str, ...]
    via: str
    status: str
    confirmed: bool | None = None
    """What a SubjectAccessReview answered for the first request; None when not asked."""
    note: str = ""

    @property
    def subject_text(self) -> str:
        """`Kind name`, with who a system group stands for."""
        if self.subject.kind == "ServiceAccount":
            text = f"ServiceAccount {self.subject.namespace}/{self.subject.name}"
        else:
            text = f"{self.subject.kind} {self.subject.name}"
        everyone = _EVERYONE.get(self.subject.name) if self.subject.kind == "Group" else None
        return f"{text} ({everyone})" if everyone else text


def masters() -> Finding:
    """system:masters holds everything, always: the API server authorizes it before RBAC."""
    return Finding(
        subject=rbac.Subject("Group", checks.MASTERS),
        permission="everything",
        description="every permission above",
        requests=("*",),
        via="bypasses RBAC: the API server allows this group before any authorizer runs",
        status=UNAVOIDABLE,
        note="give no one a client certificate with O=system:masters outside break-glass",
    )


def run(
    snapshot: rbac.Snapshot,
    permissions: Sequence[checks.Permission],
    expected: Iterable[checks.Expected],
    confirm: Confirm | None = None,
) -> list[Finding]:
    """Every finding, system:masters first, then by subject and permission."""
    expectations = tuple(expected)
    grouped: dict[tuple[rbac.Subject, str, str], list[rbac.Holding]] = {}
    for permission in permissions:
        for holding in rbac.holders(snapshot, permission.requests):
            if holding.subject == rbac.Subject("Group", checks.MASTERS):
                continue  # reported once below, whatever RBAC says
            grouped.setdefault((holding.subject, permission.id, holding.via()), []).append(holding)
    # A wildcard grant implies every other permission through the same binding: one row says it.
    wildcard = {(s, via) for (s, p, via) in grouped if p == "wildcard"}
    by_id = {p.id: p for p in permissions}
    findings = [masters()]
    for (subject, permission_id, via), held in sorted(grouped.items(), key=_order):
        if permission_id != "wildcard" and (subject, via) in wildcard:
            continue
        permission = by_id[permission_id]
        first = held[0]
        covered = any(e.covers(subject.key, permission_id, first.binding.ref) for e in expectations)
        findings.append(
            Finding(
                subject=subject,
                permission=permission_id,
                description=permission.description,
                requests=tuple(dict.fromkeys(h.request.describe() for h in held)),
                via=via,
                status=EXPECTED if covered else FINDING,
                confirmed=(
                    None
                    if confirm is None
                    else confirm(subject, first.request, first.sample_name())
                ),
                note="implies every permission" if permission_id == "wildcard" else "",
            )
        )
    return findings


def _order(item: tuple[tuple[rbac.Subject, str, str], list[rbac.Holding]]) -> tuple[str, ...]:
    (subject, permission, via), _ = item
    return (subject.kind, subject.namespace, subject.name, permission, via)


def nothing_unexpected(findings: Sequence[Finding]) -> bool:
    """True when nothing beyond the expected (and the unavoidable) was found."""
    return all(f.status != FINDING for f in findings)
