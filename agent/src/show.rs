//! `shoal-agent status` and `shoal-agent swarm`: ask the running daemon's API and print
//! its answer as readable tables, or as the API's JSON with `--json`.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use shoal_cli::{human_bytes, unix_now};

use crate::api::client;
use crate::config::{Config, DEFAULT_API_PORT};
use crate::error::{Error, Result, exit};
use crate::status::{AgentStatus, SwarmView};

/// Which view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// This agent.
    Status,
    /// Every agent it hears of.
    Swarm,
}

/// Where the daemon's API is: `api` if given, else the config's `[api] listen` (a
/// wildcard address means this machine), else the default port on 127.0.0.1.
pub fn api_address(api: Option<SocketAddr>, config: Option<&Path>) -> Result<SocketAddr> {
    if let Some(a) = api {
        return Ok(a);
    }
    let Some(path) = config else {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_API_PORT)));
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))?;
    // The API's section alone: a config the daemon would refuse for another key still
    // says where the API is.
    let cfg = Config::parse_api(&text, &path.display().to_string())?;
    if !cfg.enabled {
        return Err(Error::new(
            exit::USAGE,
            format!(
                "the status API is off in {} (api.enabled = false)",
                path.display()
            ),
            "enable it and restart the agent, or pass --api",
        ));
    }
    let mut addr = cfg.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// Fetches `view` from the daemon at `addr` and returns what to print.
pub async fn fetch(
    view: View,
    addr: SocketAddr,
    token: Option<&str>,
    json: bool,
) -> Result<String> {
    let path = match view {
        View::Status => "/api/v1/status",
        View::Swarm => "/api/v1/swarm",
    };
    let body = client::get(addr, path, token).await?;
    if json {
        // Re-encoded (control characters escaped) and without invisible formatting: the
        // daemon may be another host's.
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                exit::UNAVAILABLE,
                format!("the agent at {addr} sent invalid JSON: {e}"),
                "is --api pointing at a shoal-agent?",
            )
        })?;
        let text = serde_json::to_string_pretty(&v).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .map(crate::transfer::report::clean_name)
            .collect();
        return Ok(lines.join("\n") + "\n");
    }
    let parse_err = |e: serde_json::Error| {
        Error::new(
            exit::UNAVAILABLE,
            format!("the agent at {addr} sent a view this version cannot read: {e}"),
            "use --json, or a shoal-agent of the daemon's version",
        )
    };
    let text = match view {
        View::Status => status_text(&serde_json::from_slice(&body).map_err(parse_err)?),
        View::Swarm => swarm_text(&serde_json::from_slice(&body).map_err(parse_err)?),
    };
    // The daemon may be another host's, and names come from peers: nothing the terminal
    // would act on gets through.
    Ok(text
        .lines()
        .map(crate::transfer::report::clean_name)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

fn percent(held: u32, count: u32) -> String {
    if count == 0 {
        return "–".into();
    }
    format!(
        "{:.0}%",
        (100.0 * f64::from(held.min(count)) / f64::from(count)).floor()
    )
}

fn ago(unix: u64) -> String {
    let now = unix_now();
    if unix > now {
        return format!("in {}", span(unix - now));
    }
    format!("{} ago", span(now - unix))
}

fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            line.push_str(cell);
            if c + 1 < r.len() {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// `shoal-agent status` as text.
pub fn status_text(st: &AgentStatus) -> String {
    let mut o = String::new();
    let mut rows = vec![
        vec![
            "agent".into(),
            format!(
                "{} (shoal-agent {}), up {}",
                st.name,
                st.agent_version,
                span(st.uptime_secs)
            ),
        ],
        vec![
            "channel".into(),
            format!("{} from {}", st.channel, st.origin),
        ],
        vec![
            "swarm".into(),
            match st.swarm_keys.split_first() {
                None => "public".into(),
                Some((used, [])) => format!("private (key {used})"),
                Some((used, others)) => {
                    format!("private (key {used}; also accepts {})", others.join(", "))
                }
            },
        ],
    ];
    match &st.current {
        Some(c) => {
            let state = if c.complete {
                "complete, seeding"
            } else {
                "downloading"
            };
            rows.push(vec![
                "release".into(),
                format!(
                    "{} (version {}, {}): {} of {} pieces ({}), {state}",
                    c.release,
                    c.version,
                    human_bytes(c.bytes),
                    c.pieces_held,
                    c.piece_count,
                    percent(c.pieces_held, c.piece_count)
                ),
            ]);
            rows.push(vec![
                "received".into(),
                format!(
                    "{} from peers, {} from the origin ({} origin fetches, {} failed)",
                    human_bytes(c.bytes_from_peers),
                    human_bytes(c.bytes_from_origin),
                    c.origin_fetches,
                    c.origin_failures
                ),
            ]);
            rows.push(vec!["uploaded".into(), human_bytes(c.bytes_uploaded)]);
        }
        None => rows.push(vec!["release".into(), "none yet".into()]),
    }
    let kept: Vec<&str> = st.kept.iter().map(|k| k.release.as_str()).collect();
    rows.push(vec![
        "kept".into(),
        if kept.is_empty() {
            "none yet".into()
        } else {
            kept.join(", ")
        },
    ]);
    let t = &st.totals;
    rows.push(vec![
        "since start".into(),
        format!(
            "{} from peers ({:.0}%), {} from the origin, {} uploaded, {} release(s) delivered",
            human_bytes(t.bytes_from_peers),
            100.0 * st.peer_share,
            human_bytes(t.bytes_from_origin),
            human_bytes(t.bytes_uploaded),
            st.releases_delivered
        ),
    ]);
    rows.push(vec![
        "last check".into(),
        match &st.last_poll {
            Some(p) if p.ok => format!("{}: {}", ago(p.at), p.message),
            Some(p) => format!("{}: failed: {}", ago(p.at), p.message),
            None => "not yet".into(),
        },
    ]);
    rows.push(vec![
        "checks".into(),
        format!(
            "{} ok, {} failed; next {}",
            st.polls_ok,
            st.polls_failed,
            st.next_poll_at.map_or("not scheduled".into(), ago)
        ),
    ]);
    if let Some(e) = &st.last_error {
        rows.push(vec![
            "last error".into(),
            format!("{}: {}", ago(e.at), e.message),
        ]);
        if !e.note.is_empty() {
            rows.push(vec![String::new(), e.note.clone()]);
        }
    }
    table(&mut o, &rows);
    if let Some(c) = &st.current {
        let _ = writeln!(
            o,
            "\npeers: {} connected, {} agents on the LAN",
            c.peers.len(),
            c.lan_members
        );
        if !c.peers.is_empty() {
            let mut rows = vec![vec![
                "PEER".to_owned(),
                "NAME".into(),
                "ADDRESS".into(),
                "HOLDS".into(),
                "FETCHING".into(),
                "SERVING".into(),
                "LINK".into(),
            ]];
            for p in &c.peers {
                rows.push(vec![
                    p.peer.chars().take(12).collect(),
                    if p.name.is_empty() {
                        "–".into()
                    } else {
                        p.name.clone()
                    },
                    p.address.map_or("–".into(), |a| a.to_string()),
                    percent(p.pieces_held, c.piece_count),
                    p.fetching.to_string(),
                    p.serving.to_string(),
                    if p.slow_link { "slow" } else { "fast" }.into(),
                ]);
            }
            table(&mut o, &rows);
        }
        if !c.bans.is_empty() {
            let _ = writeln!(o, "\nbans: {}", c.bans.len());
            let mut rows = vec![vec![
                "WHEN".to_owned(),
                "PEER".into(),
                "ADDRESSES".into(),
                "REASON".into(),
            ]];
            for b in &c.bans {
                let addrs: Vec<String> = b.addresses.iter().map(ToString::to_string).collect();
                rows.push(vec![
                    ago(b.at),
                    b.peer.chars().take(12).collect(),
                    addrs.join(", "),
                    b.reason.clone(),
                ]);
            }
            table(&mut o, &rows);
        }
    }
    o
}

/// `shoal-agent swarm` as text: an agent × release grid, then per-release figures.
pub fn swarm_text(v: &SwarmView) -> String {
    let mut o = String::new();
    if v.releases.is_empty() {
        let _ = writeln!(o, "no release yet: {} has not verified a manifest", v.name);
        return o;
    }
    let mut names: Vec<&str> = Vec::new();
    for a in &v.agents {
        if !names.contains(&a.name.as_str()) {
            names.push(&a.name);
        }
    }
    let mut header = vec!["AGENT".to_owned()];
    header.extend(v.releases.iter().map(|r| r.release.clone()));
    let mut rows = vec![header];
    for name in &names {
        let mut row = vec![name.to_string()];
        let me = v.agents.iter().any(|a| a.name == *name && a.this_agent);
        if me {
            row[0].push_str(" (this agent)");
        }
        for r in &v.releases {
            row.push(
                v.agents
                    .iter()
                    .find(|a| a.name == *name && a.release == r.release)
                    .map_or("–".into(), |a| percent(a.pieces_held, a.piece_count)),
            );
        }
        rows.push(row);
    }
    table(&mut o, &rows);
    let _ = writeln!(o);
    let mut rows = vec![vec![
        "RELEASE".to_owned(),
        "AGENTS".into(),
        "COMPLETE".into(),
        "FROM PEERS".into(),
        "FROM ORIGIN".into(),
        "OFFLOAD".into(),
    ]];
    for r in &v.releases {
        rows.push(vec![
            r.release.clone(),
            r.agents.to_string(),
            r.complete_agents.to_string(),
            human_bytes(r.bytes_from_peers),
            human_bytes(r.bytes_from_origin),
            format!("{:.0}%", r.offload_percent.floor()),
        ]);
    }
    table(&mut o, &rows);
    let _ = writeln!(
        o,
        "\nsaved: {} the origin did not send ({:.0}% of what these agents received), about \
         {:.2} {} at {} {} per GB",
        human_bytes(v.origin_bytes_saved),
        v.offload_percent.floor(),
        v.money_saved,
        v.money.currency,
        v.money.price_per_gb,
        v.money.currency
    );
    let _ = writeln!(
        o,
        "(peers' figures are what they report, shown as told; this agent hears of the peers \
         it is connected to and those it met in the last 10 minutes)"
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Money, StatusHub};

    fn hub() -> StatusHub {
        let money = Money {
            price_per_gb: 0.05,
            currency: "USD".into(),
        };
        StatusHub::new("desk-7", "stable", "https://u.example", money)
    }

    #[test]
    fn status_says_whether_the_swarm_is_private_and_under_which_key() {
        let public = status_text(&hub().status());
        assert!(
            public.contains("swarm") && public.contains("public"),
            "{public}"
        );
        let private = hub().with_swarm_keys(vec!["f5c1acb4".into(), "0badcafe".into()]);
        let text = status_text(&private.status());
        assert!(
            text.contains("private (key f5c1acb4; also accepts 0badcafe)"),
            "{text}"
        );
    }
}
