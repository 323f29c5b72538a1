//! The daemon's configuration: a TOML file in which every key has a default, so an empty
//! file (or none) is valid; what a vendor's package ships is the origin URL, the channel
//! and the trust document. Unknown keys are errors that name the known ones.
//! `packaging/agent.toml` lists every key with its default (a test checks it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result, exit};
use crate::link::Link;

/// mDNS settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MdnsConfig {
    /// Discover peers over mDNS.
    pub enabled: bool,
    /// Interfaces to use; empty means all.
    pub interfaces: Vec<String>,
    /// Agents meet only agents with the same group tag.
    pub group: String,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            enabled: true,
            interfaces: Vec::new(),
            group: "default".into(),
        }
    }
}

/// A private swarm (PROTOCOL.md §6.8): with a key file, peers prove they hold the
/// organisation's swarm key before anything else is said, and every byte between them is
/// encrypted; discovery then reveals nothing to hosts without the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivateConfig {
    /// The swarm key file (`shoal-agent swarm-key new` writes one; not readable by other
    /// users); empty for a public swarm.
    pub key_file: PathBuf,
}

/// The local status API, `/metrics` and the dashboard.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve them.
    pub enabled: bool,
    /// Address to serve them on; loopback keeps them on this machine.
    pub listen: SocketAddr,
    /// Bearer token required from other hosts (at least 16 characters); required when
    /// `listen` is not a loopback address. Clients on this machine need none.
    pub token: String,
    /// Price of a GB sent by the origin, for the dashboard's savings.
    pub price_per_gb: f64,
    /// Its currency (up to 8 characters), e.g. `USD`.
    pub currency: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_API_PORT)),
            token: String::new(),
            price_per_gb: 0.05,
            currency: "USD".into(),
        }
    }
}

/// The status API's default port (the peer port's neighbour).
pub const DEFAULT_API_PORT: u16 = 7401;

/// Where `run`, `status` and `swarm` look for a config file when none is given.
pub const DEFAULT_CONFIG: &str = "/etc/shoal/agent.toml";

/// Everything `shoal-agent run` reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Origin base URL (https://…). Set by the vendor's package.
    pub origin: String,
    /// Channel to follow.
    pub channel: String,
    /// The vendor's trust document.
    pub trust: PathBuf,
    /// Piece store and agent state.
    pub state_dir: PathBuf,
    /// Where verified releases are delivered, one directory per release version.
    pub releases_dir: PathBuf,
    /// Address for peer connections.
    pub listen: SocketAddr,
    /// Peers to dial, for networks without multicast.
    pub peers: Vec<SocketAddr>,
    /// CA certificate (PEM) for the origin, the only one trusted for it when set (a private
    /// origin); empty for the system's roots.
    pub origin_ca: PathBuf,
    /// Accept a plain-HTTP origin (tests only).
    pub danger_allow_http: bool,
    /// Seconds between channel checks (jittered by ±10%).
    pub poll_interval_secs: u64,
    /// Delivered releases to keep.
    pub keep_releases: usize,
    /// Shell command (`sh -c`; `cmd /C` on Windows) run once a release verified, in its
    /// directory, with `SHOAL_RELEASE_DIR` and `SHOAL_RELEASE_VERSION` set; empty for none.
    pub install_command: String,
    /// Longest wait for LAN peers before the first origin fetch, in seconds (it ends
    /// sooner once peers have joined and no new one has for 0.4 s).
    pub origin_grace_secs: f64,
    /// Whether this machine's link is slow next to its neighbours' (`auto`, `fast`,
    /// `slow`): a slow agent leaves origin fetches to others where there are enough.
    pub link: Link,
    /// mDNS discovery.
    pub mdns: MdnsConfig,
    /// This agent's name in peers' swarm views; empty for the host name.
    pub name: String,
    /// The status API and dashboard.
    pub api: ApiConfig,
    /// Private swarm mode.
    pub private: PrivateConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            origin: String::new(),
            channel: "stable".into(),
            trust: PathBuf::from("/usr/share/shoal/trust.json"),
            state_dir: PathBuf::from("/var/lib/shoal"),
            releases_dir: PathBuf::from("/var/lib/shoal/releases"),
            listen: SocketAddr::from(([0, 0, 0, 0], 7400)),
            peers: Vec::new(),
            origin_ca: PathBuf::new(),
            danger_allow_http: false,
            poll_interval_secs: 3600,
            keep_releases: 2,
            install_command: String::new(),
            origin_grace_secs: 2.0,
            link: Link::Auto,
            mdns: MdnsConfig::default(),
            name: String::new(),
            api: ApiConfig::default(),
            private: PrivateConfig::default(),
        }
    }
}

impl Config {
    /// Parses TOML text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config> {
        let c: Config = toml::from_str(text).map_err(|e| {
            Error::new(
                exit::USAGE,
                format!("{source}: {e}"),
                "see packaging/agent.toml for every key and its default",
            )
        })?;
        c.validate(source)?;
        Ok(c)
    }

    /// Parses only the `[api]` section of TOML text (defaults when it is missing), for
    /// clients that need to know where the API is.
    pub fn parse_api(text: &str, source: &str) -> Result<ApiConfig> {
        let bad = |e: String| {
            Error::new(
                exit::USAGE,
                format!("{source}: {e}"),
                "see packaging/agent.toml for every key and its default",
            )
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        match table.get("api") {
            None => Ok(ApiConfig::default()),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| bad(e.to_string())),
        }
    }

    /// Reads `path`, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        match path {
            None => {
                let c = Config::default();
                c.validate("defaults")?;
                Ok(c)
            }
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io(p.display(), e))?;
                let mut c = Config::parse(&text, &p.display().to_string())?;
                // Relative paths are relative to the config file's directory (so a
                // package can ship a config that works wherever it was installed).
                let base = p.parent().unwrap_or(Path::new("."));
                for path in [
                    &mut c.trust,
                    &mut c.state_dir,
                    &mut c.releases_dir,
                    &mut c.origin_ca,
                    &mut c.private.key_file,
                ] {
                    if !path.as_os_str().is_empty() && path.is_relative() {
                        *path = base.join(&*path);
                    }
                }
                Ok(c)
            }
        }
    }

    fn validate(&self, source: &str) -> Result<()> {
        let bad = |m: String| Error::new(exit::USAGE, format!("{source}: {m}"), "");
        if self.origin.is_empty() {
            return Err(Error::new(
                exit::USAGE,
                format!("{source}: no origin is configured"),
                "set `origin = \"https://…\"` (the vendor's package normally ships it)",
            ));
        }
        if self.poll_interval_secs == 0 || self.poll_interval_secs > 7 * 24 * 3600 {
            return Err(bad("poll_interval_secs must be 1 s to 7 days".into()));
        }
        if self.keep_releases == 0 {
            return Err(bad("keep_releases must be at least 1".into()));
        }
        if !(0.0..=600.0).contains(&self.origin_grace_secs) {
            return Err(bad("origin_grace_secs must be 0 to 600".into()));
        }
        if self.name.len() > shoal_protocol::limits::MAX_PEER_NAME_LEN {
            return Err(bad(format!(
                "name must be at most {} bytes",
                shoal_protocol::limits::MAX_PEER_NAME_LEN
            )));
        }
        let api = &self.api;
        if api.enabled && !api.listen.ip().is_loopback() && api.token.len() < 16 {
            return Err(Error::new(
                exit::USAGE,
                format!(
                    "{source}: api.listen {} is reachable from other hosts, but api.token is \
                     {}",
                    api.listen,
                    if api.token.is_empty() {
                        "not set"
                    } else {
                        "shorter than 16 characters"
                    }
                ),
                "set api.token to a long random string (e.g. `openssl rand -hex 32`), or \
                 listen on 127.0.0.1",
            ));
        }
        if !api.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "api.token must be printable ASCII without spaces (it travels in an HTTP header)"
                    .into(),
            ));
        }
        if !api.price_per_gb.is_finite() || api.price_per_gb < 0.0 {
            return Err(bad("api.price_per_gb must be 0 or more".into()));
        }
        if api.currency.chars().count() > 8 || api.currency.chars().any(char::is_control) {
            return Err(bad(
                "api.currency must be up to 8 printable characters".into()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_lists_every_key_with_its_default() {
        let sample = include_str!("../../packaging/agent.toml");
        let parsed: Config = toml::from_str(sample).expect("sample parses");
        assert_eq!(parsed, Config::default());
        // Every field appears in the sample (a new key must be documented there).
        for key in [
            "origin",
            "channel",
            "trust",
            "state_dir",
            "releases_dir",
            "listen",
            "peers",
            "origin_ca",
            "danger_allow_http",
            "poll_interval_secs",
            "keep_releases",
            "install_command",
            "origin_grace_secs",
            "link",
            "[mdns]",
            "enabled",
            "interfaces",
            "group",
            "[private]",
            "key_file",
        ] {
            assert!(sample.contains(&format!("\n{key}")), "sample lacks {key}");
        }
    }

    #[test]
    fn unknown_keys_and_missing_origin_are_errors_with_hints() {
        let e =
            Config::parse("origin = \"https://x\"\npoll_intervall = 5\n", "t.toml").unwrap_err();
        assert!(e.message.contains("poll_intervall"), "{e}");
        assert!(
            e.message.contains("poll_interval_secs"),
            "the error lists known keys: {e}"
        );
        let e = Config::parse("channel = \"beta\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("no origin is configured"));
        let c = Config::parse("origin = \"https://u.example\"\n", "t.toml").unwrap();
        assert_eq!(c.channel, "stable");
        assert!(Config::parse("origin = \"https://u\"\nkeep_releases = 0\n", "t").is_err());
    }

    /// What an admin (or a broken package) may put in the config file: any text,
    /// mutations of the sample (lines dropped, duplicated, cut, bytes changed) is parsed
    /// without a panic, into a config or an error naming the file. (A property test, not
    /// a cargo-fuzz target: the agent's IO dependencies under the sanitizer build would
    /// cost CI minutes; `docs/SECURITY.md` records both.)
    mod arbitrary_text {
        use super::*;
        use proptest::prelude::*;

        const SAMPLE: &str = include_str!("../../packaging/agent.toml");

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_text_parses_or_is_refused(text in ".{0,400}") {
                if let Err(e) = Config::parse(&text, "agent.toml") {
                    prop_assert!(e.message.contains("agent.toml"), "{}", e.message);
                }
            }

            #[test]
            fn mutated_samples_parse_or_are_refused(
                cut in 0..SAMPLE.len(),
                at in 0..SAMPLE.len(),
                byte in any::<u8>(),
                drop_line in 0usize..80,
            ) {
                let mut bytes = SAMPLE.as_bytes()[..cut.max(1)].to_vec();
                if let Some(b) = bytes.get_mut(at) {
                    *b = byte;
                }
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let text: String = text
                    .lines()
                    .enumerate()
                    .filter(|(i, _)| *i != drop_line)
                    .map(|(_, l)| format!("{l}\n"))
                    .collect();
                if let Err(e) = Config::parse(&text, "agent.toml") {
                    prop_assert!(e.message.contains("agent.toml"), "{}", e.message);
                }
            }
        }
    }
}
