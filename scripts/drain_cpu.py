#!/usr/bin/env python3
"""CPU per job in a batched drain, split by process: Hive or a peer.

    scripts/drain_cpu.py hive [N]              target/release/hive-bench, prefetch 500
    scripts/drain_cpu.py DIR [N]               the hive-bench in DIR (with the coordinator and
                                               worker beside it): alternate two such folders
                                               to compare two builds
    scripts/drain_cpu.py graphile-worker [N]   a peer, batched (from target/bench-peers,
                                               the copy `WITH_PEERS=1 scripts/bench` makes)

Runs one drain of N tasks (default 100000) and, while its workers run,
samples every process's CPU time from /proc (user + system, 10 ms ticks).
Prints the drain's own result line, then CPU milliseconds per 1,000 jobs by
process class: PostgreSQL backends, PostgreSQL's helpers, the workers, the
coordinator. Steadier than jobs/s on a machine whose speed drifts: compare
runs taken one after another, alternating.
"""

import collections
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "target", "bench-peers")
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def processes():
    """pid -> (command line, CPU ticks) for every process."""
    seen = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline") as cmdline:
                fields = stat.read().rsplit(")", 1)[1].split()
                command = cmdline.read().replace("\0", " ").strip()
        except OSError:
            continue
        seen[pid] = (command, int(fields[11]) + int(fields[12]))
    return seen


def kind(command):
    if command.startswith("postgres") or "/bin/postgres" in command:
        backend = not re.search(r"checkpointer|background writer|walwriter|autovacuum|logical replication|stats", command)
        return "postgres-backends" if backend else "postgres-helpers"
    for name in ("hive-coordinator", "hive-worker", "bench.mjs worker"):
        if name in command:
            return "workers" if "worker" in name else "coordinator"
    return None


def watch(worker_mark, totals, done):
    """Adds each process's CPU from the first worker's start to the workers'
    exit (a process that exits meanwhile counts up to its last sample)."""
    first, latest = None, {}
    while not done.is_set():
        now = processes()
        running = any(worker_mark in command for command, _ in now.values())
        if running:
            first = first or now
            latest.update(now)
        elif first:
            break
        time.sleep(0.05)
    for pid, (command, ticks) in latest.items():
        category = kind(command)
        if category:
            totals[category] += ticks - first.get(pid, (command, 0))[1]


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "hive"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    build = os.path.join(ROOT, "target/release") if target == "hive" else target
    hive = os.path.isfile(os.path.join(build, "hive-bench"))
    if hive:
        mark = "hive-worker"
        command = [os.path.join(build, "hive-bench"), "--workloads", "drain", "--n", str(n),
                   "--drain-prefetch", "500", "--dir", f"/tmp/hive-drain-cpu.{os.getpid()}"]
        env = dict(os.environ)
    else:
        mark = "bench.mjs worker drain"
        if not os.path.isdir(PEERS):
            sys.exit(f"no peer harness at {PEERS}: run `WITH_PEERS=1 scripts/bench` once")
        command = [os.path.join(PEERS, target, "run.sh")]
        env = dict(os.environ, VARIANTS="batched", N=str(n), DURATION_S="1")
    totals, done = collections.Counter(), threading.Event()
    watcher = threading.Thread(target=watch, args=(mark, totals, done))
    watcher.start()
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=False).stdout
    done.set()
    watcher.join()
    if hive:
        subprocess.run(["rm", "-rf", command[-1]], check=False)
    for line in output.splitlines():
        if "workload=drain" in line:
            print(line[:160])
    per_thousand = {name: ticks * TICK_MS * 1000 / n for name, ticks in totals.items()}
    print(" ".join(f"{name}={ms:.1f}" for name, ms in sorted(per_thousand.items())),
          f"total={sum(per_thousand.values()):.1f}", "(CPU ms per 1,000 jobs)")


if __name__ == "__main__":
    main()
