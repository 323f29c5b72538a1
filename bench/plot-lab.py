#!/usr/bin/python3
"""Finish-time CDF per system from the swarm lab's JSON lines (docs/BENCHMARKS.md).

    bench/plot-lab.py RESULTS.jsonl OUT.png [AGENTS [SIZE_MIB]]
    bench/plot-lab.py --table RESULTS.jsonl     (markdown, latest run per scenario)

Plots the runs with AGENTS agents (default: the largest number in the file) and a
payload of SIZE_MIB (default: the largest with that many agents), one step curve per
system (the last run of each), with the Kumar-Ross bound as a line.
Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def key(r):
    late = r.get("late")
    slow = r.get("slow")
    return (
        r["agents"],
        r["size_bytes"],
        r.get("delta_pct") or 0,
        r.get("loss_pct") or 0,
        (late or {}).get("agents", 0),
        (late or {}).get("after_s", 0),
        (slow or {}).get("agents", 0),
        (slow or {}).get("mbit", 0),
        (slow or {}).get("marked", False),
        r["system"],
    )


def table(runs):
    """Markdown table of the latest run of each (scenario, system)."""
    latest = {}
    for r in runs:
        latest[key(r)] = r
    out = [
        "| scenario | system | bound s | all done s | × bound | median agent s "
        "| origin F | agent link rx F | agent CPU s | verified |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for k in sorted(latest):
        r = latest[k]
        f = sorted(r["finish_s"])
        scen = f"N={r['agents']}, {r['size_bytes'] // 2**20} MiB"
        if r.get("late"):
            scen += f", {r['late']['agents']} join {r['late']['after_s']:g} s late"
        if r.get("delta_pct"):
            scen += f", update with {r['delta_pct']:g} % changed"
        if r.get("loss_pct"):
            scen += f", {r['loss_pct']:g} % loss"
        if r.get("slow"):
            sl = r["slow"]
            scen += f", {sl['agents']} at {sl['mbit']} Mbit/s"
            if r["system"] == "shoal":
                scen += " (link slow)" if sl["marked"] else " (not said)"
        out.append(
            f"| {scen} | {r['system']} | {r['bound_s']:.1f} | {r['time_s']:.1f} "
            f"| {r['bound_ratio']:.2f} | {f[len(f) // 2]:.1f} | {r['origin_copies']:.3f} "
            f"| {r['agent_rx_copies']:.3f} | {r['agent_cpu_s']:.1f} "
            f"| {'yes' if r['verified'] else '**NO**'} |"
        )
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        runs = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
        sys.stdout.write(table(runs))
        return
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    if not runs:
        sys.exit(f"{sys.argv[1]}: no runs")
    n = int(sys.argv[3]) if len(sys.argv) > 3 else max(r["agents"] for r in runs)
    plain = [
        r
        for r in runs
        if r["agents"] == n
        and not r.get("late")
        and not r.get("delta_pct")
        and not r.get("loss_pct")
        and not r.get("slow")
    ]
    if not plain:
        sys.exit(f"no plain runs with {n} agents in {sys.argv[1]}")
    mib = int(sys.argv[4]) if len(sys.argv) > 4 else max(r["size_bytes"] >> 20 for r in plain)
    last = {}
    for r in plain:
        if r["size_bytes"] >> 20 == mib:
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
