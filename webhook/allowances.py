"""System allowances: what each of the cluster's own controllers may do to objects in scope.

Owns the `SystemAllowance` value and the defaults. Every allowance names its controllers by
username (one per controller, plus `system:kube-controller-manager` for clusters that run the
controllers without per-controller service accounts), the operations, subresources and objects
it needs, and what an update may change. No allowance matches a group: a group such as
`system:serviceaccounts:kube-system` holds every add-on's account (coredns, CNI agents) too.
The kubelet is the one identity that cannot be named up front (one user per node); `nodes`
matches `system:node:<name>` in group `system:nodes`, which the NodeRestriction admission
plugin limits to the node's own pods. This module holds data only; webhook.config renders it
for OPA and webhook.registration for the API server.
"""

from __future__ import annotations

from dataclasses import dataclass

SA = "system:serviceaccount:kube-system:"
KCM = "system:kube-controller-manager"
SCHEDULER = "system:kube-scheduler"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

# The metadata fields an update is checked for one by one: an allowance may change them only
# when it lists them in `changed_fields_within` (labels: only with `owner_labels`, see
# admission.rego).
GUARDED_METADATA = (
    "metadata.labels",
    "metadata.annotations",
    "metadata.ownerReferences",
    "metadata.finalizers",
)


@dataclass(frozen=True)
class SystemAllowance:
    """One thing named controllers may do to an object in scope. Empty fields don't narrow."""

    name: str
    usernames: tuple[str, ...] = ()
    nodes: bool = False
    """Also the kubelets: username system:node:<name> in group system:nodes."""
    operations: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    changed_fields_within: tuple[str, ...] = ()
    """An UPDATE may change only these fields (metadata.* ones only when listed)."""
    annotations_within: tuple[str, ...] = ()
    """When metadata.annotations may change: only these keys."""
    owner_kinds: tuple[str, ...] = ()
    """The object must have a controller ownerReference of one of these kinds."""
    with_owner_reference: bool = False
    """The object must carry an ownerReference (garbage collection deletes only those)."""
    namespace_terminating: bool = False
    """Only in a namespace that is being deleted (the webhook reads its deletionTimestamp)."""
    object_terminating: bool = False
    """Only for an object that already has a deletionTimestamp."""
    owner_labels: bool = False
    """An UPDATE may also change labels, all but the managed label: the controller copies them
    from the object it serves (the endpoint controllers copy a Service's labels, the managed
    label included, onto its Endpoints and EndpointSlices)."""

    @property
    def identity_only(self) -> bool:
        """True when identity, operation and request names decide it (CEL can, in the server)."""
        return not (
            self.changed_fields_within
            or self.owner_labels
            or self.owner_kinds
            or self.with_owner_reference
            or self.namespace_terminating
            or self.object_terminating
        )

    @property
    def status_only(self) -> bool:
        """A status write that changes nothing else: CEL can compare the metadata itself."""
        return (
            self.subresources == ("status",)
            and self.changed_fields_within == ("status",)
            and not (
                self.owner_kinds
                or self.with_owner_reference
                or self.namespace_terminating
                or self.object_terminating
            )
        )


LIST_FIELDS = (
    "usernames",
    "operations",
    "subresources",
    "api_groups",
    "resources",
    "names",
    "changed_fields_within",
    "annotations_within",
    "owner_kinds",
)
BOOL_FIELDS = (
    "nodes",
    "with_owner_reference",
    "namespace_terminating",
    "object_terminating",
    "owner_labels",
)


def _sa(*names: str) -> tuple[str, ...]:
    return (*(SA + n for n in names), KCM)


# Controllers that write status of objects they own or watch (kube-controller-manager's
# controller_policy.go grants each `update` on the */status it needs), the scheduler (pod
# conditions), the API server's own loops (CRD and APIService status) and the kubelets.
STATUS_WRITERS = (
    *_sa(
        "deployment-controller",
        "replicaset-controller",
        "statefulset-controller",
        "daemon-set-controller",
        "job-controller",
        "cronjob-controller",
        "replication-controller",
        "horizontal-pod-autoscaler",
        "disruption-controller",
        "persistent-volume-binder",
        "expand-controller",
        "resourcequota-controller",
        "namespace-controller",
        "node-controller",
        "pod-garbage-collector",
        "taint-eviction-controller",
        "service-controller",
        "certificate-controller",
    ),
    SCHEDULER,
    "system:apiserver",
)

ENDPOINTS_TRIGGER = "endpoints.kubernetes.io/last-change-trigger-time"

DEPLOYMENT_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
)


def _children(
    controller: str, resources: tuple[str, ...], group: str, owner: str
) -> SystemAllowance:
    """A workload controller creating and deleting the children its owner object asks for."""
    return SystemAllowance(
        f"{controller}-{resources[0]}",
        usernames=_sa(controller),
        operations=("CREATE", "DELETE"),
        subresources=("",),
        api_groups=(group,),
        resources=resources,
        owner_kinds=(owner,),
    )


DEFAULT_SYSTEM_ALLOWANCES: tuple[SystemAllowance, ...] = (
    SystemAllowance(
        "status-writers",
        usernames=STATUS_WRITERS,
        nodes=True,
        operations=("UPDATE",),
        subresources=("status",),
        changed_fields_within=("status",),
    ),
    # The deployment controller records rollout revisions as annotations on the Deployment
    # (through the object, not status) and on its ReplicaSets.
    SystemAllowance(
        "deployment-revision",
        usernames=_sa("deployment-controller"),
        operations=("UPDATE",),
        subresources=("", "status"),
        api_groups=("apps",),
        resources=("deployments",),
        changed_fields_within=("metadata.annotations", "status"),
        annotations_within=DEPLOYMENT_ANNOTATIONS,
    ),
    SystemAllowance(
        "deployment-controller-replicasets",
        usernames=_sa("deployment-controller"),
        operations=("UPDATE",),
        subresources=("",),
        api_groups=("apps",),
        resources=("replicasets",),
        changed_fields_within=("spec", "metadata.annotations"),
        annotations_within=DEPLOYMENT_ANNOTATIONS,
        owner_kinds=("Deployment",),
    ),
    SystemAllowance(
        "hpa-scale",
        usernames=_sa("horizontal-pod-autoscaler"),
        operations=("UPDATE",),
        subresources=("scale",),
    ),
    # The garbage collector orphans (drops owner references and its finalizers) and deletes
    # dependents. It deletes only objects that carry an ownerReference: no identity but GitOps
    # can add one to a managed object, so it only ever deletes what Git (or the owning
    # controller at creation) made a dependent.
    SystemAllowance(
        "garbage-collector-orphan",
        usernames=_sa("generic-garbage-collector"),
        operations=("UPDATE",),
        subresources=("",),
        changed_fields_within=("metadata.finalizers", "metadata.ownerReferences"),
    ),
    SystemAllowance(
        "garbage-collector-delete",
        usernames=_sa("generic-garbage-collector"),
        operations=("DELETE",),
        subresources=("",),
        with_owner_reference=True,
    ),
    SystemAllowance(
        "namespace-controller",
        usernames=_sa("namespace-controller"),
        operations=("DELETE",),
        subresources=("",),
        namespace_terminating=True,
    ),
    SystemAllowance(
        "namespace-finalize",
        usernames=_sa("namespace-controller"),
        operations=("UPDATE",),
        subresources=("finalize", "status"),
        api_groups=("",),
        resources=("namespaces",),
        changed_fields_within=("spec", "status"),
        namespace_terminating=True,
    ),
    # The kubelet removes a pod for good once it has stopped its containers.
    SystemAllowance(
        "kubelet-pod-delete",
        nodes=True,
        operations=("DELETE",),
        subresources=("",),
        api_groups=("",),
        resources=("pods",),
        object_terminating=True,
    ),
    _children("replicaset-controller", ("pods",), "", "ReplicaSet"),
    _children("replication-controller", ("pods",), "", "ReplicationController"),
    _children("job-controller", ("pods",), "", "Job"),
    _children("statefulset-controller", ("pods",), "", "StatefulSet"),
    _children("statefulset-controller", ("controllerrevisions",), "apps", "StatefulSet"),
    _children("daemon-set-controller", ("pods",), "", "DaemonSet"),
    _children("daemon-set-controller", ("controllerrevisions",), "apps", "DaemonSet"),
    _children("deployment-controller", ("replicasets",), "apps", "Deployment"),
    _children("cronjob-controller", ("jobs",), "batch", "CronJob"),
    _children("endpointslice-controller", ("endpointslices",), "discovery.k8s.io", "Service"),
    _children("ephemeral-volume-controller", ("persistentvolumeclaims",), "", "Pod"),
    # Endpoints carry their Service's name and no owner reference; claims from a StatefulSet's
    # volumeClaimTemplates have none unless its retention policy deletes them.
    SystemAllowance(
        "endpoint-controller-endpoints",
        usernames=_sa("endpoint-controller"),
        operations=("CREATE", "DELETE"),
        subresources=("",),
        api_groups=("",),
        resources=("endpoints",),
    ),
    # Both endpoint controllers keep what they made current: addresses and ports, a trigger-time
    # annotation, and the Service's labels, copied (so a managed Service's Endpoints are managed
    # objects). Found with the real controllers running: without these, every update after a
    # change of the Service was denied and its endpoints went stale.
    SystemAllowance(
        "endpoint-controller-endpoints-update",
        usernames=_sa("endpoint-controller"),
        operations=("UPDATE",),
        subresources=("",),
        api_groups=("",),
        resources=("endpoints",),
        changed_fields_within=("subsets", "metadata.labels", "metadata.annotations"),
        annotations_within=(ENDPOINTS_TRIGGER,),
        owner_labels=True,
    ),
    SystemAllowance(
        "endpointslice-controller-update",
        usernames=_sa("endpointslice-controller"),
        operations=("UPDATE",),
        subresources=("",),
        api_groups=("discovery.k8s.io",),
        resources=("endpointslices",),
        changed_fields_within=("endpoints", "ports", "metadata.labels", "metadata.annotations"),
        annotations_within=(ENDPOINTS_TRIGGER,),
        owner_kinds=("Service",),
        owner_labels=True,
    ),
    SystemAllowance(
        "statefulset-controller-claims",
        usernames=_sa("statefulset-controller"),
        operations=("CREATE",),
        subresources=("",),
        api_groups=("",),
        resources=("persistentvolumeclaims",),
    ),
    # Every namespace gets these two objects from kube-controller-manager, protected ones too.
    SystemAllowance(
        "root-ca-publisher",
        usernames=_sa("root-ca-cert-publisher"),
        operations=("CREATE", "UPDATE"),
        subresources=("",),
        api_groups=("",),
        resources=("configmaps",),
        names=("kube-root-ca.crt",),
    ),
    SystemAllowance(
        "service-account-controller",
        usernames=_sa("service-account-controller"),
        operations=("CREATE",),
        subresources=("",),
        api_groups=("",),
        resources=("serviceaccounts",),
        names=("default",),
    ),
    # Pods' service-account tokens and bindings: the kubelet and the scheduler only.
    SystemAllowance(
        "kubelet-tokens",
        nodes=True,
        operations=("CREATE",),
        subresources=("token",),
        api_groups=("",),
        resources=("serviceaccounts",),
    ),
    SystemAllowance(
        "scheduler-binding",
        usernames=(SCHEDULER,),
        operations=("CREATE",),
        subresources=("binding",),
        api_groups=("",),
        resources=("pods",),
    ),
)
