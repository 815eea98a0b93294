{{/* The release's full name, at most 63 characters. */}}
{{- define "centaur.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels that select the server's pods (the sandboxes' gateways admit management calls from these). */}}
{{- define "centaur.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "centaur.labels" -}}
{{ include "centaur.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "centaur.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}{{ .Values.serviceAccount.name }}{{- else -}}{{ include "centaur.fullname" . }}{{- end -}}
{{- end -}}

{{- define "centaur.sandboxNamespace" -}}
{{- .Values.sandbox.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* The server's config file. */}}
{{- define "centaur.config" -}}
{{- range $key := list "listen" "data_dir" "database_url" "sandbox" -}}
{{- if hasKey $.Values.config $key -}}
{{- fail (printf "config.%s is set by the chart (port, persistence, database.existingSecret and sandbox.* say what it is)" $key) -}}
{{- end -}}
{{- end -}}
{{- $own := dict "listen" (printf "0.0.0.0:%d" (int .Values.port)) "data_dir" "/var/lib/centaur" -}}
{{- $k := dict "namespace" (include "centaur.sandboxNamespace" .) "image" .Values.sandbox.image "gateway_image" .Values.sandbox.gatewayImage "uid" (int .Values.sandbox.uid) "cpu" .Values.sandbox.cpu "memory" .Values.sandbox.memory "ephemeral_storage" .Values.sandbox.ephemeralStorage "gateway_cpu" .Values.sandbox.gatewayCpu "gateway_memory" .Values.sandbox.gatewayMemory "control_plane_labels" (include "centaur.selectorLabels" . | fromYaml) "control_plane_namespace" .Release.Namespace "api" (printf "%s.%s.svc:%d" (include "centaur.fullname" .) .Release.Namespace (int .Values.port)) -}}
{{- if .Values.sandbox.runtimeClassName -}}{{- $_ := set $k "runtime_class" .Values.sandbox.runtimeClassName -}}{{- end -}}
{{- if .Values.sandbox.workspaceStorage -}}{{- $_ := set $k "workspace_storage" .Values.sandbox.workspaceStorage -}}{{- end -}}
{{- if .Values.sandbox.storageClassName -}}{{- $_ := set $k "storage_class" .Values.sandbox.storageClassName -}}{{- end -}}
{{- $sandbox := dict "backend" "kubernetes" "kubernetes" $k -}}
{{- if gt (int .Values.sandbox.warmPool) 0 -}}
{{- if .Values.sandbox.workspaceStorage -}}
{{- fail "sandbox.warmPool needs an empty sandbox.workspaceStorage: a warm pod is made before its thread is known, so it cannot mount the thread's workspace claim" -}}
{{- end -}}
{{- $_ := set $sandbox "warm_pool" (int .Values.sandbox.warmPool) -}}
{{- end -}}
{{- $_ := set $own "sandbox" $sandbox -}}
{{- toYaml (merge $own (deepCopy .Values.config)) -}}
{{- end -}}
