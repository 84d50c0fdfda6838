{{/* The release's base name, at most 63 characters. */}}
{{- define "modelwatch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelwatch.injector" -}}
{{- printf "%s-injector" (include "modelwatch.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelwatch.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "modelwatch.injectorSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end -}}

{{- define "modelwatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Whether cert-manager issues the webhook's certificate. */}}
{{- define "modelwatch.certManager" -}}
{{- $cm := .Values.tls.certManager -}}
{{- if eq (toString $cm) "true" -}}true
{{- else if and (eq (toString $cm) "auto") (.Capabilities.APIVersions.Has "cert-manager.io/v1") -}}true
{{- end -}}
{{- end -}}

{{/* The injector's settings file (the sidecar it injects). */}}
{{- define "modelwatch.injectorConfig" -}}
{{- $env := list -}}
{{- with .Values.sidecar.otlpEndpoint }}
{{- $env = append $env (dict "name" "OTEL_EXPORTER_OTLP_ENDPOINT" "value" .) -}}
{{- end }}
{{- with .Values.sidecar.alertmanagerUrl }}
{{- $env = append $env (dict "name" "MODELWATCH_ALERTMANAGER_URL" "value" .) -}}
{{- end }}
{{- if .Values.fleet.enabled }}
{{- $env = concat $env (include "modelwatch.kafkaEnv" . | fromYamlArray) -}}
{{- end }}
{{- $env = concat $env .Values.sidecar.env -}}
image: {{ include "modelwatch.image" . | quote }}
image_pull_policy: {{ .Values.image.pullPolicy }}
native_sidecar: {{ include "modelwatch.nativeSidecar" . }}
proxy_port: {{ .Values.sidecar.proxyPort }}
admin_port: {{ .Values.sidecar.adminPort }}
moved_port: {{ .Values.sidecar.movedPort }}
resources:
  {{- toYaml .Values.sidecar.resources | nindent 2 }}
run_as_user: {{ .Values.sidecar.runAsUser }}
store_size_limit: {{ .Values.sidecar.storeSizeLimit | quote }}
log_format: {{ .Values.sidecar.logFormat }}
prometheus_annotations: {{ .Values.sidecar.prometheusAnnotations }}
{{- if $env }}
env:
  {{- toYaml $env | nindent 2 }}
{{- else }}
env: []
{{- end }}
{{- end -}}


{{/* Sidecars' and joiners' Kafka environment (quality.backend: kafka). */}}
{{- define "modelwatch.kafkaEnv" -}}
{{- $k := .Values.fleet.kafka -}}
- name: MODELWATCH_QUALITY_BACKEND
  value: kafka
- name: MODELWATCH_KAFKA_BOOTSTRAP
  value: {{ $k.bootstrap | quote }}
- name: MODELWATCH_KAFKA_PREDICTIONS_TOPIC
  value: {{ $k.predictionsTopic | quote }}
- name: MODELWATCH_KAFKA_LABELS_TOPIC
  value: {{ $k.labelsTopic | quote }}
{{- if $k.properties }}
{{- $pairs := list -}}
{{- range $name, $value := $k.properties }}
{{- $pairs = append $pairs (printf "%s=%s" $name $value) -}}
{{- end }}
- name: MODELWATCH_KAFKA_PROPERTIES
  value: {{ join "," $pairs | quote }}
{{- end }}
{{- range $k.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- end -}}

{{- define "modelwatch.joiner" -}}
{{- printf "%s-joiner" (include "modelwatch.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelwatch.joinerSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: joiner
{{- end -}}

{{/*
Native sidecar or regular container: sidecar.nativeSidecar, or with "auto" the
cluster's version. A Service's named port resolves to a port of a native
sidecar (an init container with restartPolicy: Always) only from Kubernetes
1.33: the EndpointSlice controller's FindPort looks at init containers since
kubernetes/kubernetes#128850 (not backported; #127976 fixed only the Endpoints
API). Before 1.33 the sidecar must be a regular container.
*/}}
{{- define "modelwatch.nativeSidecar" -}}
{{- $v := .Values.sidecar.nativeSidecar -}}
{{- if kindIs "bool" $v -}}
{{- $v -}}
{{- else -}}
{{- semverCompare ">=1.33.0-0" .Capabilities.KubeVersion.Version -}}
{{- end -}}
{{- end }}

{{- define "modelwatch.collector" -}}
{{- printf "%s-collector" (include "modelwatch.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelwatch.collectorSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: collector
{{- end -}}
