# METADATA
# title: GitWarden admission decision
# description: |
#   Decides whether a create, update or delete reaching the webhook may proceed. Only the
#   GitOps identity may change objects in scope; system controllers keep the cluster working;
#   everyone else is told where in Git to make the change. Every list, name and mode comes
#   from configuration at data.gitwarden.admission, never from constants here.
#
#   The webhook queries data.admission.decision with the slim input built by webhook/review.py:
#     operation, kind{group,version,kind}, resource{group,version,resource}, subResource,
#     name, namespace, dryRun, namespaceProtected, namespaceTerminating,
#     namespaceHoldsManaged, crdHoldsManaged (those deletes only), changedFields,
#     metadataChanges{labels, annotations} (changed keys, never values),
#     userInfo{username, groups, podName, podLive},
#     object and oldObject{labels, annotations, ownerReferences[{apiVersion, kind, name,
#     controller}], terminating, serviceAccountName (pods only)}
#   For subresources whose object has no labels (scale, eviction, binding, token, exec...)
#   the webhook puts the parent's metadata in object and oldObject.
package admission

# An import, not a rule (`cfg := data...`): reading the allowances through a rule made OPA
# build them anew in every query, about 850 more allocations per controller's decision
# (bench/bench_policy.py, `opa bench --benchmem`).
import data.gitwarden.admission as cfg

# ---------------------------------------------------------------------------------- scope

# The object, or the stored object it replaces or deletes, carries the managed label. Written
# out rather than through a helper function: a call costs OPA several dozen allocations, and
# every decision asks this first.
managed if input.object.labels[cfg.managed_label.key] == cfg.managed_label.value

managed if input.oldObject.labels[cfg.managed_label.key] == cfg.managed_label.value

# Creates in a namespace labelled protected: the API server only sends these to the
# protected-namespace webhook path, which sets namespaceProtected.
protected_create if {
	input.operation == "CREATE"
	input.namespaceProtected == true
}

# Updates of workloads there too: their controllers create the children (Jobs of a CronJob,
# Pods of a ReplicaSet) that only GitOps may create directly.
protected_create if {
	input.operation == "UPDATE"
	input.namespaceProtected == true
	input.subResource == ""
	some w in cfg.protected_workloads
	w.group == input.resource.group
	w.resource == input.resource.resource
}

# Configured cluster-scoped kinds are guarded whatever their labels say.
guarded_cluster_kind if {
	_cluster_scoped
	some k in cfg.cluster_scoped_kinds
	k.group == input.kind.group
	k.kind == input.kind.kind
}

# A protected namespace's own object: its protected label is GitOps's to change (removing it
# would open the namespace to creates), and deleting it deletes everything in it. Through any
# subresource too: namespaces/status and namespaces/finalize store the labels they are sent.
protected_namespace_change if {
	_is_namespace
	_protected_namespace_object
	_protected_namespace_operation
}

_is_namespace if {
	input.resource.group == ""
	input.resource.resource == "namespaces"
}

# (The API server sends a Namespace's own name as its namespace.)
_cluster_scoped if input.namespace == ""

_cluster_scoped if _is_namespace

_protected_namespace_object if {
	label := cfg.protected_namespace_label
	input.oldObject.labels[label.key] == label.value
}

_protected_namespace_object if {
	label := cfg.protected_namespace_label
	input.object.labels[label.key] == label.value
}

_protected_namespace_operation if input.operation == "DELETE"

_protected_namespace_operation if {
	input.operation == "UPDATE"
	cfg.protected_namespace_label.key in _changed_label_keys
}

# Deleting a namespace deletes every object in it: one holding managed objects (the webhook
# lists the configured kinds for one) is as guarded as they are.
namespace_holding_managed if {
	_is_namespace
	input.operation == "DELETE"
	input.namespaceHoldsManaged == true
}

# GitWarden's own namespace: the requests that would make someone the GitOps identity. A token
# of the GitOps service account is that identity (kubelets mint them for pods), and a pod that
# runs as it, or is named like the reconciler's pods, gets such tokens.
gitops_token_request if {
	input.operation == "CREATE"
	input.namespace == cfg.namespace
	input.resource.group == ""
	input.resource.resource == "serviceaccounts"
	input.subResource == "token"
	input.name == cfg.gitops.service_account
}

gitops_pod_create if {
	input.operation == "CREATE"
	input.namespace == cfg.namespace
	input.resource.group == ""
	input.resource.resource == "pods"
	input.subResource == ""
	_could_hold_gitops_tokens
}

_could_hold_gitops_tokens if input.object.serviceAccountName == cfg.gitops.service_account

_could_hold_gitops_tokens if {
	cfg.gitops.require_pod_bound_token
	some prefix in cfg.gitops.pod_name_prefixes
	startswith(input.name, prefix)
}

# Deleting a CRD deletes all its custom resources: one with managed instances (the webhook lists
# them, for the CRDs of the configured groups) is as guarded as they are.
crd_holding_managed if {
	input.operation == "DELETE"
	input.resource.group == "apiextensions.k8s.io"
	input.resource.resource == "customresourcedefinitions"
	input.crdHoldsManaged == true
}

# The common case first: OPA stops at the first body that holds.
in_scope if managed

in_scope if crd_holding_managed

in_scope if gitops_token_request

in_scope if gitops_pod_create

in_scope if protected_create

in_scope if guarded_cluster_kind

in_scope if protected_namespace_change

in_scope if namespace_holding_managed

# ------------------------------------------------------------------------------ identities

# The webhook always sends username and groups (podName and podLive only for pod-bound
# tokens), so the first body holds; the else is for inputs that omit them, such as the
# tests' (a userInfo that is not an object leaves them undefined, and no decision is made).
# Plain lookups cost a fraction of the allocations of object.get chains.
username := u if {
	u := input.userInfo.username
} else := "" if is_object(object.get(input, "userInfo", {}))

groups := g if {
	g := input.userInfo.groups
} else := [] if is_object(object.get(input, "userInfo", {}))

pod_name := p if {
	p := input.userInfo.podName
} else := "" if is_object(object.get(input, "userInfo", {}))

# The webhook found the token's pod alive with the token's uid (only asked when configured).
pod_live := p if {
	p := input.userInfo.podLive
} else := false if is_object(object.get(input, "userInfo", {}))

gitops_identity if {
	username in cfg.gitops.usernames
	_pod_binding_ok
}

# Pod binding is optional; when required, only tokens bound to the reconciler's own pods
# count, which defeats long-lived token Secrets and tokens minted with `kubectl create token`.
_pod_binding_ok if not cfg.gitops.require_pod_bound_token

_pod_binding_ok if {
	cfg.gitops.require_pod_bound_token
	pod_name != ""
	_pod_prefix_ok
	_pod_live_ok
}

_pod_prefix_ok if count(cfg.gitops.pod_name_prefixes) == 0

_pod_prefix_ok if {
	some prefix in cfg.gitops.pod_name_prefixes
	startswith(pod_name, prefix)
}

_pod_live_ok if not cfg.gitops.verify_pod_live

_pod_live_ok if {
	cfg.gitops.verify_pod_live
	pod_live == true
}

exempt if username in cfg.exemptions.usernames

exempt if {
	some g in groups
	g in cfg.exemptions.groups
}

break_glass if {
	some g in groups
	g in cfg.break_glass.groups
}

# ---------------------------------------------------------------------- system allowances

# A system allowance lets named controllers do one kind of thing the cluster needs (write
# status, scale, garbage-collect, delete during namespace deletion, create a workload's
# children). Every field a rule sets narrows it; a field it omits does not constrain. Rules
# name users, never groups: a group of service accounts holds every add-on's account too.
system_allowance contains rule.name if {
	some i in _candidate_allowances
	rule := cfg.system_allowances[i]

	# A field the rule omits reads as the request's own value: it does not narrow.
	input.operation in object.get(rule, "operations", [input.operation])
	input.subResource in object.get(rule, "subresources", [input.subResource])
	input.resource.group in object.get(rule, "api_groups", [input.resource.group])
	input.resource.resource in object.get(rule, "resources", [input.resource.resource])
	input.name in object.get(rule, "names", [input.name])
	_controller_is(rule) # after the cheap checks: status-writers names some 20 users
	_changes_within(rule)
	_owner_ok(rule)
	_terminating_ok(rule)
}

# Only the rules that can name this user are read: the data document indexes their positions
# by username (and lists the kubelets' rules), rendered from the same list by webhook/config.py.
# A person's request reads no rule at all. Each rule still checks the identity itself
# (_controller_is), so an index that disagreed with the rules could only deny, never allow.
_candidate_allowances contains i if {
	some i in cfg.system_allowance_index.usernames[username]
}

_candidate_allowances contains i if {
	_is_kubelet
	some i in cfg.system_allowance_index.nodes
}

_is_kubelet if {
	startswith(username, "system:node:")
	"system:nodes" in groups
}

_controller_is(rule) if username in object.get(rule, "usernames", [])

# The kubelets: one user per node, which the NodeRestriction plugin limits to its own pods.
_controller_is(rule) if {
	rule.nodes
	_is_kubelet
}

# On UPDATE, every changed field must be one the rule allows. metadata fields (labels,
# annotations, owner references, finalizers) count only when the rule names them, so a
# status write can never carry a label removal, a new owner or a rewritten source path;
# labels only under owner_labels (never the managed label), annotations only by the keys in
# annotations_within.
_changes_within(_) if input.operation != "UPDATE"

_changes_within(rule) if {
	input.operation == "UPDATE"
	every f in input.changedFields {
		_field_allowed(rule, f)
	}
	_labels_within(rule)
	every k in _changed_annotation_keys {
		k in object.get(rule, "annotations_within", [])
	}
}

_changes := object.get(input, "metadataChanges", {})

_changed_label_keys := object.get(_changes, "labels", [])

_changed_annotation_keys := object.get(_changes, "annotations", [])

_field_allowed(rule, f) if {
	startswith(f, "metadata.")
	f != "metadata.labels"
	f in object.get(rule, "changed_fields_within", [])
}

_field_allowed(rule, "metadata.labels") if {
	rule.owner_labels
	"metadata.labels" in rule.changed_fields_within
}

# Labels never change under an allowance, but for controllers that copy their owner's labels
# (the endpoint controllers copy a Service's); even they never change the managed label, so
# what they write stays a managed object.
_labels_within(_) if count(_changed_label_keys) == 0

_labels_within(rule) if {
	rule.owner_labels
	not cfg.managed_label.key in _changed_label_keys
}

_field_allowed(rule, f) if {
	not startswith(f, "metadata.")
	not rule.changed_fields_within
}

_field_allowed(rule, f) if {
	not startswith(f, "metadata.")
	f in rule.changed_fields_within
}

# The object the request is about: the stored one for a DELETE.
_subject := input.oldObject if input.operation == "DELETE"

else := input.object

_owners := object.get(_subject, "ownerReferences", []) if is_object(_subject)

else := []

# A child: created by its owner's controller, so it carries a controller ownerReference of the
# owner's kind (owners of namespaced objects live in the same namespace).
_owner_ok(rule) if {
	_owner_kind_ok(rule)
	_has_owner_ok(rule)
}

_owner_kind_ok(rule) if not rule.owner_kinds

_owner_kind_ok(rule) if {
	some ref in _owners
	ref.controller == true
	ref.kind in rule.owner_kinds
}

_has_owner_ok(rule) if not rule.with_owner_reference

_has_owner_ok(rule) if {
	rule.with_owner_reference
	count(_owners) > 0
}

_terminating_ok(rule) if {
	_namespace_terminating_ok(rule)
	_object_terminating_ok(rule)
}

_namespace_terminating_ok(rule) if not rule.namespace_terminating

_namespace_terminating_ok(rule) if {
	rule.namespace_terminating
	input.namespaceTerminating == true
}

_object_terminating_ok(rule) if not rule.object_terminating

_object_terminating_ok(rule) if {
	rule.object_terminating
	input.oldObject.terminating == true
}

# -------------------------------------------------------------------------------- modes

mode := m if {
	m := cfg.modes.namespaces[input.namespace]
} else := cfg.modes.default

# ------------------------------------------------------------------------------ messages

# A subresource's kind (Scale, Eviction, TokenRequest) is not its parent's; the parent's
# resource (deployments, pods) reads better.
_kind_name := input.resource.resource if input.subResource != ""

else := input.kind.kind

_object_ref := sprintf("%s %s/%s", [_kind_name, input.namespace, input.name]) if {
	input.namespace != ""
	not _is_namespace
} else := sprintf("%s %s", [_kind_name, input.name])

# object is null on DELETE and oldObject on CREATE; the newer object's annotation wins, even
# an empty one. (One else chain of plain lookups: object.union of both annotation maps cost
# about 70 allocations per denial.)
source_path := p if {
	p := input.object.annotations[cfg.repository.path_annotation]
	p != ""
} else := cfg.repository.default_path if {
	input.object.annotations[cfg.repository.path_annotation] == ""
} else := p if {
	p := input.oldObject.annotations[cfg.repository.path_annotation]
	p != ""
} else := cfg.repository.default_path

_verb := lower(input.operation) if input.subResource == ""

else := sprintf("%s the %s of", [lower(input.operation), input.subResource])

_why := "is managed by GitOps" if managed

else := "is the GitOps identity's service account" if gitops_token_request

else := "would run as the GitOps identity" if gitops_pod_create

else := "is in a protected namespace" if protected_create

else := "is a protected namespace" if protected_namespace_change

else := "holds objects managed by GitOps" if namespace_holding_managed

else := "defines custom resources managed by GitOps" if crd_holding_managed

else := "is a GitOps-guarded cluster-scoped kind"

violation_message := sprintf(
	"%s %s: %s may not %s it directly. Make the change in Git instead: edit %s on branch %s of %s and open a pull request; GitWarden applies it once it is merged and signed.",
	[_object_ref, _why, username, _verb, source_path, cfg.repository.branch, cfg.repository.url],
)

# ------------------------------------------------------------------------------ decision

# The one entry point the webhook queries. Exactly one branch applies, in this order.
decision := {"allowed": true, "reason": "out-of-scope", "mode": mode} if {
	not in_scope
} else := {"allowed": true, "reason": "gitops-identity", "mode": mode} if {
	gitops_identity
} else := {"allowed": true, "reason": "dry-run", "mode": mode} if {
	cfg.allow_dry_run
	input.dryRun == true
} else := {"allowed": true, "reason": sprintf("system:%s", [min(system_allowance)]), "mode": mode} if {
	count(system_allowance) > 0
} else := {"allowed": true, "reason": "exempt", "mode": mode} if {
	exempt
} else := {
	"allowed": true,
	"reason": "break-glass",
	"mode": mode,
	"warnings": [sprintf(
		"break-glass: %s changed %s outside Git; this use is audited and GitWarden will revert it at the next drift repair",
		[username, _object_ref],
	)],
	"audit": {"break-glass": sprintf("%s %s %s", [username, lower(input.operation), _object_ref])},
} if {
	break_glass
} else := _violation

_violation := {"allowed": false, "reason": "not-gitops", "mode": "enforce", "message": violation_message} if {
	mode == "enforce"
} else := {
	"allowed": true,
	"reason": "not-gitops",
	"mode": "warn",
	"warnings": [violation_message],
} if {
	mode == "warn"
} else := {
	"allowed": true,
	"reason": "not-gitops",
	"mode": "audit",
	"audit": {"violation": violation_message},
} if {
	mode == "audit"
} else := {"allowed": false, "reason": "bad-mode", "mode": mode, "message": sprintf("gitwarden: unknown mode %q in configuration; denying", [mode])}
