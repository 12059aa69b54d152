#!/bin/sh
# The `init` one-shot of deploy/compose.yaml: makes the stack's secrets in
# /var/lib/hive-secrets, each only where it is missing, so there is no
# default secret and a second `up` changes nothing:
#
#   admin.token          the first admin token (auth.admin_token_file)
#   postgres-password    PostgreSQL's password for the user `hive`
#   coordinator.toml     the coordinators' database URL, with that password
#   tls/                 a development CA and the coordinators' certificate,
#                        valid for coordinator, coordinator-1, coordinator-2,
#                        localhost, 127.0.0.1 and each name in HIVE_TLS_HOSTS
#
# Files put there beforehand (HIVE_SECRETS naming a folder of yours, see the
# README's "Deploy") are kept: bring your own certificate as tls/server.pem
# and tls/server-key.pem with its CA as tls/ca.pem.
set -eu
umask 077
dir=/var/lib/hive-secrets
mkdir -p "$dir/tls"

random_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

if [ ! -s "$dir/admin.token" ]; then
    hivectl tokens mint --out "$dir/admin.token"
    echo "init: made the admin token (admin.token)"
fi
if [ ! -s "$dir/postgres-password" ]; then
    random_hex > "$dir/postgres-password"
    echo "init: made the PostgreSQL password (postgres-password)"
fi
if [ ! -s "$dir/coordinator.toml" ]; then
    password=$(cat "$dir/postgres-password")
    cat > "$dir/coordinator.toml.new" <<EOF
# Written by deploy/compose/init.sh: the stack's own PostgreSQL. Put another
# URL here to use yours.
[database]
url = "postgres://hive:$password@postgres:5432/hive"
EOF
    mv "$dir/coordinator.toml.new" "$dir/coordinator.toml"
    echo "init: wrote the database URL (coordinator.toml)"
fi

# The server certificate is issued again from the same CA when the names
# asked for change (HIVE_TLS_HOSTS); clients keep trusting tls/ca.pem.
# One space between names, so the list compares equal from run to run.
hosts=$(echo "coordinator coordinator-1 coordinator-2 ${HIVE_TLS_HOSTS:-}" | tr -s ', ' '\n' | sed '/^$/d' | paste -sd ' ' -)
if [ ! -s "$dir/tls/server.pem" ] || [ "$(cat "$dir/tls/hosts" 2>/dev/null)" != "$hosts" ]; then
    if [ -s "$dir/tls/server.pem" ] && [ ! -e "$dir/tls/hosts" ]; then
        echo "init: tls/server.pem was put there by hand: kept"
    else
        set --
        for host in $hosts; do set -- "$@" --host "$host"; done
        if [ -s "$dir/tls/ca.pem" ] && [ -s "$dir/tls/ca-key.pem" ]; then
            hivectl certs dev --dir "$dir/tls" --ca-from "$dir/tls" "$@"
        else
            hivectl certs dev --dir "$dir/tls" "$@"
        fi
        echo "$hosts" > "$dir/tls/hosts"
        echo "init: issued the coordinators' certificate for: $hosts"
    fi
fi
echo "init: secrets ready"
