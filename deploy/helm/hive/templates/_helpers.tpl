{{/* Names, labels and the values every template derives from. */}}

{{- define "hive.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix: "hive" for a release named hive, else RELEASE-hive. */}}
{{- define "hive.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hive.coordinator.fullname" -}}{{ include "hive.fullname" . | trunc 51 | trimSuffix "-" }}-coordinator{{- end -}}
{{- define "hive.worker.fullname" -}}{{ include "hive.fullname" . | trunc 56 | trimSuffix "-" }}-worker{{- end -}}
{{- define "hive.postgresql.fullname" -}}{{ include "hive.fullname" . | trunc 52 | trimSuffix "-" }}-postgresql{{- end -}}

{{- define "hive.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: {{ include "hive.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: pass (list $ "coordinator"). */}}
{{- define "hive.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "hive.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "hive.componentLabels" -}}
{{ include "hive.labels" (index . 0) }}
{{ include "hive.selectorLabels" . }}
{{- end -}}

{{- define "hive.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion ($image.tag | toString)) -}}
{{- end -}}

{{/* Secret names and keys: the user's existing Secret, else the one the chart makes. */}}

{{- define "hive.database.secretName" -}}
{{- if .Values.database.existingSecret -}}{{ .Values.database.existingSecret }}{{- else -}}{{ include "hive.fullname" . }}-database{{- end -}}
{{- end -}}

{{- define "hive.auth.enabled" -}}
{{- if or .Values.auth.existingSecret .Values.auth.adminToken -}}true{{- end -}}
{{- end -}}

{{- define "hive.auth.secretName" -}}
{{- if .Values.auth.existingSecret -}}{{ .Values.auth.existingSecret }}{{- else -}}{{ include "hive.fullname" . }}-admin-token{{- end -}}
{{- end -}}

{{- define "hive.worker.tokenSecretName" -}}
{{- if .Values.worker.token.existingSecret -}}{{ .Values.worker.token.existingSecret }}{{- else -}}{{ include "hive.fullname" . }}-worker-token{{- end -}}
{{- end -}}

{{- define "hive.tls.secretName" -}}
{{- if .Values.tls.existingSecret -}}{{ .Values.tls.existingSecret }}{{- else -}}{{ include "hive.fullname" . }}-tls{{- end -}}
{{- end -}}

{{- define "hive.postgresql.secretName" -}}
{{- if .Values.postgresql.auth.existingSecret -}}{{ .Values.postgresql.auth.existingSecret }}{{- else -}}{{ include "hive.postgresql.fullname" . }}{{- end -}}
{{- end -}}

{{/* The name the probes check the coordinator's certificate against. */}}
{{- define "hive.tls.serverName" -}}
{{- default (include "hive.coordinator.fullname" .) .Values.tls.serverName -}}
{{- end -}}

{{- define "hive.coordinator.url" -}}
{{- printf "%s://%s:%v" (ternary "https" "http" .Values.tls.enabled) (include "hive.coordinator.fullname" .) .Values.coordinator.service.grpcPort -}}
{{- end -}}

{{/*
Seconds in a duration written as the worker's config takes it: numbers with
units, run together or spaced ("30s", "45m", "1h 30m", "2d"). Rounded up.
Pass (dict "value" V "name" "worker.drainGrace").
*/}}
{{- define "hive.durationSeconds" -}}
{{- $text := .value | toString | trim -}}
{{- $units := dict "ms" 1 "msec" 1 "s" 1000 "sec" 1000 "secs" 1000 "second" 1000 "seconds" 1000 "m" 60000 "min" 60000 "mins" 60000 "minute" 60000 "minutes" 60000 "h" 3600000 "hr" 3600000 "hrs" 3600000 "hour" 3600000 "hours" 3600000 "d" 86400000 "day" 86400000 "days" 86400000 -}}
{{- if not (regexMatch "^([0-9]+ *[a-z]+ *)+$" $text) -}}
{{- fail (printf "%s: %q is not a duration: write a number and its unit, like 30s, 45m or 1h 30m" .name $text) -}}
{{- end -}}
{{- $ms := 0 -}}
{{- range regexFindAll "[0-9]+ *[a-z]+" $text -1 -}}
{{- $unit := regexReplaceAll "^[0-9]+ *" . "" -}}
{{- if not (hasKey $units $unit) -}}
{{- fail (printf "%s: %q has the unit %q; use ms, s, m, h or d" $.name $text $unit) -}}
{{- end -}}
{{- $ms = add $ms (mul (regexFind "^[0-9]+" . | atoi) (get $units $unit)) -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/* The longest kill_grace of the worker's agents, in seconds (10 when none sets one). */}}
{{- define "hive.worker.killGraceSeconds" -}}
{{- $longest := 10 -}}
{{- range $name, $agent := .Values.worker.agents -}}
{{- if and (kindIs "map" $agent) (hasKey $agent "kill_grace") -}}
{{- $seconds := include "hive.durationSeconds" (dict "value" $agent.kill_grace "name" (printf "worker.agents.%s.kill_grace" $name)) | atoi -}}
{{- $longest = max $longest $seconds -}}
{{- end -}}
{{- end -}}
{{- $longest -}}
{{- end -}}

{{/*
The least termination grace a worker pod needs: drain_grace for running
agents to finish, the longest kill_grace for those still running then to
stop, and the 30 s the worker gives itself to hand their tasks back.
*/}}
{{- define "hive.worker.minimumTerminationGrace" -}}
{{- $drain := include "hive.durationSeconds" (dict "value" .Values.worker.drainGrace "name" "worker.drainGrace") | atoi -}}
{{- add $drain (include "hive.worker.killGraceSeconds" . | atoi) 30 -}}
{{- end -}}

{{- define "hive.worker.terminationGrace" -}}
{{- $minimum := include "hive.worker.minimumTerminationGrace" . | atoi -}}
{{- $set := .Values.worker.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- add $minimum .Values.worker.terminationGraceSpareSeconds -}}
{{- else if lt (int64 $set) (int64 $minimum) -}}
{{- fail (printf "worker.terminationGracePeriodSeconds (%v) is shorter than a worker needs to drain: worker.drainGrace %s (%ss) + the longest agent kill_grace (%ss) + 30s to hand tasks back = %ds. Raise it, or leave it unset (null) and the chart adds worker.terminationGraceSpareSeconds to that sum" $set (toString .Values.worker.drainGrace) (include "hive.durationSeconds" (dict "value" .Values.worker.drainGrace "name" "worker.drainGrace")) (include "hive.worker.killGraceSeconds" .) $minimum) -}}
{{- else -}}
{{- int64 $set -}}
{{- end -}}
{{- end -}}

{{/* The restricted security context every container of the chart runs with. */}}
{{- define "hive.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "hive.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
fsGroup: {{ .runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}
