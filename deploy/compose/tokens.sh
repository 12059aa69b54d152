#!/bin/sh
# The `tokens` one-shot of deploy/compose.yaml, run once the coordinators
# are healthy: with the admin token, makes what the other services need,
# each only where it is missing:
#
#   /var/lib/hive-worker-secrets/worker.token   the workers' token (role worker)
#   /var/lib/hive-worker-secrets/ca.pem         the CA the workers trust
#   /var/lib/hive-observability/metrics.token   Prometheus' token (role metrics)
#   /var/lib/hive-observability/grafana-admin-password
#
# Workers see neither the admin token nor the CA's key; Prometheus and
# Grafana see only their own folder.
set -eu
workers=/var/lib/hive-worker-secrets
observability=/var/lib/hive-observability
stamp=$(date -u +%Y%m%d%H%M%S)

umask 077
cp "$HIVE_TLS_CA" "$workers/ca.pem.new"
mv "$workers/ca.pem.new" "$workers/ca.pem"
if [ ! -s "$workers/worker.token" ]; then
    hivectl tokens create --role worker --name "compose-workers-$stamp" > "$workers/worker.token.new"
    mv "$workers/worker.token.new" "$workers/worker.token"
    echo "tokens: made the workers' token (compose-workers-$stamp)"
fi

# Prometheus (uid 65534) and Grafana (uid 472) read these.
umask 022
if [ ! -s "$observability/metrics.token" ]; then
    hivectl tokens create --role metrics --name "compose-prometheus-$stamp" > "$observability/metrics.token.new"
    mv "$observability/metrics.token.new" "$observability/metrics.token"
    echo "tokens: made Prometheus' token (compose-prometheus-$stamp)"
fi
if [ ! -s "$observability/grafana-admin-password" ]; then
    od -An -N18 -tx1 /dev/urandom | tr -d ' \n' > "$observability/grafana-admin-password"
    echo "tokens: made Grafana's admin password (grafana-admin-password)"
fi
echo "tokens: ready"
