{{/*
Refuses values that would run without a database, without auth or without
TLS unless they say so, and values that contradict each other. Each message
names the value to set. The coordinator Deployment includes this, so every
render (install, upgrade, template, lint) runs it.
*/}}
{{- define "hive.validate" -}}
{{- $v := .Values -}}

{{- /* The database: an existing Secret, a URL, or the trial PostgreSQL. */ -}}
{{- if $v.postgresql.enabled -}}
{{- if or $v.database.existingSecret $v.database.url -}}
{{- fail "database: postgresql.enabled runs a trial PostgreSQL in the release; unset database.existingSecret and database.url, or set postgresql.enabled=false to use that database" -}}
{{- end -}}
{{- if not (or $v.postgresql.auth.existingSecret $v.postgresql.auth.password) -}}
{{- fail "postgresql: set postgresql.auth.password (or postgresql.auth.existingSecret, a Secret with the password under key \"password\") for the trial PostgreSQL; the chart has no default password" -}}
{{- end -}}
{{- else if not (or $v.database.existingSecret $v.database.url) -}}
{{- fail "database: set database.existingSecret to a Secret holding the PostgreSQL URL under key \"url\" (or database.url; or postgresql.enabled=true for a trial database in the release); the chart has no default database or password" -}}
{{- else if and $v.database.existingSecret $v.database.url -}}
{{- fail "database: set database.existingSecret or database.url, not both" -}}
{{- end -}}

{{- /* Auth: an admin token, or an explicit insecure=true. */ -}}
{{- if and $v.auth.existingSecret $v.auth.adminToken -}}
{{- fail "auth: set auth.existingSecret or auth.adminToken, not both" -}}
{{- end -}}
{{- if and $v.auth.adminToken (not (regexMatch "^hive_a_[0-9a-f]{64}$" ($v.auth.adminToken | trim))) -}}
{{- fail "auth.adminToken is not an admin token: it is hive_a_ and 64 hex digits, as `hivectl tokens mint` prints" -}}
{{- end -}}
{{- if include "hive.auth.enabled" . -}}
{{- if $v.auth.insecure -}}
{{- fail "auth: auth.insecure=true, but an admin token is set, so auth is on; unset auth.insecure" -}}
{{- end -}}
{{- else if not $v.auth.insecure -}}
{{- fail "auth: set auth.existingSecret to a Secret holding an admin token under key \"token\" (make one with `hivectl tokens mint --out admin.token`), or auth.adminToken; or set auth.insecure=true to serve without auth, letting anyone who can reach the coordinator run code on every worker" -}}
{{- end -}}

{{- /* TLS: certificates, or an explicit enabled=false. */ -}}
{{- $inlineTls := list $v.tls.cert $v.tls.key $v.tls.ca | compact | len -}}
{{- if $v.tls.enabled -}}
{{- if and $v.tls.existingSecret (gt $inlineTls 0) -}}
{{- fail "tls: set tls.existingSecret or tls.cert, tls.key and tls.ca, not both" -}}
{{- end -}}
{{- if and (not $v.tls.existingSecret) (ne $inlineTls 3) -}}
{{- fail "tls: set tls.existingSecret to a Secret with tls.crt, tls.key and ca.crt (cert-manager writes one; or make it from `hivectl certs dev`), or all of tls.cert, tls.key and tls.ca; or set tls.enabled=false to serve gRPC, and the tokens on it, in plaintext" -}}
{{- end -}}
{{- else if or $v.tls.existingSecret (gt $inlineTls 0) -}}
{{- fail "tls: tls.enabled=false, but TLS files are set; set tls.enabled=true to use them, or unset them" -}}
{{- end -}}

{{- /* Coordinator settings the chart owns. */ -}}
{{- $config := $v.coordinator.config | default dict -}}
{{- range $key := list "listen" "auth" "tls" "log_format" -}}
{{- if hasKey $config $key -}}
{{- fail (printf "coordinator.config.%s: the chart sets it; use the chart's values (auth.*, tls.*, coordinator.logFormat) instead" $key) -}}
{{- end -}}
{{- end -}}
{{- if hasKey ($config.database | default dict) "url" -}}
{{- fail "coordinator.config.database.url: the chart sets it; use database.existingSecret" -}}
{{- end -}}
{{- if hasKey ($config.http | default dict) "listen" -}}
{{- fail "coordinator.config.http.listen: the chart sets it; use coordinator.http.enabled" -}}
{{- end -}}
{{- if not (has $v.coordinator.probes.kind (list "exec" "grpc")) -}}
{{- fail (printf "coordinator.probes.kind: %q is neither exec nor grpc" $v.coordinator.probes.kind) -}}
{{- end -}}
{{- if and (eq $v.coordinator.probes.kind "grpc") $v.tls.enabled -}}
{{- fail "coordinator.probes.kind=grpc: the kubelet's gRPC probe cannot speak TLS; use kind exec (hive-coordinator healthcheck), or tls.enabled=false" -}}
{{- end -}}

{{- /* Workers. */ -}}
{{- if $v.worker.enabled -}}
{{- if and $v.worker.token.existingSecret $v.worker.token.value -}}
{{- fail "worker.token: set worker.token.existingSecret or worker.token.value, not both" -}}
{{- end -}}
{{- if and $v.worker.token.value (not (regexMatch "^hive_w_[0-9a-f]{64}$" ($v.worker.token.value | trim))) -}}
{{- fail "worker.token.value is not a worker token: it is hive_w_ and 64 hex digits, as `hivectl tokens create --role worker` prints" -}}
{{- end -}}
{{- if and (include "hive.auth.enabled" .) (not (or $v.worker.token.existingSecret $v.worker.token.value)) -}}
{{- fail "worker.token: set worker.token.existingSecret to the name of a Secret holding a worker token under key \"token\" (`hivectl tokens create --role worker --name k8s-workers`; the Secret may be made after the install, worker pods wait for it), or worker.token.value; or worker.enabled=false" -}}
{{- end -}}
{{- if not $v.worker.agents -}}
{{- fail "worker.agents: name at least one agent (a worker offering none exits)" -}}
{{- end -}}
{{- range $name, $agent := $v.worker.agents -}}
{{- if not (kindIs "map" $agent) -}}
{{- fail (printf "worker.agents.%s: an agent is a table of settings (command, prompt, timeout, …)" $name) -}}
{{- end -}}
{{- end -}}
{{- range $key := list "coordinator" "token_file" "tls" "slots" "drain_grace" "work_dir" "http" "agents" -}}
{{- if hasKey ($v.worker.config | default dict) $key -}}
{{- fail (printf "worker.config.%s: the chart sets it; use the chart's worker values instead (worker.slots, worker.drainGrace, worker.agents, worker.metrics, …)" $key) -}}
{{- end -}}
{{- end -}}
{{- $_ := include "hive.worker.terminationGrace" . -}}
{{- end -}}

{{- /* Autoscaling and monitoring. */ -}}
{{- if $v.keda.enabled -}}
{{- if not $v.worker.enabled -}}
{{- fail "keda.enabled scales the workers; it needs worker.enabled=true" -}}
{{- end -}}
{{- if not (or $v.keda.serverAddress $v.keda.triggers) -}}
{{- fail "keda.serverAddress: name the Prometheus that scrapes the coordinators (e.g. http://prometheus-operated.monitoring.svc:9090), or give keda.triggers" -}}
{{- end -}}
{{- if and (not $v.keda.triggers) (not $v.coordinator.http.enabled) -}}
{{- fail "keda.enabled: its Prometheus trigger reads the coordinators' /metrics, served only with coordinator.http.enabled=true; enable it, or give keda.triggers" -}}
{{- end -}}
{{- end -}}
{{- if and $v.serviceMonitor.enabled (include "hive.auth.enabled" .) (not $v.serviceMonitor.tokenSecret.name) -}}
{{- fail "serviceMonitor.tokenSecret.name: name a Secret holding a metrics token under key \"token\" (`hivectl tokens create --role metrics --name prometheus`); with auth on the coordinators refuse a scrape without one" -}}
{{- end -}}
{{- if and $v.serviceMonitor.enabled (not $v.coordinator.http.enabled) -}}
{{- fail "serviceMonitor.enabled: the coordinators serve /metrics only with coordinator.http.enabled=true" -}}
{{- end -}}
{{- end -}}
