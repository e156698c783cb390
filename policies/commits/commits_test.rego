package commits_test

import data.commits

settings := {
	"policy_admins": ["alice@example.com", "bob@example.com"],
	"protected_paths": ["policies/"],
	"require_two_signers": false,
}

two_signers := object.union(settings, {"require_two_signers": true})

golden := data.testdata.commits

test_admin_may_change_policies if {
	count(commits.deny) == 0 with input as golden.one_admin with data.commits.settings as settings
}

test_non_admin_change_to_policies_is_denied if {
	denials := commits.deny with input as golden.non_admin with data.commits.settings as settings
	denials == {{
		"sha": "4444444444444444444444444444444444444444",
		"reason": `changes protected paths ["policies/admission/rules.rego"] but signer carol@example.com is not a policy admin`,
	}}
}

test_changes_outside_protected_paths_need_no_admin if {
	denials := commits.deny with input as golden.non_admin with data.commits.settings as settings
	every d in denials {
		d.sha != "5555555555555555555555555555555555555555"
	}
}

test_two_signer_rule_denies_a_lone_admin_even_if_they_sign_again if {
	denials := commits.deny with input as golden.one_admin with data.commits.settings as two_signers
	some d in denials
	d.sha == "3333333333333333333333333333333333333333"
	contains(d.reason, "second, distinct policy-admin signature")
}

test_two_signer_rule_accepts_a_merge_signed_by_a_second_admin if {
	count(commits.deny) == 0 with input as golden.merge_by_second_admin
		with data.commits.settings as two_signers
}

test_second_signer_with_the_same_key_does_not_count if {
	same_key := {"kind": "ssh", "principals": ["bob@example.com"], "fingerprint": "SHA256:alice"}
	record := object.union(golden.one_admin.commits[0], {"later_signers": [same_key]})
	count(commits.deny) == 1 with input as {"commits": [record]}
		with data.commits.settings as two_signers
}

test_later_non_admin_signer_does_not_count if {
	outsider := {"kind": "ssh", "principals": ["carol@example.com"], "fingerprint": "SHA256:carol"}
	record := object.union(golden.one_admin.commits[0], {"later_signers": [outsider]})
	count(commits.deny) == 1 with input as {"commits": [record]}
		with data.commits.settings as two_signers
}

test_defaults_protect_policies_and_name_no_admin if {
	denials := commits.deny with input as golden.one_admin
	count(denials) == 1
}

test_protected_paths_come_from_data if {
	only_apps := object.union(settings, {"protected_paths": ["apps/"], "policy_admins": []})
	denials := commits.deny with input as golden.one_admin with data.commits.settings as only_apps
	some d in denials
	contains(d.reason, "apps/web.yaml")
	not contains(d.reason, "policies/commits")
}

test_signer_without_principals_is_named_by_fingerprint if {
	anonymous := {"kind": "openpgp", "principals": [], "fingerprint": "f1f1"}
	record := object.union(golden.non_admin.commits[0], {"signer": anonymous})
	some d in commits.deny with input as {"commits": [record]} with data.commits.settings as settings
	contains(d.reason, "signer f1f1 is not")
}
