#!/usr/bin/env python3
"""Shares of CPU samples in a `perf script` dump, for the profiles quoted in docs/benchmarks.md.

    perf record -F 999 --call-graph dwarf,16384 -o perf.data -- cairn-bench server ...
    perf script -i perf.data > perf.txt
    python3 bench/peers/perf-shares.py threads perf.txt
    python3 bench/peers/perf-shares.py groups perf.txt THREAD NAME=PATTERN[|PATTERN...] ...
    python3 bench/peers/perf-shares.py under perf.txt THREAD FRAME [COUNT]

- threads: the share of samples per thread name (`cairnd-net`: the node's runtime and its
  blocking threads; `bench-client`: the drivers and the load generator).
- groups: each sample of threads whose name starts with THREAD goes to the first group one of
  whose patterns is a substring of one of its frames (so list groups from the most specific).
- under: for samples that contain FRAME, the inclusive share of each frame called under it,
  relative to all samples of THREAD.
Frames are function names without generic arguments.
"""
import collections
import re
import sys


def simplify(symbol):
    symbol = re.sub(r"\+0x[0-9a-f]+$", "", symbol)
    kept, depth = [], 0
    for character in symbol:
        if character == "<":
            depth += 1
        elif character == ">":
            depth -= 1
        elif depth == 0:
            kept.append(character)
    return re.sub(r"\(.*?\)", "", "".join(kept)).strip()


def samples(path):
    """(thread name, frames leaf first) for every sample."""
    current = None
    with open(path, errors="replace") as lines:
        for line in lines:
            if not line.strip():
                if current:
                    yield current
                current = None
            elif not line[0].isspace():
                current = (line.split()[0], [])
            elif current is not None:
                parts = line.strip().split(None, 1)
                if len(parts) == 2:
                    current[1].append(simplify(parts[1].rsplit(" (", 1)[0]))
    if current:
        yield current


def main(arguments):
    if len(arguments) < 2:
        sys.exit(__doc__)
    mode, path = arguments[0], arguments[1]
    all_samples = list(samples(path))
    if mode == "threads":
        counts = collections.Counter(thread for thread, _ in all_samples)
        for thread, count in counts.most_common():
            print(f"{100 * count / len(all_samples):5.1f}%  {thread}")
        return
    thread = arguments[2]
    selected = [frames for name, frames in all_samples if name.startswith(thread)]
    if not selected:
        sys.exit(f"no samples of threads named {thread}*")
    if mode == "groups":
        groups = [(group.split("=", 1)[0], group.split("=", 1)[1].split("|")) for group in arguments[3:]]
        counts = collections.Counter()
        for frames in selected:
            for name, patterns in groups:
                if any(pattern in frame for frame in frames for pattern in patterns):
                    counts[name] += 1
                    break
            else:
                counts["other"] += 1
        for name in [name for name, _ in groups] + ["other"]:
            print(f"{100 * counts[name] / len(selected):5.1f}%  {name}")
    elif mode == "under":
        target = arguments[3]
        limit = int(arguments[4]) if len(arguments) > 4 else 40
        below, hits = collections.Counter(), 0
        for frames in selected:
            positions = [index for index, frame in enumerate(frames) if frame == target]
            if not positions:
                continue
            hits += 1
            for frame in set(frames[: max(positions)]):
                below[frame] += 1
        print(f"{100 * hits / len(selected):5.1f}%  {target}")
        for frame, count in below.most_common(limit):
            print(f"{100 * count / len(selected):5.1f}%    {frame}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
