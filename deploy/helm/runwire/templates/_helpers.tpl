{{/* Names and labels. */}}
{{- define "runwire.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runwire.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "runwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runwire.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "runwire.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "runwire.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "runwire.secretName" -}}
{{- .Values.existingSecret | default (include "runwire.fullname" .) -}}
{{- end -}}

{{- define "runwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "runwire.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
The server's own refusals, said at render time: a listener off loopback needs
bearer tokens or mutual TLS, and tokens travel in clear text only behind a
mesh that terminates mTLS.
*/}}
{{- define "runwire.checkAuth" -}}
{{- $mutual := and .Values.tls.enabled .Values.tls.clientCA -}}
{{- if and (not .Values.existingSecret) (not .Values.auth.tokens) (not $mutual) -}}
{{- fail "runwire refuses a listener off loopback without auth.tokens or mutual TLS (tls.enabled and tls.clientCA)" -}}
{{- end -}}
{{- if and (or .Values.auth.tokens .Values.existingSecret) (not .Values.tls.enabled) (not .Values.mesh.trustedNetwork) (not $mutual) -}}
{{- fail "bearer tokens need TLS: set tls.enabled, or mesh.trustedNetwork when a sidecar terminates mTLS" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- end -}}

{{/* The environment both the server and the migrate Job read. */}}
{{- define "runwire.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "runwire.secretName" . }}
      key: database-url
{{- end -}}

{{/* The container's security context: non-root, read-only, no capabilities. */}}
{{- define "runwire.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
