#!/usr/bin/python3
"""Finish-time CDF per system from the swarm lab's JSON lines (docs/BENCHMARKS.md).

    bench/plot-lab.py RESULTS.jsonl OUT.png [AGENTS]

Plots the runs with AGENTS agents (default: the largest number in the file), one
step curve per system (the last run of each), with the Kumar-Ross bound as a line.
Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    if not runs:
        sys.exit(f"{sys.argv[1]}: no runs")
    n = int(sys.argv[3]) if len(sys.argv) > 3 else max(r["agents"] for r in runs)
    last = {}
    for r in runs:
        if r["agents"] == n and not r.get("late") and r.get("delta_pct") is None:
            last[r["system"]] = r
    if not last:
        sys.exit(f"no plain runs with {n} agents in {sys.argv[1]}")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name, r in sorted(last.items(), key=lambda kv: kv[1]["time_s"]):
        times = sorted(r["finish_s"])
        ys = [(i + 1) / len(times) for i in range(len(times))]
        ax.step(
            [0] + times,
            [0] + ys,
            where="post",
            label=f"{name}: all done {r['time_s']:.1f} s, origin {r['origin_copies']:.2f} F",
        )
    bound = next(iter(last.values()))["bound_s"]
    ax.axvline(bound, color="grey", linestyle="--", label=f"Kumar-Ross bound {bound:.1f} s")
    r0 = next(iter(last.values()))
    ax.set_title(
        f"{n} agents, {r0['size_bytes'] // 2**20} MiB, origin {r0['origin_mbit']} Mbit/s, "
        f"agents {r0['host_mbit']} Mbit/s"
    )
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("fraction of agents holding a verified copy")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
