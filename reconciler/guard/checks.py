"""The permissions that defeat GitWarden's admission, and who is expected to hold them.

Owns the list of dangerous permissions for one installation (GitWarden's namespace, the GitOps
service account, the webhook configuration's name, the exempt identities) as plain `Request`s,
and the expected identities, each naming one identity and the permissions it needs. Why each
permission is dangerous is said in its description, which the audit prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.guard import rbac

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
MASTERS = "system:masters"
ANY = "*"
"""In an expected identity: every permission."""


@dataclass(frozen=True)
class Installation:
    """What the checks are about: one GitWarden installation."""

    namespace: str
    gitops_service_account: str
    webhook_configuration: str
    exempt_usernames: tuple[str, ...] = ()
    exempt_groups: tuple[str, ...] = ()
    break_glass_groups: tuple[str, ...] = ()

    @property
    def gitops_username(self) -> str:
        """The GitOps identity's username."""
        return f"{rbac.SA_PREFIX}{self.namespace}:{self.gitops_service_account}"


@dataclass(frozen=True)
class Permission:
    """A named permission; holding any one of `requests` is holding it."""

    id: str
    description: str
    requests: tuple[rbac.Request, ...]


def _each(
    verbs: Iterable[str],
    group: str,
    resource: str,
    *,
    subresource: str = "",
    namespace: str = "",
    name: str = "",
    any_name: bool = False,
) -> tuple[rbac.Request, ...]:
    return tuple(
        rbac.Request(verb, group, resource, subresource, namespace, name, any_name)
        for verb in verbs
    )


WRITE = ("update", "patch", "delete")
ADMISSION = "admissionregistration.k8s.io"
VWC = "validatingwebhookconfigurations"
RBAC = "rbac.authorization.k8s.io"


def permissions(inst: Installation) -> tuple[Permission, ...]:
    """The permissions that let a subject get around admission for this installation."""
    ns, sa = inst.namespace, inst.gitops_service_account
    workloads = (
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("", "replicationcontrollers"),
    )
    exempt = tuple(
        rbac.Request("impersonate", "", "users", name=user) for user in inst.exempt_usernames
    ) + tuple(
        rbac.Request("impersonate", "", "groups", name=group)
        for group in (*inst.exempt_groups, *inst.break_glass_groups, MASTERS)
    )
    return (
        Permission(
            "impersonate-gitops",
            "act as the GitOps identity: admission cannot tell impersonation apart",
            (
                rbac.Request("impersonate", "", "serviceaccounts", namespace=ns, name=sa),
                rbac.Request("impersonate", "", "users", name=inst.gitops_username),
            ),
        ),
        Permission(
            "impersonate-pod-extras",
            "forge the pod binding of a token (pod-name, pod-uid extras)",
            tuple(
                rbac.Request(
                    "impersonate", "authentication.k8s.io", "userextras", extra, any_name=True
                )
                for extra in (POD_NAME_EXTRA, POD_UID_EXTRA)
            ),
        ),
        Permission(
            "impersonate-exempt",
            "act as an exempt identity, a break-glass group or system:masters",
            exempt,
        ),
        Permission(
            "gitops-token",
            "mint tokens of the GitOps service account, bound to any of its pods",
            (rbac.Request("create", "", "serviceaccounts", "token", ns, sa),),
        ),
        Permission(
            "pods",
            "run pods in GitWarden's namespace (as the GitOps service account)",
            _each(("create",), "", "pods", namespace=ns),
        ),
        Permission(
            "pod-exec",
            "run commands in GitWarden's pods, or add containers to them",
            tuple(
                rbac.Request("create", "", "pods", sub, ns, any_name=True)
                for sub in ("exec", "attach", "portforward")
            )
            + _each(
                WRITE[:2],
                "",
                "pods",
                subresource="ephemeralcontainers",
                namespace=ns,
                any_name=True,
            ),
        ),
        Permission(
            "node-proxy",
            "reach kubelets directly (exec into any pod, GitWarden's too; no admission)",
            _each(("get", "create"), "", "nodes", subresource="proxy", any_name=True),
        ),
        Permission(
            "client-certificates",
            "approve client certificates with any name, e.g. the GitOps username",
            (
                rbac.Request(
                    "approve",
                    "certificates.k8s.io",
                    "signers",
                    name="kubernetes.io/kube-apiserver-client",
                ),
            ),
        ),
        Permission(
            "workloads",
            "create or change workloads in GitWarden's namespace (their pods run there)",
            tuple(
                rbac.Request(verb, group, resource, namespace=ns, any_name=True)
                for group, resource in workloads
                for verb in ("create", "update", "patch")
            ),
        ),
        Permission(
            "webhook-configuration",
            "change or delete GitWarden's ValidatingWebhookConfiguration (never admitted)",
            _each(WRITE, ADMISSION, VWC, name=inst.webhook_configuration)
            + _each(("deletecollection", "create"), ADMISSION, VWC),
        ),
        Permission(
            "mutating-webhooks",
            "register mutating webhooks or policies, which rewrite what GitOps applies",
            tuple(
                rbac.Request(verb, ADMISSION, resource, any_name=True)
                for resource in (
                    "mutatingwebhookconfigurations",
                    "mutatingadmissionpolicies",
                    "mutatingadmissionpolicybindings",
                )
                for verb in ("create", "update", "patch")
            ),
        ),
        Permission(
            "namespace",
            "change or delete GitWarden's namespace (excluded from admission)",
            _each(WRITE, "", "namespaces", namespace=ns, name=ns),
        ),
        Permission(
            "namespace-objects",
            "change GitWarden's Deployments, ConfigMaps and Secrets (OPA data, fail-open)",
            tuple(
                rbac.Request(verb, group, resource, namespace=ns, any_name=True)
                for group, resource in (
                    ("apps", "deployments"),
                    ("", "configmaps"),
                    ("", "secrets"),
                )
                for verb in (*WRITE, "deletecollection")
            )
            + _each(("create",), "", "secrets", namespace=ns),
        ),
        Permission(
            "read-secrets",
            "read GitWarden's Secrets: the sealing keys open every SealedSecret",
            _each(("get", "list", "watch"), "", "secrets", namespace=ns, any_name=True),
        ),
        Permission(
            "rbac-escalate",
            "grant permissions one does not hold (escalate, bind)",
            _each(("escalate", "bind"), RBAC, "clusterroles", any_name=True)
            + _each(("escalate", "bind"), RBAC, "roles", namespace=ns, any_name=True),
        ),
        Permission(
            "wildcard",
            "every verb on every resource (`*`)",
            (
                rbac.Request(ANY, ANY, ANY, any_name=True),
                rbac.Request(ANY, ANY, ANY, namespace=ns, any_name=True),
            ),
        ),
    )


@dataclass(frozen=True)
class Expected:
    """One identity (a username, or `group:NAME`) expected to hold some permissions."""

    identity: str
    permissions: tuple[str, ...]
    why: str = ""
    binding: str = ""
    """When set, only this binding (`Kind name` or `Kind namespace/name`) is expected to grant
    them: the same permission through any other binding is a finding."""

    def covers(self, identity: str, permission: str, binding: str) -> bool:
        """Whether this expectation accounts for `identity` holding `permission` via `binding`."""
        return (
            identity == self.identity
            and (ANY in self.permissions or permission in self.permissions)
            and (not self.binding or binding == self.binding)
        )


def parse_expected(text: str) -> Expected:
    """`IDENTITY` (every permission) or `IDENTITY=perm,perm` from the command line."""
    identity, sep, perms = text.partition("=")
    if not identity:
        raise ValueError(f"expected identity {text!r}: name an identity")
    names = tuple(p for p in perms.split(",") if p) if sep else (ANY,)
    if not names:
        raise ValueError(f"expected identity {text!r}: list at least one permission")
    return Expected(identity, names, "given on the command line")


# kube-controller-manager's controllers run as these service accounts (with
# --use-service-account-credentials) and hold these permissions through the API server's
# bootstrap ClusterRoles `system:controller:<name>`: measured with `gitwarden audit` against
# kube-apiserver v1.35.4 (tests/e2e/test_audit.py checks a fresh cluster audits clean).
# Each entry names one controller and exactly what it holds; anything more is a finding. (The
# garbage collector and namespace controller hold `get` on every resource, nodes/proxy too.)
BOOTSTRAP_CONTROLLERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("clusterrole-aggregation-controller", ("rbac-escalate",)),
    ("cronjob-controller", ("workloads",)),
    ("daemon-set-controller", ("pods",)),
    ("deployment-controller", ("namespace-objects", "workloads")),
    (
        "generic-garbage-collector",
        (
            "mutating-webhooks",
            "namespace",
            "namespace-objects",
            "node-proxy",
            "pod-exec",
            "read-secrets",
            "webhook-configuration",
            "workloads",
        ),
    ),
    ("job-controller", ("pods", "workloads")),
    ("legacy-service-account-token-cleaner", ("namespace-objects",)),
    (
        "namespace-controller",
        ("namespace", "namespace-objects", "node-proxy", "read-secrets", "webhook-configuration"),
    ),
    ("persistent-volume-binder", ("pods",)),
    ("replicaset-controller", ("pods", "workloads")),
    ("replication-controller", ("pods", "workloads")),
    ("resourcequota-controller", ("read-secrets",)),
    ("root-ca-cert-publisher", ("namespace-objects",)),
    ("statefulset-controller", ("pods",)),
)


def default_expected(inst: Installation) -> tuple[Expected, ...]:
    """Identities that hold some of these permissions by design, each named with what it needs."""
    controllers = tuple(
        Expected(
            f"{rbac.SA_PREFIX}kube-system:{name}",
            perms,
            "kube-controller-manager",
            f"ClusterRoleBinding system:controller:{name}",
        )
        for name, perms in BOOTSTRAP_CONTROLLERS
    )
    return (
        Expected(inst.gitops_username, (ANY,), "the GitOps identity applies and restores"),
        Expected("group:system:nodes", ("gitops-token",), "kubelets mint tokens for their pods"),
        Expected(
            "system:kube-controller-manager",
            ("gitops-token", "namespace-objects", "read-secrets"),
            "kube-controller-manager's own identity",
            "ClusterRoleBinding system:kube-controller-manager",
        ),
        *controllers,
    )
