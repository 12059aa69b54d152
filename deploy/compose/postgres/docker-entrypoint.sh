#!/bin/bash
# Entrypoint of the postgres:15 stand-in (see the Dockerfile beside it): on
# the first start, makes the cluster in PGDATA with POSTGRES_USER (default
# postgres) and its password, and the database POSTGRES_DB (default the
# user's name); then runs the server as the unprivileged postgres user.
set -euo pipefail

if [ "${1:-}" != postgres ]; then
    exec "$@"
fi

# POSTGRES_PASSWORD_FILE is read here, as root, like the official image does.
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
    unset POSTGRES_PASSWORD_FILE
fi
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}

if [ "$(id -u)" = 0 ]; then
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    chown postgres:postgres "$PGDATA"
    export POSTGRES_PASSWORD
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2
        exit 1
    fi
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of flags
    initdb -D "$PGDATA" --username="$user" --pwfile="$password_file" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$password_file"
    printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
    if [ "$database" != postgres ]; then
        postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "$database" OWNER "$user";
SQL
    fi
    echo "postgres: made the cluster in $PGDATA (user $user, database $database)"
fi
unset POSTGRES_PASSWORD
exec "$@"
