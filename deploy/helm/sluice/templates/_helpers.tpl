{{/* The chart's name. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: the StatefulSet's and the pods' prefix (sluice-0, sluice-1, ...).
Short enough that "<name>-headless" fits a Service name.
*/}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The headless Service: the pods' DNS names and the routes between them. */}}
{{- define "sluice.headless" -}}
{{- printf "%s-headless" (include "sluice.fullname" .) }}
{{- end }}

{{/* The domain under which each pod has a name: <pod>.<this>. */}}
{{- define "sluice.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "sluice.headless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* The Secret holding the cluster secret. */}}
{{- define "sluice.secretName" -}}
{{- if .Values.clusterSecret.existingSecret }}
{{- .Values.clusterSecret.existingSecret }}
{{- else }}
{{- printf "%s-cluster" (include "sluice.fullname" .) }}
{{- end }}
{{- end }}

{{/*
--routes: every pod's cluster address, the pod itself included (a node finds the route that
leads back to it and does not dial it again), so that every pod gets the same list.
*/}}
{{- define "sluice.routes" -}}
{{- $fullname := include "sluice.fullname" . }}
{{- $domain := include "sluice.podDomain" . }}
{{- $routes := list }}
{{- range $i := until (int .Values.replicas) }}
{{- $routes = append $routes (printf "%s-%d.%s:%d" $fullname $i $domain (int $.Values.ports.cluster)) }}
{{- end }}
{{- join "," $routes }}
{{- end }}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/* Checks of values the broker would refuse later, or that would split the cluster. */}}
{{- define "sluice.validate" -}}
{{- if lt (int .Values.replicas) 1 }}
{{- fail "replicas must be at least 1" }}
{{- end }}
{{- if or (lt (int .Values.shards) 1) (gt (int .Values.shards) 64) }}
{{- fail "shards must be between 1 and 64" }}
{{- end }}
{{- if not (has .Values.podAntiAffinity (list "soft" "hard" "")) }}
{{- fail "podAntiAffinity must be soft, hard or \"\"" }}
{{- end }}
{{- end }}
