//! The config a vendor's package ships (both layouts: Debian and Windows) is one the
//! agent accepts, holds the vendor's values, and still lists every key of the sample.

use std::path::PathBuf;

use shoal_agent::config::Config;
use shoal_publisher::package::{PackageOptions, deb, msi};

fn options(ca: bool) -> PackageOptions {
    PackageOptions {
        name: "acme-updates".into(),
        version: "1.0.0".into(),
        maintainer: "Acme Ops <ops@acme.example>".into(),
        summary: "Acme driver updates".into(),
        trust: PathBuf::from("unused"),
        origin: "https://updates.acme.example".into(),
        channel: "beta".into(),
        origin_ca: ca.then(|| PathBuf::from("ca.pem")),
        agent: PathBuf::from("unused"),
        peer_port: 7420,
        api_port: 0,
        out: PathBuf::from("unused"),
    }
}

fn keys(text: &str) -> Vec<String> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = s.to_owned();
        } else if line.contains(" = ") {
            // Set, or shown commented out at its default.
            let key = line
                .trim_start_matches("# ")
                .split('=')
                .next()
                .unwrap()
                .trim();
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.push(format!("{section}.{key}"));
            }
        }
    }
    out
}

#[test]
fn the_shipped_config_parses_and_keeps_every_key() {
    for (layout, windows) in [
        (deb::layout("acme-updates"), false),
        (msi::layout("acme-updates"), true),
    ] {
        for ca in [false, true] {
            let o = options(ca);
            let text = o.config_text(&layout);
            let dir = shoal_tests::TempDir::new("shipped-config");
            let file = dir.join("agent.toml");
            std::fs::write(&file, &text).unwrap();
            let c = Config::load(Some(&file)).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(c.origin, "https://updates.acme.example");
            assert_eq!(c.channel, "beta");
            assert_eq!(c.listen.port(), 7420);
            assert_eq!(c.api.listen.to_string(), "127.0.0.1:7421");
            assert_eq!(c.mdns.group, "acme-updates");
            assert_eq!(c.origin_ca.as_os_str().is_empty(), !ca);
            // Windows: relative to the config's folder, wherever %ProgramData% is.
            let (state, trust_dir) = if windows {
                (dir.join("state"), dir.path().to_owned())
            } else {
                (
                    PathBuf::from("/var/lib/acme-updates"),
                    PathBuf::from("/usr/share/acme-updates"),
                )
            };
            assert_eq!(c.state_dir, state);
            assert_eq!(c.trust.parent(), Some(trust_dir.as_path()));
            // The agent's own defaults apply to what the package does not set.
            assert_eq!(c.poll_interval_secs, Config::default().poll_interval_secs);
            assert!(text.contains("\n# poll_interval_secs = "), "{text}");
            assert_eq!(
                keys(&text),
                keys(shoal_publisher::package::SAMPLE_CONFIG),
                "every key of the sample, in its order"
            );
        }
    }
}
