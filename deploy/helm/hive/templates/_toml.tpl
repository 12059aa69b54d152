{{/*
TOML from a values map, for worker.toml and coordinator.toml. Helm's own
toToml writes every number from a values file as a float (slots = 4.0), which
the worker's config refuses, so the chart writes TOML itself: whole numbers
as integers, strings as JSON strings (valid TOML basic strings), lists inline,
maps as tables (inline inside lists; a table holding only tables gets no
header of its own). Null values are left out.
*/}}

{{- define "hive.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "hive.toml.value" -}}
{{- $kind := kindOf . -}}
{{- if eq $kind "string" -}}{{ toJson . }}
{{- else if eq $kind "bool" -}}{{ . }}
{{- else if or (eq $kind "float64") (eq $kind "float32") -}}
{{- if eq (float64 (int64 .)) (float64 .) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else if hasPrefix "int" $kind -}}{{ . }}
{{- else if hasPrefix "uint" $kind -}}{{ . }}
{{- else if eq $kind "slice" -}}
[{{- range $i, $item := . -}}{{- if $i }}, {{ end -}}{{- include "hive.toml.value" $item -}}{{- end -}}]
{{- else if eq $kind "map" -}}
{{ "{" }}{{- $first := true -}}
{{- range $key := keys . | sortAlpha -}}
{{- $item := get $ $key -}}
{{- if not (kindIs "invalid" $item) -}}
{{- if not $first }}, {{ end -}}{{- $first = false -}}
{{- include "hive.toml.key" $key }} = {{ include "hive.toml.value" $item -}}
{{- end -}}
{{- end -}}{{ "}" }}
{{- else -}}
{{- fail (printf "cannot write a value of kind %s as TOML" $kind) -}}
{{- end -}}
{{- end -}}

{{/* A table's body: pass (dict "path" "agents" "table" MAP); the top level has path "". */}}
{{- define "hive.toml.table" -}}
{{- $table := .table -}}
{{- $path := .path -}}
{{- range $key := keys $table | sortAlpha -}}
{{- $item := get $table $key -}}
{{- if not (or (kindIs "invalid" $item) (kindIs "map" $item)) }}
{{ include "hive.toml.key" $key }} = {{ include "hive.toml.value" $item }}
{{- end -}}
{{- end -}}
{{- range $key := keys $table | sortAlpha -}}
{{- $item := get $table $key -}}
{{- if kindIs "map" $item -}}
{{- $name := include "hive.toml.key" $key -}}
{{- $full := ternary $name (printf "%s.%s" $path $name) (eq $path "") -}}
{{- $onlyTables := true -}}
{{- range $inner := values $item }}{{ if not (kindIs "map" $inner) }}{{ $onlyTables = false }}{{ end }}{{ end -}}
{{- if or (not $item) (not $onlyTables) }}

[{{ $full }}]
{{- end -}}
{{- include "hive.toml.table" (dict "path" $full "table" $item) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hive.toml" -}}
{{- include "hive.toml.table" (dict "path" "" "table" .) | trimPrefix "\n" -}}
{{- end -}}
