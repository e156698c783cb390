# Tests for data.admission.decision. The golden cases in policies/testdata/admission/golden.json
# are shared with the Python tests (tests/webhook), so Rego and the webhook cannot drift apart.
package admission_test

import data.admission

golden := data.testdata.admission

_decide(inp) := d if {
	d := admission.decision with input as inp with data.gitwarden.admission as golden.config
}

_decide_with(inp, config) := d if {
	d := admission.decision with input as inp with data.gitwarden.admission as config
}

# A case's expectation holds when allowed and reason match and the optional mode,
# warned and audited expectations hold too.
_matches(d, expect) if {
	d.allowed == expect.allowed
	d.reason == expect.reason
	object.get(expect, "mode", d.mode) == d.mode
	warned := count(object.get(d, "warnings", [])) > 0
	audited := count(object.get(d, "audit", {})) > 0
	object.get(expect, "warned", false) == warned
	object.get(expect, "audited", false) == audited
}

mismatches contains name if {
	some name, c in golden.cases
	not _matches(_decide(c.input), c.expect)
}

test_golden_cases_all_match if {
	count(golden.cases) >= 40
	count(mismatches) == 0
}

test_golden_cases_report_mismatches if {
	# The check above is a single verdict; this one makes a failure name the cases.
	mismatches == set()
}

_update := golden.cases.user_update_deployment_denied.input

test_denial_names_object_user_repository_and_path if {
	d := _decide(_update)
	not d.allowed
	contains(d.message, "Deployment team-a/web is managed by GitOps")
	contains(d.message, "alice may not update it directly")
	contains(d.message, "apps/web/deployment.yaml")
	contains(d.message, "branch main of https://git.example.com/platform/cluster.git")
}

test_denial_falls_back_to_default_path if {
	inp := json.patch(_update, [
		{"op": "replace", "path": "/object/annotations", "value": {}},
		{"op": "replace", "path": "/oldObject/annotations", "value": {}},
	])
	contains(_decide(inp).message, "edit clusters/prod/ on branch main")
}

test_denial_of_subresource_names_it if {
	d := _decide(golden.cases.scale_by_human_denied.input)
	contains(d.message, "may not update the scale of it directly")
}

test_denial_of_cluster_scoped_kind_has_no_namespace if {
	d := _decide(golden.cases.cluster_role_update_denied.input)
	startswith(d.message, "ClusterRole edit-all is a GitOps-guarded cluster-scoped kind")
}

test_denial_in_protected_namespace_says_so if {
	d := _decide(golden.cases.protected_namespace_create_denied.input)
	contains(d.message, "is in a protected namespace")
}

_pod_bound_config(prefixes) := json.patch(golden.config, [
	{"op": "replace", "path": "/gitops/require_pod_bound_token", "value": true},
	{"op": "replace", "path": "/gitops/pod_name_prefixes", "value": prefixes},
])

_gitops_update := golden.cases.gitops_update_deployment.input

test_pod_bound_required_rejects_plain_token if {
	d := _decide_with(_gitops_update, _pod_bound_config(["gitwarden-reconciler-"]))
	not d.allowed
	d.reason == "not-gitops"
}

test_pod_bound_required_accepts_reconciler_pod if {
	inp := json.patch(_gitops_update, [{"op": "add", "path": "/userInfo/podName", "value": "gitwarden-reconciler-7d9f-x2"}])
	d := _decide_with(inp, _pod_bound_config(["gitwarden-reconciler-"]))
	d.allowed
	d.reason == "gitops-identity"
}

test_pod_bound_required_rejects_other_pod if {
	inp := json.patch(_gitops_update, [{"op": "add", "path": "/userInfo/podName", "value": "debug-shell"}])
	not _decide_with(inp, _pod_bound_config(["gitwarden-reconciler-"])).allowed
}

test_pod_bound_required_without_prefixes_accepts_any_pod if {
	inp := json.patch(_gitops_update, [{"op": "add", "path": "/userInfo/podName", "value": "anything"}])
	_decide_with(inp, _pod_bound_config([])).allowed
}

test_dry_run_allowed_when_configured if {
	inp := json.patch(_update, [{"op": "replace", "path": "/dryRun", "value": true}])
	config := json.patch(golden.config, [{"op": "replace", "path": "/allow_dry_run", "value": true}])
	d := _decide_with(inp, config)
	d.allowed
	d.reason == "dry-run"
}

test_missing_user_info_is_denied if {
	inp := json.remove(_update, ["userInfo"])
	d := _decide(inp)
	not d.allowed
	contains(d.message, " may not update it directly")
}

test_break_glass_warning_and_audit if {
	d := _decide(golden.cases.break_glass_allowed_with_warning.input)
	d.allowed
	startswith(d.warnings[0], "break-glass: oncall changed Deployment team-a/web outside Git")
	d.audit["break-glass"] == "oncall update Deployment team-a/web"
}

test_audit_mode_annotation_carries_the_message if {
	d := _decide(golden.cases.audit_mode_allows_with_annotation.input)
	contains(d.audit.violation, "Deployment team-audit/web is managed by GitOps")
}

test_global_mode_applies_without_namespace_override if {
	config := json.patch(golden.config, [{"op": "replace", "path": "/modes/default", "value": "warn"}])
	d := _decide_with(_update, config)
	d.allowed
	d.mode == "warn"
	contains(d.warnings[0], "Make the change in Git")
}

test_changes_outside_allowed_fields_deny_gc if {
	not _decide(golden.cases.gc_spec_change_denied.input).allowed
}

test_system_allowance_not_granted_to_other_identities if {
	inp := json.patch(golden.cases.gc_delete_allowed.input, [{"op": "replace", "path": "/userInfo", "value": {"username": "mallory", "groups": ["system:authenticated"]}}])
	not _decide(inp).allowed
}

_live_config := json.patch(_pod_bound_config(["gitwarden-reconciler-"]), [{"op": "replace", "path": "/gitops/verify_pod_live", "value": true}])

test_verified_pod_binding_needs_a_live_pod if {
	inp := json.patch(_gitops_update, [{"op": "add", "path": "/userInfo/podName", "value": "gitwarden-reconciler-0"}])
	not _decide_with(inp, _live_config).allowed
	live := json.patch(inp, [{"op": "add", "path": "/userInfo/podLive", "value": true}])
	_decide_with(live, _live_config).allowed
}

test_pod_named_like_the_reconciler_is_guarded_with_pod_bound_tokens if {
	inp := json.patch(golden.cases.other_pod_in_gitops_namespace_out_of_scope.input, [{"op": "replace", "path": "/name", "value": "gitwarden-reconciler-evil"}])
	_decide(inp).allowed
	d := _decide_with(inp, _pod_bound_config(["gitwarden-reconciler-"]))
	not d.allowed
	contains(d.message, "would run as the GitOps identity")
}

test_gitops_token_denial_says_why if {
	d := _decide(golden.cases.gitops_token_by_admin_denied.input)
	contains(d.message, "serviceaccounts gitwarden/reconciler is the GitOps identity's service account")
}

test_crd_delete_is_guarded_only_while_it_has_managed_instances if {
	config := json.patch(golden.config, [{"op": "replace", "path": "/cluster_scoped_kinds", "value": []}])
	inp := golden.cases.crd_with_managed_instances_delete_denied.input
	d := _decide_with(inp, config)
	not d.allowed
	contains(d.message, "CustomResourceDefinition widgets.example.com defines custom resources managed by GitOps")
	free := json.patch(inp, [{"op": "replace", "path": "/crdHoldsManaged", "value": false}])
	_decide_with(free, config).allowed
}

test_namespaces_can_be_a_guarded_cluster_kind if {
	config := json.patch(golden.config, [{"op": "add", "path": "/cluster_scoped_kinds/-", "value": {"group": "", "kind": "Namespace"}}])
	inp := golden.cases.protected_namespace_other_label_allowed.input
	_decide(inp).allowed
	d := _decide_with(inp, config)
	not d.allowed
	startswith(d.message, "Namespace prod is a GitOps-guarded cluster-scoped kind")
}

# The allowance index (data.gitwarden.admission.system_allowance_index) only narrows which
# rules are read. An index that offers every rule to every user of the golden cases, and to
# the kubelets, decides each golden case exactly as the rendered one does.
_every_allowance := numbers.range(0, count(golden.config.system_allowances) - 1)

_unindexed_config := json.patch(golden.config, [{"op": "replace", "path": "/system_allowance_index", "value": {
	"usernames": {u: _every_allowance | some c in golden.cases; u := c.input.userInfo.username},
	"nodes": _every_allowance,
}}])

test_the_allowance_index_changes_no_golden_decision if {
	every _, c in golden.cases {
		_decide(c.input) == _decide_with(c.input, _unindexed_config)
	}
}

test_an_index_naming_someone_for_every_rule_allows_them_nothing if {
	inp := json.patch(golden.cases.status_by_controller_allowed.input, [{"op": "replace", "path": "/userInfo", "value": {"username": "mallory", "groups": ["system:authenticated"]}}])
	d := _decide_with(inp, _unindexed_config)
	not d.allowed
	d.reason == "not-gitops"
}

test_a_controller_missing_from_the_index_is_denied if {
	_decide(golden.cases.status_by_controller_allowed.input).allowed
	empty := json.patch(golden.config, [{"op": "replace", "path": "/system_allowance_index", "value": {"usernames": {}, "nodes": []}}])
	not _decide_with(golden.cases.status_by_controller_allowed.input, empty).allowed
	not _decide_with(golden.cases.status_by_kubelet_allowed.input, empty).allowed
}

# Allowance checks written as inline comprehensions instead of `every` (tried for speed) let
# these through: a comprehension over a missing or scalar list is empty, `every` is false.
test_an_update_without_readable_changed_fields_is_allowed_nothing if {
	every name in ["gc_finalizer_removal_allowed", "scale_by_hpa_allowed", "status_by_kubelet_allowed"] {
		inp := golden.cases[name].input
		_decide(inp).allowed
		every fields in [0, "status", null, true] {
			not _decide(json.patch(inp, [{"op": "replace", "path": "/changedFields", "value": fields}])).allowed
		}
		not _decide(json.remove(inp, ["changedFields"])).allowed
	}
}

test_unreadable_changed_annotation_keys_allow_nothing if {
	inp := golden.cases.deployment_revision_annotation_allowed.input
	_decide(inp).allowed
	every keys in [0, "deployment.kubernetes.io/revision", null] {
		not _decide(json.patch(inp, [{"op": "replace", "path": "/metadataChanges/annotations", "value": keys}])).allowed
	}
}

# A rule's nodes admits kubelets and no one else, and a kubelet only through a rule that sets
# it, even when the index offers every rule to everyone.
test_nodes_admits_only_kubelets if {
	kubelet := {"username": "system:node:n1", "groups": ["system:nodes", "system:authenticated"]}
	gc := json.patch(golden.cases.gc_finalizer_removal_allowed.input, [{"op": "replace", "path": "/userInfo", "value": kubelet}])
	not _decide_with(gc, _unindexed_config).allowed
	status := golden.cases.status_by_kubelet_allowed.input
	_decide_with(status, _unindexed_config).allowed
	nobody := json.patch(status, [{"op": "replace", "path": "/userInfo", "value": {"username": "system:node:n1", "groups": ["system:authenticated"]}}])
	not _decide_with(nobody, _unindexed_config).allowed
}

test_owner_kinds_need_a_controller_owner_of_the_kind if {
	inp := golden.cases.gitops_pod_by_replicaset_controller_allowed.input
	_decide(inp).allowed
	not _decide(json.patch(inp, [{"op": "replace", "path": "/object/ownerReferences/0/controller", "value": false}])).allowed
	not _decide(json.patch(inp, [{"op": "replace", "path": "/object/ownerReferences", "value": []}])).allowed
}

# The newer object's source-path annotation wins, even when it is empty.
test_source_path_prefers_the_newer_object if {
	inp := json.patch(_update, [
		{"op": "replace", "path": "/object/annotations", "value": {"gitwarden.dev/source-path": ""}},
		{"op": "replace", "path": "/oldObject/annotations", "value": {"gitwarden.dev/source-path": "old/path.yaml"}},
	])
	contains(_decide(inp).message, "edit clusters/prod/ on branch main")
	older := json.patch(inp, [{"op": "replace", "path": "/object/annotations", "value": {}}])
	contains(_decide(older).message, "edit old/path.yaml on branch main")
}
