"""Ratios of Hive's figures to the peers' and to the machine's limits, from
one file of result lines (hive-bench and shared/bench/peers/run-all.sh)."""

import sys


def parse(path):
    rows = []
    for line in open(path):
        if line.startswith(("peer=", "limit=")):
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


if __name__ == "__main__":
    main(sys.argv[1])
