"""Which kinds are namespaced, known without a cluster where possible.

Owns the built-in table of well-known Kubernetes kinds (cluster-scoped and namespaced), the
scope of custom kinds declared by CRDs in the same revision, and the order in which those and
the cluster's discovery are asked. Must not talk to the cluster itself: discovery arrives as a
callable from the pipeline (the cluster port), so load stays testable with plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

Discovery = Callable[[str, str], "bool | None"]
"""`(group, kind) -> namespaced?`, None when the cluster does not serve the kind."""

RBAC = "rbac.authorization.k8s.io"
ADMISSION = "admissionregistration.k8s.io"
STORAGE = "storage.k8s.io"
NETWORKING = "networking.k8s.io"
CRD_GROUP = "apiextensions.k8s.io"

CLUSTER_SCOPED: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolume"),
        (RBAC, "ClusterRole"),
        (RBAC, "ClusterRoleBinding"),
        (CRD_GROUP, "CustomResourceDefinition"),
        (STORAGE, "StorageClass"),
        (STORAGE, "CSIDriver"),
        (STORAGE, "CSINode"),
        (STORAGE, "VolumeAttachment"),
        (STORAGE, "VolumeAttributesClass"),
        ("scheduling.k8s.io", "PriorityClass"),
        (NETWORKING, "IngressClass"),
        (NETWORKING, "IPAddress"),
        (NETWORKING, "ServiceCIDR"),
        ("node.k8s.io", "RuntimeClass"),
        (ADMISSION, "ValidatingWebhookConfiguration"),
        (ADMISSION, "MutatingWebhookConfiguration"),
        (ADMISSION, "ValidatingAdmissionPolicy"),
        (ADMISSION, "ValidatingAdmissionPolicyBinding"),
        ("apiregistration.k8s.io", "APIService"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("certificates.k8s.io", "ClusterTrustBundle"),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("resource.k8s.io", "DeviceClass"),
    }
)

NAMESPACED: frozenset[tuple[str, str]] = frozenset(
    {
        *(
            ("", kind)
            for kind in (
                "ConfigMap",
                "Secret",
                "Service",
                "ServiceAccount",
                "Pod",
                "PodTemplate",
                "PersistentVolumeClaim",
                "Endpoints",
                "LimitRange",
                "ResourceQuota",
                "ReplicationController",
                "Event",
            )
        ),
        *(
            ("apps", kind)
            for kind in (
                "Deployment",
                "StatefulSet",
                "DaemonSet",
                "ReplicaSet",
                "ControllerRevision",
            )
        ),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("policy", "PodDisruptionBudget"),
        (NETWORKING, "Ingress"),
        (NETWORKING, "NetworkPolicy"),
        (RBAC, "Role"),
        (RBAC, "RoleBinding"),
        ("coordination.k8s.io", "Lease"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("events.k8s.io", "Event"),
        (STORAGE, "CSIStorageCapacity"),
        ("bitnami.com", "SealedSecret"),
    }
)


@dataclass(frozen=True)
class Scopes:
    """Answers `namespaced(group, kind)`: built-in table, then the revision's CRDs, then discovery.

    Built-in kinds come first because the API server never lets a CRD redefine them; a CRD in
    the revision comes before discovery because it is what this revision is about to apply.
    """

    declared: Mapping[tuple[str, str], bool] = field(default_factory=lambda: MappingProxyType({}))
    discovery: Discovery | None = None

    def namespaced(self, group: str, kind: str) -> bool | None:
        key = (group, kind)
        if key in CLUSTER_SCOPED:
            return False
        if key in NAMESPACED:
            return True
        if key in self.declared:
            return self.declared[key]
        return self.discovery(group, kind) if self.discovery is not None else None
