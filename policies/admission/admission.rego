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

cfg := data.gitwarden.admission

# ---------------------------------------------------------------------------------- scope

# The object, or the stored object it replaces or deletes, carries the managed label.
managed if _has_managed_label(input.object)

managed if _has_managed_label(input.oldObject)

_has_managed_label(obj) if obj.labels[cfg.managed_label.key] == cfg.managed_label.value

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

_protected_namespace_object if _has_protected_label(input.oldObject)

_protected_namespace_object if _has_protected_label(input.object)

_has_protected_label(obj) if {
	label := cfg.protected_namespace_label
	obj.labels[label.key] == label.value
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

in_scope if crd_holding_managed

in_scope if managed

in_scope if gitops_token_request

in_scope if gitops_pod_create

in_scope if protected_create

in_scope if guarded_cluster_kind

in_scope if protected_namespace_change

in_scope if namespace_holding_managed

# ------------------------------------------------------------------------------ identities

_user := object.get(input, "userInfo", {})

username := object.get(_user, "username", "")

groups := object.get(_user, "groups", [])

pod_name := object.get(_user, "podName", "")

# The webhook found the token's pod alive with the token's uid (only asked when configured).
pod_live := object.get(_user, "podLive", false)

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

_identity_matches(rule) if username in object.get(rule, "usernames", [])

_identity_matches(rule) if {
	some g in groups
	g in object.get(rule, "groups", [])
}

exempt if _identity_matches(cfg.exemptions)

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
	some rule in cfg.system_allowances
	_controller_is(rule)
	_narrowed(rule, "operations", input.operation)
	_narrowed(rule, "subresources", input.subResource)
	_narrowed(rule, "api_groups", input.resource.group)
	_narrowed(rule, "resources", input.resource.resource)
	_narrowed(rule, "names", input.name)
	_changes_within(rule)
	_owner_ok(rule)
	_terminating_ok(rule)
}

_controller_is(rule) if username in object.get(rule, "usernames", [])

# The kubelets: one user per node, which the NodeRestriction plugin limits to its own pods.
_controller_is(rule) if {
	rule.nodes
	startswith(username, "system:node:")
	"system:nodes" in groups
}

_narrowed(rule, field, _) if not rule[field]

_narrowed(rule, field, value) if value in rule[field]

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

# object is null on DELETE and oldObject on CREATE; the newer object's annotations win.
_annotations_of(o) := object.get(o, "annotations", {}) if is_object(o)

else := {}

_annotations := object.union(_annotations_of(object.get(input, "oldObject", null)), _annotations_of(object.get(input, "object", null)))

source_path := p if {
	p := _annotations[cfg.repository.path_annotation]
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
