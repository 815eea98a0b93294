{{- define "gateway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gateway.labels" -}}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The policy with the chart's listeners and CA placed (they win over the values). */}}
{{- define "gateway.policy" -}}
{{- $placed := dict
  "dns" (dict "enabled" false)
  "proxy" (dict "tunnel_listen" (printf ":%d" (int .Values.ports.tunnel)) "http_listen" nil "https_listen" nil)
  "tls" (dict "ca_cert" "/etc/centaur/ca/ca.crt" "ca_key" "/etc/centaur/ca/ca.key")
  "metrics" (dict "listen" (printf ":%d" (int .Values.ports.metrics)))
  "audit" (dict "output" "stdout" "durability" .Values.audit.durability)
-}}
{{- if .Values.envFromSecret -}}
{{- $_ := set $placed "management" (dict "listen" (printf ":%d" (int .Values.ports.management)) "api_key_env" "IRON_MANAGEMENT_API_KEY") -}}
{{- end -}}
{{- toYaml (merge $placed (deepCopy .Values.policy)) -}}
{{- end -}}
