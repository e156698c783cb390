{{/*
The ValidatingWebhookConfiguration's CEL and rules, computed from the admission document as
webhook/registration.py computes them. Helm cannot run Python, so this is a second rendering of
the same document; tests/chart/test_registration.py renders every ci/ value set and asserts
the result equals webhook.registration.validating_webhook_configuration() for the ConfigMap's
config, so the two cannot drift unnoticed. Keep both in step.
*/}}
{{/* A CEL string literal spelled as Python's json.dumps spells it (Go escapes <, > and &;
values.schema.json keeps these strings ASCII), so the audit compares equal text. */}}
{{- define "gitwarden.cel.str" -}}
{{- toJson . | replace "\\u003c" "<" | replace "\\u003e" ">" | replace "\\u0026" "&" -}}
{{- end -}}

{{- define "gitwarden.cel.list" -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "gitwarden.cel.str" $v }}{{ end }}]
{{- end -}}

{{- define "gitwarden.cel.sub" -}}(has(request.subResource) ? request.subResource : ""){{- end -}}
{{- define "gitwarden.cel.name" -}}(has(request.name) ? request.name : ""){{- end -}}
{{- define "gitwarden.cel.groups" -}}(has(request.userInfo.groups) ? request.userInfo.groups : []){{- end -}}
{{- define "gitwarden.cel.node" -}}
(request.userInfo.username.startsWith("system:node:") && "system:nodes" in {{ include "gitwarden.cel.groups" . }})
{{- end -}}
{{- define "gitwarden.cel.metadataUnchanged" -}}
object != null && oldObject != null && ["labels", "annotations", "ownerReferences", "finalizers"].all(f, (f in object.metadata) == (f in oldObject.metadata) && (!(f in object.metadata) || object.metadata[f] == oldObject.metadata[f]))
{{- end -}}

{{/* The GitOps identity; call with the admission document. */}}
{{- define "gitwarden.cel.gitops" -}}
{{- $users := prepend (.gitops.extra_usernames | default list) (printf "system:serviceaccount:%s:%s" .namespace .gitops.service_account) -}}
{{- $out := printf "request.userInfo.username in %s" (include "gitwarden.cel.list" $users) -}}
{{- if .gitops.require_pod_bound_token -}}
{{- $key := toJson "authentication.kubernetes.io/pod-name" -}}
{{- $pod := printf "request.userInfo.extra[%s]" $key -}}
{{- $bound := printf "has(request.userInfo.extra) && %s in request.userInfo.extra" $key -}}
{{- if .gitops.pod_name_prefixes -}}
{{- $ps := list -}}
{{- range .gitops.pod_name_prefixes }}{{ $ps = append $ps (printf "p.startsWith(%s)" (include "gitwarden.cel.str" .)) }}{{ end -}}
{{- $bound = printf "%s && %s.size() == 1 && %s.exists(p, %s)" $bound $pod $pod (join " || " $ps) -}}
{{- else -}}
{{- $bound = printf "%s && %s.size() == 1" $bound $pod -}}
{{- end -}}
{{- $out = printf "%s && %s" $out $bound -}}
{{- end -}}
{{- $out -}}
{{- end -}}

{{/* Whether identity and request names alone decide an allowance ("true" or ""). */}}
{{- define "gitwarden.cel.decided" -}}
{{- $needsLookup := or .changed_fields_within .owner_kinds .with_owner_reference .namespace_terminating .object_terminating -}}
{{- $statusOnly := and (eq (toJson (.subresources | default list)) "[\"status\"]") (eq (toJson (.changed_fields_within | default list)) "[\"status\"]") (not (or .owner_kinds .with_owner_reference .namespace_terminating .object_terminating)) -}}
{{- if or (not $needsLookup) $statusOnly }}true{{ end -}}
{{- end -}}

{{/* One allowance in CEL; call with the allowance. */}}
{{- define "gitwarden.cel.allowance" -}}
{{- $who := list -}}
{{- if .usernames }}{{ $who = append $who (printf "request.userInfo.username in %s" (include "gitwarden.cel.list" .usernames)) }}{{ end -}}
{{- if .nodes }}{{ $who = append $who (include "gitwarden.cel.node" .) }}{{ end -}}
{{- $parts := list (printf "(%s)" (join " || " $who)) -}}
{{- if .operations }}{{ $parts = append $parts (printf "request.operation in %s" (include "gitwarden.cel.list" .operations)) }}{{ end -}}
{{- if .subresources }}{{ $parts = append $parts (printf "%s in %s" (include "gitwarden.cel.sub" .) (include "gitwarden.cel.list" .subresources)) }}{{ end -}}
{{- if .api_groups }}{{ $parts = append $parts (printf "request.resource.group in %s" (include "gitwarden.cel.list" .api_groups)) }}{{ end -}}
{{- if .resources }}{{ $parts = append $parts (printf "request.resource.resource in %s" (include "gitwarden.cel.list" .resources)) }}{{ end -}}
{{- if .names }}{{ $parts = append $parts (printf "%s in %s" (include "gitwarden.cel.name" .) (include "gitwarden.cel.list" .names)) }}{{ end -}}
{{- $ops := .operations | default list -}}
{{- if or (not $ops) (has "UPDATE" $ops) -}}
{{- if eq (toJson $ops) "[\"UPDATE\"]" -}}
{{- $parts = append $parts (include "gitwarden.cel.metadataUnchanged" .) -}}
{{- else -}}
{{- $parts = append $parts (printf "(request.operation != \"UPDATE\" || (%s))" (include "gitwarden.cel.metadataUnchanged" .)) -}}
{{- end -}}
{{- end -}}
{{- join " && " $parts -}}
{{- end -}}

{{/* The matchConditions as a JSON array; call with the admission document. */}}
{{- define "gitwarden.cel.matchConditions" -}}
{{- $c := list -}}
{{- if not .gitops.verify_pod_live -}}
{{- $c = append $c (dict "name" "not-gitops-identity" "expression" (printf "!(%s)" (include "gitwarden.cel.gitops" .))) -}}
{{- end -}}
{{- $c = append $c (dict "name" "not-lease-or-event" "expression" "!((request.resource.group == \"coordination.k8s.io\" && request.resource.resource == \"leases\") || (request.resource.group in [\"\", \"events.k8s.io\"] && request.resource.resource == \"events\"))") -}}
{{- $decided := list -}}
{{- range .system_allowances -}}
{{- if include "gitwarden.cel.decided" . }}{{ $decided = append $decided (printf "(%s)" (include "gitwarden.cel.allowance" .)) }}{{ end -}}
{{- end -}}
{{- if $decided -}}
{{- $c = append $c (dict "name" "not-system-allowance" "expression" (printf "!(%s)" (join " || " $decided))) -}}
{{- end -}}
{{- if .exemptions.usernames -}}
{{- $c = append $c (dict "name" "not-exempt-user" "expression" (printf "!(request.userInfo.username in %s)" (include "gitwarden.cel.list" .exemptions.usernames))) -}}
{{- end -}}
{{- if .exemptions.groups -}}
{{- $c = append $c (dict "name" "not-exempt-group" "expression" (printf "!(%s.exists(g, g in %s))" (include "gitwarden.cel.groups" .) (include "gitwarden.cel.list" .exemptions.groups))) -}}
{{- end -}}
{{- toJson $c -}}
{{- end -}}

{{/* {group: [resource...]} of a list of {group, resource}, as JSON (resources in order). */}}
{{- define "gitwarden.byGroup" -}}
{{- $g := dict -}}
{{- range . -}}
{{- $_ := set $g .group (append (get $g .group | default list) .resource) -}}
{{- end -}}
{{- toJson $g -}}
{{- end -}}

{{/* (group, resource) pairs the webhook reads parents of: the parent rules' kinds. */}}
{{- define "gitwarden.parentRules" -}}
{{- $rules := list -}}
{{- range .parent_subresources }}{{ $rules = append $rules . }}{{ end -}}
{{- range .scale_resources }}{{ $rules = append $rules (dict "group" .group "resource" .resource "subresource" "scale" "operations" (list "UPDATE")) }}{{ end -}}
{{- toJson $rules -}}
{{- end -}}

{{/* The webhook's ClusterRole rules (registration.webhook_rbac_rules), as JSON. */}}
{{- define "gitwarden.webhookRules" -}}
{{- $gets := list -}}
{{- range (include "gitwarden.parentRules" . | fromJsonArray) }}{{ $gets = append $gets (dict "group" .group "resource" .resource) }}{{ end -}}
{{- $gets = append $gets (dict "group" "" "resource" "namespaces") -}}
{{- $lists := list -}}
{{- range .namespace_content_kinds }}{{ $lists = append $lists (dict "group" .group "resource" .resource) }}{{ end -}}
{{- range .guarded_crd_groups }}{{ $lists = append $lists (dict "group" . "resource" "*") }}{{ end -}}
{{- $rules := list -}}
{{- range $verb, $pairs := dict "get" $gets "list" $lists -}}
{{- $grouped := include "gitwarden.byGroup" (uniq $pairs) | fromJson -}}
{{- range $group := keys $grouped | sortAlpha -}}
{{- $rules = append $rules (dict "apiGroups" (list $group) "resources" (get $grouped $group | sortAlpha) "verbs" (list $verb)) -}}
{{- end -}}
{{- end -}}
{{- toJson $rules -}}
{{- end -}}

{{/* A clientConfig: (dict "client" <service and caBundle> "path" "/validate"), as JSON. */}}
{{- define "gitwarden.clientConfig" -}}
{{- $c := deepCopy .client -}}
{{- $_ := set $c.service "path" .path -}}
{{- toJson $c -}}
{{- end -}}
