{{/* Names, labels and the image. */}}
{{- define "gitwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gitwarden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "gitwarden.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "gitwarden.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gitwarden.labels" -}}
app.kubernetes.io/name: {{ include "gitwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "webhook"). */}}
{{- define "gitwarden.selector" -}}
app.kubernetes.io/name: {{ include "gitwarden.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gitwarden.componentLabels" -}}
{{ include "gitwarden.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gitwarden.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "gitwarden.webhookName" -}}{{ include "gitwarden.fullname" . }}-webhook{{- end -}}
{{- define "gitwarden.reconcilerName" -}}{{ include "gitwarden.fullname" . }}-reconciler{{- end -}}
{{- define "gitwarden.tlsSecret" -}}{{ include "gitwarden.fullname" . }}-webhook-tls{{- end -}}
{{- define "gitwarden.reconcilerSA" -}}
{{- default (include "gitwarden.reconcilerName" .) .Values.reconciler.serviceAccount.name -}}
{{- end -}}

{{/* The admission document both the webhook and the registration read (one source). */}}
{{- define "gitwarden.admission" -}}
{{- $doc := deepCopy .Values.webhook.admission -}}
{{- $_ := set $doc "namespace" .Release.Namespace -}}
{{- $_ = set $doc.gitops "service_account" (include "gitwarden.reconcilerSA" .) -}}
{{- $_ = set $doc.repository "url" .Values.reconciler.source.url -}}
{{- $_ = set $doc.repository "branch" .Values.reconciler.source.branch -}}
{{- toYaml $doc -}}
{{- end -}}

{{/* Shared pod and container security settings. */}}
{{- define "gitwarden.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gitwarden.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
