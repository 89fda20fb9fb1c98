#!/usr/bin/env python3
"""The docs/benchmarks.md tables from `cairn-bench server --json FILE` runs.

    python3 bench/peers/server-table.py RUN1.json [RUN2.json ...]

YCSB table: for every (durability, workload, threads) and every cairn protocol, the ratios of
cairn to PostgreSQL measured in the same run: throughput (above 1: cairn ahead) and p50/p99
latency (below 1: cairn ahead). Round-trip table: p50 and p99 in microseconds of one request at
a time on each path. With several runs, the median and, in brackets, the lowest and highest
(the spread between runs on a shared machine).
"""
import json
import statistics
import sys

ORDER = {"relaxed": 0, "read_only": 1, "durable": 2}


def load(path):
    records = {}
    with open(path) as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("suite") != "server":
                continue
            key = (record["durability"], record["workload"], record["threads"])
            if record["workload"].startswith("roundtrip_"):
                key = ("roundtrip",) + key[1:]
            system = record["system"]
            if system == "cairn":
                system = "cairn/" + record["protocol"]
            records[(key, system)] = record
    return records


def cell(values, digits=2):
    if not values:
        return "-"
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.{digits}f}"
    return f"{middle:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(paths):
    runs = [load(path) for path in paths]
    keys = sorted(
        {key for run in runs for (key, _) in run if key[0] != "roundtrip"},
        key=lambda key: (ORDER.get(key[0], 9), key[1], key[2]),
    )
    protocols = sorted(
        {
            system
            for run in runs
            for (key, system) in run
            if system.startswith("cairn/") and key[0] != "roundtrip"
        }
    )
    print(f"Runs: {len(runs)}. Ratios are cairn / PostgreSQL from the same run"
          + (": median (lowest-highest)." if len(runs) > 1 else "."))
    print()
    header = ["durability", "workload", "threads", "PostgreSQL ops/s"]
    for protocol in protocols:
        name = protocol.split("/")[1]
        header += [f"{name} ops/s", f"{name} throughput", f"{name} p50", f"{name} p99"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key in keys:
        durability, workload, threads = key
        peer_rates = [run[(key, "postgres")]["ops_per_sec"] for run in runs if (key, "postgres") in run]
        row = [durability, workload, str(threads), cell(peer_rates, 0)]
        for protocol in protocols:
            rates, throughput, p50, p99 = [], [], [], []
            for run in runs:
                if (key, protocol) not in run:
                    continue
                cairn = run[(key, protocol)]
                rates.append(cairn["ops_per_sec"])
                peer = run.get((key, "postgres"))
                if peer is None:
                    continue
                throughput.append(cairn["ops_per_sec"] / peer["ops_per_sec"])
                p50.append(cairn["p50_us"] / peer["p50_us"])
                p99.append(cairn["p99_us"] / peer["p99_us"])
            row += [cell(rates, 0), cell(throughput), cell(p50), cell(p99)]
        print("| " + " | ".join(row) + " |")

    roundtrip_keys = sorted({key for run in runs for (key, _) in run if key[0] == "roundtrip"})
    if not roundtrip_keys:
        return
    paths = ["cairn/in_process", "cairn/wire_raw", "cairn/wire", "cairn/grpc", "postgres"]
    print()
    print("Round trips, one request at a time: p50 / p99 in microseconds.")
    print()
    print("| workload | " + " | ".join(path.replace("cairn/", "cairn ") for path in paths) + " |")
    print("|---|" + "---|" * len(paths))
    for key in roundtrip_keys:
        row = [key[1]]
        for path in paths:
            p50 = [run[(key, path)]["p50_us"] for run in runs if (key, path) in run]
            p99 = [run[(key, path)]["p99_us"] for run in runs if (key, path) in run]
            row.append(f"{cell(p50, 0)} / {cell(p99, 0)}" if p50 else "-")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
