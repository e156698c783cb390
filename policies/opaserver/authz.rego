# METADATA
# title: The OPA sidecar's own REST API, queries only
# description: |
#   Loaded with `opa run --authorization=basic` (the chart's OPA sidecar, and every OPA the test
#   harness starts unless a test asks for a writable one). OPA asks it about every call to its
#   API. Reading and querying are allowed: GET of documents, health and configuration, and
#   POST of a query with an input (the webhook's decision). Writes (PUT, PATCH and DELETE of
#   data or policies) are refused, so the policy and data a server loaded at start are the ones
#   it decides with until its process ends. The webhook's decision cache relies on that: it
#   checks the refusal on every new connection (webhook/policy.py) and caches nothing from a
#   server that accepts a write.
package system.authz

default allow := false

allow if input.method in {"GET", "POST"}
