package system.authz_test

import data.system.authz

test_queries_and_reads_are_allowed if {
	authz.allow with input as {"method": "POST", "path": ["v1", "data", "admission", "decision"]}
	authz.allow with input as {"method": "GET", "path": ["v1", "config"]}
	authz.allow with input as {"method": "GET", "path": ["health"]}
}

test_every_write_is_refused if {
	not authz.allow with input as {"method": "PUT", "path": ["v1", "data", "gitwarden", "admission"]}
	not authz.allow with input as {"method": "PATCH", "path": ["v1", "data"]}
	not authz.allow with input as {"method": "DELETE", "path": ["v1", "data", "gitwarden"]}
	not authz.allow with input as {"method": "PUT", "path": ["v1", "policies", "admission.rego"]}
	not authz.allow with input as {"method": "DELETE", "path": ["v1", "policies", "admission.rego"]}
}

test_an_unknown_method_is_refused if {
	not authz.allow with input as {"method": "OPTIONS", "path": ["v1", "data"]}
	not authz.allow with input as {"method": "post", "path": ["v1", "data"]}
	not authz.allow with input as {}
}
