#!/usr/bin/env bash
# What the batched drain's statements wait on.
#
#   scripts/drain_waits.sh [N]     N tasks, default 20000
#
# Runs one batched drain (target/release/hive-bench, prefetch 500) and, from
# a loop inside its PostgreSQL, samples `pg_stat_activity` of the drain's
# database as fast as the loop can (about one sample every 0.1 ms). Prints
# how many samples found a claim or a completion running on the CPU or
# waiting, by wait event. The loop takes CPU from the drain (it runs slower
# while sampled), so the shares are what to read, not the drain's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20000}"
dir="$(mktemp -d /tmp/hive-drain-waits.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
out="$dir/waits.txt"

sample() {
    local pid_file="$dir/pg/data/postmaster.pid" port=""
    until [ -n "$port" ] && "$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc \
        "select 1 from pg_database where datname = 'bench_drain_500'" 2>/dev/null | grep -q 1; do
        sleep 0.05
        [ -f "$pid_file" ] && port="$(sed -n 4p "$pid_file")"
    done
    "$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -At -v ON_ERROR_STOP=1 >"$out" 2>&1 <<'SQL'
create temp table s (pid int, state text, statement text);
do $$ begin
  for i in 1 .. 20000 loop
    insert into s
    select pid, coalesce(wait_event_type || ':' || wait_event, 'CPU'),
           case when query like '%offered as%' then 'claim' when query like '%reported as%' then 'complete' end
    from pg_stat_activity
    where datname = 'bench_drain_500' and state = 'active' and pid <> pg_backend_pid();
    perform pg_stat_clear_snapshot();
  end loop;
end $$;
select statement, state, count(*), round(100.0 * count(*) / sum(count(*)) over (), 1) as percent
from s where statement is not null group by 1, 2 order by 3 desc;
SQL
}

sample &
sampler=$!
target/release/hive-bench --workloads drain --n "$n" --drain-prefetch 500 --dir "$dir" 2>/dev/null | grep 'hive-batched' | cut -c1-120
wait "$sampler" || true
echo "statement|state|samples|percent"
grep '|' "$out"
