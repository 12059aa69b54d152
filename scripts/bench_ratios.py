"""Ratios of Hive's figures to the peers' and to the machine's limits, from
one file of result lines (hive-bench and shared/bench/peers/run-all.sh);
and, with --history, the file's headline figures appended to
bench/results/history.csv (one row per system, workload and figure).

    python3 scripts/bench_ratios.py RESULTS
    python3 scripts/bench_ratios.py --history CSV RUN_UTC COMMIT RESULTS
"""

import csv
import os
import sys

HISTORY_COLUMNS = ["run_utc", "commit", "system", "workload", "phase", "metric", "value", "unit"]

# The figures history.csv keeps from each workload's line: (field, unit).
HEADLINES = {
    "drain": [("jobs_per_s", "jobs/s"), ("wal_bytes_per_job", "bytes")],
    "latency": [("p50_ms", "ms"), ("p99_ms", "ms")],
    "spawn": [("jobs_per_s", "jobs/s"), ("share_of_ceiling", "ratio")],
    "logs": [("mb_per_s", "MB/s")],
    "backlog": [("p50_ms", "ms"), ("p99_ms", "ms")],
    "fleet": [
        ("coordinator_cpu_percent", "% of a core"),
        ("pg_commits_per_s", "commits/s"),
        ("pg_wal_bytes_per_s", "bytes/s"),
        ("beat_rtt_p99_ms", "ms"),
    ],
    "dashboard": [
        ("overview_p99_ms", "ms"),
        ("tasks_ready_p99_ms", "ms"),
        ("idle_reads_per_s_page_open", "reads/s"),
    ],
}

# limits.sh lines: the fields that name the measurement, and the figure's unit.
LIMIT_KEYS = ("cmd", "parallel", "batch", "clients")
LIMIT_UNITS = {"commits_per_s": "commits/s", "jobs_per_s": "jobs/s", "spawns_per_s": "spawns/s"}


def parse(path):
    """The result lines of one file as dicts. run-all.sh's summary lines
    (medians with their [min..max] range) repeat the raw lines, so they are left out."""
    rows = []
    for line in open(path):
        if line.startswith(("peer=", "limit=")) and "[" not in line:
            rows.append(dict(field.split("=", 1) for field in line.split() if "=" in field))
    return rows


def best(rows, workload, key, pick):
    """Best value of `key` per peer (variants folded into their peer), for one workload."""
    found = {}
    for row in rows:
        if row.get("workload") == workload and key in row and "peer" in row:
            peer = row["peer"].removesuffix("-batched")
            found[peer] = pick(found.get(peer, float(row[key])), float(row[key]))
    return found


def main(path):
    rows = parse(path)
    # Hive runs before the peers and (WITH_PEERS) again after them: one set of ratios per Hive run.
    for phase in ("before", "after"):
        ratios(rows, phase)
    ceiling = [row for row in rows if row.get("limit") == "spawn" and row.get("parallel") == "16" and row.get("cmd") == "/bin/true"]
    for variant in ("hive", "hive-batched"):
        spawn = [row for row in rows if row.get("workload") == "spawn" and row.get("peer") == variant]
        if spawn and "share_of_ceiling" in spawn[-1]:
            print(f"ratio workload=spawn {variant}/xargs_ceiling_same_moment={spawn[-1]['share_of_ceiling']}")
        if spawn and ceiling:
            share = float(spawn[-1]["jobs_per_s"]) / float(ceiling[-1]["spawns_per_s"])
            print(f"ratio workload=spawn {variant}/xargs_ceiling_limits_sh={share:.2f}")


def ratios(rows, phase):
    """Drain and latency ratios of one Hive run (`phase`: before or after the peers) to each peer."""
    rows = [row for row in rows if not row.get("peer", "").startswith("hive") or row.get("phase", "before") == phase]
    drain = best(rows, "drain", "jobs_per_s", max)
    p99 = best(rows, "latency", "p99_ms", min)
    if "hive" in drain:
        for peer, rate in sorted(drain.items()):
            if peer != "hive":
                print(f"ratio workload=drain hive/{peer}={drain['hive'] / rate:.2f} (hive {drain['hive']:.0f}/s {phase} the peers, {peer} {rate:.0f}/s)")
    if "hive" in p99:
        for peer, value in sorted(p99.items()):
            if peer != "hive":
                print(f"ratio workload=latency_p99 {peer}/hive={value / p99['hive']:.2f} (hive {p99['hive']:.2f} ms {phase} the peers, {peer} {value:.2f} ms)")


def history_rows(path, run_utc, commit):
    """The headline figures of one results file, as history.csv rows."""
    for row in parse(path):
        if "limit" in row:
            metric = next((key for key in row if key in LIMIT_UNITS), None)
            if metric is None:
                continue
            names = [row["limit"]]
            for key in LIMIT_KEYS:
                if key in row:
                    # cmd=/bin/true -> true, cmd=python3_-c_pass -> python3; batch=16 -> batch16
                    names.append(row[key].removeprefix("/bin/").split("_")[0] if key == "cmd" else f"{key}{row[key]}")
            yield [run_utc, commit, "limits", "_".join(names), "", metric, row[metric], LIMIT_UNITS[metric]]
            continue
        workload = row.get("workload", "")
        if workload == "backlog":
            workload = f"backlog_{row.get('queued', '')}"
        for metric, unit in HEADLINES.get(row.get("workload"), []):
            if metric in row:
                yield [run_utc, commit, row["peer"], workload, row.get("phase", ""), metric, row[metric], unit]


def append_history(csv_path, run_utc, commit, results_path):
    """Appends the figures of `results_path` to `csv_path`, with its header if the file is new."""
    new = not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0
    with open(csv_path, "a", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        if new:
            writer.writerow(HISTORY_COLUMNS)
        writer.writerows(history_rows(results_path, run_utc, commit))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--history"] and len(sys.argv) == 6:
        append_history(*sys.argv[2:])
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit(__doc__)
