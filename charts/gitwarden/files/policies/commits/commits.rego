# METADATA
# title: Commit policy
# description: >-
#   Which verified signers may change which paths. The reconciler and `gitwarden verify` send
#   one record per commit whose signature verified: the commit, its signer (principals and
#   fingerprint), the paths it changed, and the signers of later commits in the verified range
#   that contain it. All configuration comes from data.commits.settings.
package commits

# Settings, each with a fail-safe default: policies/ is protected and nobody is an admin.
default protected_paths := ["policies/"]

protected_paths := data.commits.settings.protected_paths

default policy_admins := []

policy_admins := data.commits.settings.policy_admins

default require_two_signers := false

require_two_signers := data.commits.settings.require_two_signers

# deny holds one {"sha", "reason"} object per refused commit and rule.
deny contains {"sha": c.commit.sha, "reason": reason} if {
	some c in input.commits
	paths := protected_changes(c)
	count(paths) > 0
	not is_admin(c.signer)
	reason := sprintf(
		"changes protected paths %v but signer %v is not a policy admin",
		[sort(paths), signer_name(c.signer)],
	)
}

deny contains {"sha": c.commit.sha, "reason": reason} if {
	require_two_signers
	some c in input.commits
	paths := protected_changes(c)
	count(paths) > 0
	is_admin(c.signer)
	not two_distinct_admins(c)
	reason := sprintf(
		"changes protected paths %v and needs a second, distinct policy-admin signature in the range (for example a signed merge by another admin)",
		[sort(paths)],
	)
}

protected_changes(c) := {path |
	some path in c.changed_paths
	some prefix in protected_paths
	startswith(path, prefix)
}

is_admin(signer) if {
	some principal in signer.principals
	principal in policy_admins
}

# Two admins are distinct when they differ in both admin principal and key, so one key listed
# under two principals, or one person with two keys, never counts twice.
two_distinct_admins(c) if {
	signers := [s | some s in array.concat([c.signer], c.later_signers); is_admin(s)]
	principals := {p | some s in signers; some p in s.principals; p in policy_admins}
	keys := {s.fingerprint | some s in signers}
	count(principals) >= 2
	count(keys) >= 2
}

signer_name(signer) := concat(",", signer.principals) if {
	count(signer.principals) > 0
} else := signer.fingerprint
