//! The lab's outputs: one JSON object per run (JSON lines, for plots and later
//! comparison) and a markdown table for `docs/BENCHMARKS.md`.

use super::Record;

/// `r` as one line of JSON.
pub fn json_line(r: &Record) -> String {
    serde_json::to_string(r).expect("a record always serialises")
}

/// A markdown table of `records`, one row per run.
pub fn markdown(records: &[Record]) -> String {
    let mut out = String::from(
        "| system | N | F | u_s / u_i Mbit/s | bound s | all done s | × bound | median agent s | origin F | agent rx F | agent CPU s | peak RSS MiB | verified |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in records {
        let mut f = r.finish_s.clone();
        f.sort_by(f64::total_cmp);
        let median = f.get(f.len() / 2).copied().unwrap_or(f64::NAN);
        let mut flags = String::new();
        if let Some(l) = r.late {
            flags += &format!(", {} late by {} s", l.agents, l.after_s);
        }
        if let Some(s) = r.slow {
            flags += &format!(
                ", {} at {} Mbit/s{}",
                s.agents,
                s.mbit,
                if s.marked { " (link slow)" } else { "" }
            );
        }
        if let Some(d) = r.delta_pct {
            flags += &format!(", update with {d}% changed");
        }
        if let Some(l) = r.loss_pct {
            flags += &format!(", {l}% loss");
        }
        out += &format!(
            "| {}{flags} | {} | {} MiB | {} / {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.3} | {:.3} | {:.1} | {:.0} | {} |\n",
            r.system,
            r.agents,
            r.size_bytes / (1024 * 1024),
            r.origin_mbit,
            r.host_mbit,
            r.bound_s,
            r.time_s,
            r.bound_ratio,
            median,
            r.origin_copies,
            r.agent_rx_copies,
            r.agent_cpu_s,
            r.agent_max_rss_mib,
            if r.verified { "yes" } else { "**NO**" },
        );
    }
    out
}
