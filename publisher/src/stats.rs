//! `shoal-publisher stats`: what an origin sent, per release, read from its `/metrics`
//! (`shoal-publisher serve`'s), and, given how many endpoints took each release, the
//! share of their bytes the origin did not have to send.
//!
//! Offload is `1 − sent / (endpoints × release size)`, clamped to 0–100 %: without Shoal
//! every endpoint would have downloaded the whole release from the origin.

use std::collections::BTreeMap;

use serde::Serialize;

/// Largest `/metrics` answer read.
pub const MAX_METRICS: usize = 16 << 20;

/// One release as the origin counted it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseStats {
    /// Channel.
    pub channel: String,
    /// Release label.
    pub release: String,
    /// Bytes in its artifacts (0 if the origin did not say).
    pub size: u64,
    /// Artifact and index bytes the origin sent for it.
    pub sent: u64,
    /// `sent / size`: how many whole copies left the origin.
    pub copies: Option<f64>,
    /// Percent of the endpoints' bytes the origin did not send (with `--endpoints`).
    pub offload_percent: Option<f64>,
}

/// The origin's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OriginStats {
    /// Body bytes sent, every file.
    pub sent: u64,
    /// Requests by kind (`whole`, `range`, `not_modified`, `other`).
    pub requests: BTreeMap<String, u64>,
    /// Unix time the server started.
    pub started_at: Option<u64>,
    /// Per release, by channel then label.
    pub releases: Vec<ReleaseStats>,
}

/// One sample of a Prometheus text exposition: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the samples of a Prometheus text exposition (comments skipped).
pub fn parse_samples(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}: {line}", n + 1);
        let name_end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '}' {
                    end = Some(i);
                    break;
                }
                if c == ',' || c == ' ' {
                    continue;
                }
                // key="value"
                let key_start = i;
                let mut key_end = i;
                for (j, c) in chars.by_ref() {
                    if c == '=' {
                        key_end = j;
                        break;
                    }
                }
                let key = r[key_start..key_end].trim().to_owned();
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(bad("a label value is not quoted"));
                }
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => return Err(bad("a label value ends in a backslash")),
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err(bad("a label value is not closed"));
                }
                labels.insert(key, value);
            }
            let end = end.ok_or_else(|| bad("labels are not closed"))?;
            rest = &r[end + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| bad("the value is not a number"))?;
        out.push((name, labels, value));
    }
    Ok(out)
}

/// The origin's figures from its `/metrics` text; `endpoints` computes the offload.
pub fn from_metrics(text: &str, endpoints: Option<u64>) -> Result<OriginStats, String> {
    let samples = parse_samples(text)?;
    if !samples
        .iter()
        .any(|(n, _, _)| n == "shoal_origin_sent_bytes_total")
    {
        return Err("no shoal_origin_sent_bytes_total: not a shoal-publisher serve origin".into());
    }
    let mut stats = OriginStats {
        sent: 0,
        requests: BTreeMap::new(),
        started_at: None,
        releases: Vec::new(),
    };
    let mut releases: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let key = |l: &BTreeMap<String, String>| {
        (
            l.get("channel").cloned().unwrap_or_default(),
            l.get("release").cloned().unwrap_or_default(),
        )
    };
    for (name, labels, value) in &samples {
        let v = *value as u64;
        match name.as_str() {
            "shoal_origin_sent_bytes_total" => stats.sent = v,
            "shoal_origin_start_time_seconds" => stats.started_at = Some(v),
            "shoal_origin_requests_total" => {
                let kind = labels.get("kind").cloned().unwrap_or_default();
                stats.requests.insert(kind, v);
            }
            "shoal_origin_release_sent_bytes_total" => {
                releases.entry(key(labels)).or_default().1 = v
            }
            "shoal_origin_release_size_bytes" => releases.entry(key(labels)).or_default().0 = v,
            _ => {}
        }
    }
    for ((channel, release), (size, sent)) in releases {
        let copies = (size > 0).then(|| sent as f64 / size as f64);
        let offload_percent = endpoints.filter(|n| *n > 0 && size > 0).map(|n| {
            let plain = n as f64 * size as f64;
            (100.0 * (1.0 - sent as f64 / plain)).clamp(0.0, 100.0)
        });
        stats.releases.push(ReleaseStats {
            channel,
            release,
            size,
            sent,
            copies,
            offload_percent,
        });
    }
    Ok(stats)
}

/// The figures as a table; releases nothing was sent for are left out.
pub fn to_text(s: &OriginStats, endpoints: Option<u64>) -> String {
    use std::fmt::Write;
    let human = crate::progress::human_bytes;
    let mut out = String::new();
    let total: u64 = s.requests.values().sum();
    let _ = writeln!(
        out,
        "origin sent {} in {total} requests ({} whole files, {} ranges, {} not modified){}",
        human(s.sent),
        s.requests.get("whole").copied().unwrap_or(0),
        s.requests.get("range").copied().unwrap_or(0),
        s.requests.get("not_modified").copied().unwrap_or(0),
        s.started_at
            .map(|t| format!(
                " since it started {} s ago",
                shoal_cli::unix_now().saturating_sub(t)
            ))
            .unwrap_or_default()
    );
    let mut rows = vec![vec![
        "CHANNEL".to_owned(),
        "RELEASE".into(),
        "SIZE".into(),
        "SENT".into(),
        "COPIES".into(),
    ]];
    if let Some(n) = endpoints {
        rows[0].push(format!("OFFLOAD ({n} endpoints)"));
    }
    for r in s.releases.iter().filter(|r| r.sent > 0) {
        let mut row = vec![
            r.channel.clone(),
            r.release.clone(),
            if r.size > 0 {
                human(r.size)
            } else {
                "?".into()
            },
            human(r.sent),
            r.copies.map_or("?".into(), |c| format!("{c:.2}")),
        ];
        if endpoints.is_some() {
            row.push(r.offload_percent.map_or("?".into(), |p| format!("{p:.1}%")));
        }
        rows.push(row);
    }
    if rows.len() == 1 {
        let _ = writeln!(out, "no release bytes sent yet");
        return out;
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP shoal_origin_sent_bytes_total x
# TYPE shoal_origin_sent_bytes_total counter
shoal_origin_sent_bytes_total 2500
shoal_origin_start_time_seconds 1700000000
shoal_origin_release_sent_bytes_total{channel=\"stable\",release=\"2.4.1\"} 2000
shoal_origin_release_size_bytes{channel=\"stable\",release=\"2.4.1\"} 1000
shoal_origin_release_size_bytes{channel=\"beta\",release=\"3.0 \\\"rc\\\"\"} 10
shoal_origin_requests_total{kind=\"range\"} 7
shoal_origin_requests_total{kind=\"whole\"} 2
";

    #[test]
    fn offload_is_what_the_endpoints_did_not_take_from_the_origin() {
        let s = from_metrics(TEXT, Some(40)).unwrap();
        assert_eq!(s.sent, 2500);
        assert_eq!(s.requests["range"], 7);
        let stable = s.releases.iter().find(|r| r.channel == "stable").unwrap();
        assert_eq!((stable.size, stable.sent), (1000, 2000));
        assert_eq!(stable.copies, Some(2.0));
        assert_eq!(stable.offload_percent, Some(95.0));
        let beta = s.releases.iter().find(|r| r.channel == "beta").unwrap();
        assert_eq!(beta.release, "3.0 \"rc\"");
        // More sent than every endpoint's full copy: 0 %, never negative.
        let s = from_metrics(TEXT, Some(1)).unwrap();
        assert_eq!(s.releases[1].offload_percent, Some(0.0));
        let text = to_text(&from_metrics(TEXT, Some(40)).unwrap(), Some(40));
        assert!(text.contains("2.00"), "{text}");
        assert!(text.contains("95.0%"), "{text}");
        assert!(!text.contains("beta"), "nothing was sent for beta: {text}");
    }

    #[test]
    fn another_server_or_garbage_is_refused_plainly() {
        assert!(
            from_metrics("up 1\n", None)
                .unwrap_err()
                .contains("not a shoal-publisher")
        );
        assert!(parse_samples("x{a=\"b} 1\n").is_err());
        assert!(parse_samples("x{a=b} 1\n").is_err());
        assert!(parse_samples("x 1e3\n").unwrap()[0].2 == 1000.0);
    }
}
