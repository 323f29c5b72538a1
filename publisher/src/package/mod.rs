//! `shoal-publisher agent-package`: the vendor's own agent package, carrying its trust
//! document, origin URL and channel, ready for an endpoint's package manager.
//!
//! **One self-contained package per vendor.** A vendor's package owns only paths named
//! after it: the agent binary under `/usr/lib/<name>/`, its config `/etc/<name>/agent.toml`,
//! its trust document under `/usr/share/<name>/`, its service `<name>.service`, its state
//! `/var/lib/<name>`, and a command `/usr/bin/<name>` (the agent with that config). Two
//! vendors' packages share no file, so installing, upgrading or removing one never
//! touches the other, and each vendor ships the agent version it tested. Each runs its
//! own service, on its own ports (derived from the name unless given), and announces its
//! own mDNS group (the name), so one vendor's agents never dial another's. What that
//! costs, one process and one port pair per vendor, is the price of that isolation
//! (docs/ARCHITECTURE.md, "Packages").
//!
//! | module | builds |
//! |---|---|
//! | [`deb`] | a Debian package (`dpkg-deb`), with a hardened systemd unit |
//! | [`msi`] | a Windows Installer package (`wixl`), with a Windows service |

pub mod deb;
pub mod msi;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The agent's sample config: every key, its comment and its default.
pub const SAMPLE_CONFIG: &str = include_str!("../../../packaging/agent.toml");

/// The flags of `shoal-publisher agent-package`.
#[derive(clap::Args, Debug)]
pub struct PackageArgs {
    /// Package format.
    #[arg(long, value_enum, default_value_t = Format::Deb)]
    pub format: Format,
    /// Package, service and command name, e.g. acme-updates.
    #[arg(long)]
    pub name: String,
    /// Package version, e.g. 1.0.0 (raise it for each package you ship).
    #[arg(long)]
    pub version: String,
    /// Maintainer, e.g. 'Acme Ops <ops@acme.example>'.
    #[arg(long)]
    pub maintainer: String,
    /// One line saying what it keeps up to date, e.g. 'Acme driver updates'.
    #[arg(long)]
    pub summary: String,
    /// The trust document agents start from (keys/trust/N.json).
    #[arg(long)]
    pub trust: PathBuf,
    /// The origin's base URL (https://…).
    #[arg(long)]
    pub origin: String,
    /// The channel agents follow.
    #[arg(long, default_value = "stable")]
    pub channel: String,
    /// An extra CA certificate (PEM) agents trust for the origin.
    #[arg(long)]
    pub origin_ca: Option<PathBuf>,
    /// The shoal-agent binary to ship (shoal-agent.exe for msi); default: the one
    /// beside this program.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Peer port; default derived from --name (7402-9398).
    #[arg(long, default_value_t = 0)]
    pub peer_port: u16,
    /// Status API port on 127.0.0.1; default the peer port + 1.
    #[arg(long, default_value_t = 0)]
    pub api_port: u16,
    /// Directory to write the package to.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// Package formats `agent-package` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A Debian package (.deb) with a systemd service.
    Deb,
    /// A Windows Installer package (.msi) with a Windows service (needs wixl).
    Msi,
}

/// `shoal-publisher agent-package`: builds the package and says where it is.
pub fn run(a: PackageArgs) -> Result<()> {
    let exe = match a.format {
        Format::Deb => "shoal-agent",
        Format::Msi => "shoal-agent.exe",
    };
    let agent = a.agent.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join(exe)))
            .unwrap_or_else(|| PathBuf::from(exe))
    });
    let o = PackageOptions {
        name: a.name,
        version: a.version,
        maintainer: a.maintainer,
        summary: a.summary,
        trust: a.trust,
        origin: a.origin,
        channel: a.channel,
        origin_ca: a.origin_ca,
        agent,
        peer_port: a.peer_port,
        api_port: a.api_port,
        out: a.out,
    };
    let built = match a.format {
        Format::Deb => deb::build(&o)?,
        Format::Msi => msi::build(&o)?,
    };
    println!("wrote {}", built.display());
    println!(
        "service {n}: peers on port {p}, status on http://127.0.0.1:{api}/",
        n = o.name,
        p = o.peer_port(),
        api = o.api_port()
    );
    Ok(())
}

/// What a vendor's agent package carries.
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// Package, service and command name, e.g. `acme-updates`.
    pub name: String,
    /// Package version, e.g. `1.0.0`.
    pub version: String,
    /// Who maintains it, e.g. `Acme Ops <ops@acme.example>`.
    pub maintainer: String,
    /// One line saying what it updates.
    pub summary: String,
    /// The trust document agents start from.
    pub trust: PathBuf,
    /// The origin's base URL.
    pub origin: String,
    /// The channel to follow.
    pub channel: String,
    /// An extra CA certificate (PEM) for the origin, if it needs one.
    pub origin_ca: Option<PathBuf>,
    /// The `shoal-agent` binary to ship.
    pub agent: PathBuf,
    /// Peer port (0: derived from the name).
    pub peer_port: u16,
    /// Status API port on 127.0.0.1 (0: the peer port + 1).
    pub api_port: u16,
    /// Where the package is written.
    pub out: PathBuf,
}

impl PackageOptions {
    /// Checks the options a vendor gave, with errors that say what to change.
    pub fn validate(&self) -> Result<()> {
        let n = &self.name;
        let name_ok = n.len() >= 2
            && n.len() <= 64
            && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(Error::usage(
                format!("--name {n:?} is not a usable package name"),
                "use 2 to 64 lowercase letters, digits and dashes, e.g. acme-updates",
            ));
        }
        if ["shoal", "shoal-agent", "shoal-publisher"].contains(&n.as_str()) {
            return Err(Error::usage(
                format!("--name {n:?} is Shoal's own"),
                "name the package after your product, e.g. acme-updates",
            ));
        }
        let v = &self.version;
        let version_ok = v.starts_with(|c: char| c.is_ascii_digit())
            && v.len() <= 64
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c));
        if !version_ok {
            return Err(Error::usage(
                format!("--version {v:?} is not a package version"),
                "start with a digit; letters, digits and . + ~ - only, e.g. 1.4.0",
            ));
        }
        // The origin lands in a TOML string; the summary in a systemd unit, a manual
        // page, a control file and Windows Installer fields: only plain characters.
        let url_ok = self.origin.len() > "https://".len()
            && self.origin.starts_with("https://")
            && self
                .origin
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"\\'<>`{}|^".contains(&b));
        if !url_ok {
            return Err(Error::usage(
                format!("--origin {:?} is not a plain https:// URL", self.origin),
                "agents fetch only over HTTPS, e.g. https://updates.acme.example (percent-encode \
                 anything unusual)",
            ));
        }
        let plain = |s: &str| {
            !s.trim().is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || " -_.,:;()/+&'@<>".contains(c))
        };
        if !plain(&self.maintainer) || !self.maintainer.contains('<') {
            return Err(Error::usage(
                "--maintainer needs a name and an address, in plain characters",
                "e.g. --maintainer 'Acme Ops <ops@acme.example>'",
            ));
        }
        if !plain(&self.summary) || self.summary.contains(['<', '>']) || self.summary.len() > 80 {
            return Err(Error::usage(
                "--summary must be one line of up to 80 letters, digits, spaces and - _ . , : ; ( ) / + & '",
                "e.g. --summary 'Acme driver updates'",
            ));
        }
        let (peer, api) = (self.peer_port(), self.api_port());
        if peer < 1024 || api < 1024 || peer == api {
            return Err(Error::usage(
                format!("ports {peer} (peers) and {api} (API) do not work"),
                "the service has no privileges: pick two different ports from 1024 up",
            ));
        }
        shoal_protocol::Name::new(&self.channel).map_err(|e| {
            Error::usage(format!("--channel {:?}: {e}", self.channel), "e.g. stable")
        })?;
        let trust = read(&self.trust)?;
        shoal_protocol::VerifiedTrust::anchor(&trust).map_err(|e| {
            Error::usage(
                format!("{} is not a trust document: {e}", self.trust.display()),
                "pass the keys/trust/N.json that `shoal-publisher keygen` or `rotate-key` wrote",
            )
        })?;
        if let Some(ca) = &self.origin_ca {
            let pem = read(ca)?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::usage(
                    format!("{} is not a PEM certificate", ca.display()),
                    "pass the CA certificate agents should trust for the origin",
                ));
            }
        }
        if !self.agent.is_file() {
            return Err(Error::usage(
                format!("no agent binary at {}", self.agent.display()),
                "build it (`cargo build --release -p shoal-agent`) or pass --agent PATH",
            ));
        }
        Ok(())
    }

    /// The peer port: given, or derived from the name (7402-9398, even; 7400 and 7401
    /// are the agent's own defaults), so two vendors' packages rarely pick the same one.
    pub fn peer_port(&self) -> u16 {
        if self.peer_port != 0 {
            return self.peer_port;
        }
        let h = shoal_protocol::Digest::of(self.name.as_bytes()).0;
        7402 + 2 * (u16::from_be_bytes([h[0], h[1]]) % 999)
    }

    /// The status API's port: given, or the peer port + 1 (0 when there is none, which
    /// validation refuses).
    pub fn api_port(&self) -> u16 {
        if self.api_port != 0 {
            self.api_port
        } else {
            self.peer_port().checked_add(1).unwrap_or(0)
        }
    }

    /// The agent's config file as shipped: the sample with every key and its comment
    /// (`packaging/agent.toml`), this package's values in place of the defaults, the
    /// system's paths from `layout`. The package keeps an admin's edits across upgrades.
    pub fn config_text(&self, layout: &Layout) -> String {
        let n = &self.name;
        let ca = if self.origin_ca.is_some() {
            layout.origin_ca.as_str()
        } else {
            ""
        };
        // (section, key) → value, as TOML; literal strings keep Windows paths readable.
        let values = [
            ("", "origin", format!("{:?}", self.origin)),
            ("", "channel", format!("{:?}", self.channel)),
            ("", "trust", format!("'{}'", layout.trust)),
            ("", "origin_ca", format!("'{ca}'")),
            ("", "state_dir", format!("'{}'", layout.state)),
            ("", "releases_dir", format!("'{}'", layout.releases)),
            ("", "listen", format!("\"0.0.0.0:{}\"", self.peer_port())),
            ("mdns", "group", format!("{n:?}")),
            (
                "api",
                "listen",
                format!("\"127.0.0.1:{}\"", self.api_port()),
            ),
        ];
        let mut out = format!(
            "# {n}: the Shoal agent that keeps this machine's {summary} up to date.\n\
             # This package set origin, channel, trust, the paths, the ports and the mDNS\n\
             # group; every other key is shown, commented out, with its default. Relative\n\
             # paths are relative to this file's directory. After a change: {restart}\n\
             # Status: `{status}`; dashboard: http://127.0.0.1:{api}/\n\
             # Peers connect on port {peer}: open it to the LAN in a host firewall.\n\n",
            summary = self.summary,
            restart = layout.restart,
            status = layout.status,
            api = self.api_port(),
            peer = self.peer_port(),
        );
        let mut section = String::new();
        // The sample's own header speaks of the sample; this file has its own.
        let body = SAMPLE_CONFIG
            .split_once("\n\n")
            .map_or(SAMPLE_CONFIG, |(_, rest)| rest);
        for line in body.lines() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                section = name.to_owned();
            }
            let key = t.split('=').next().unwrap_or("").trim();
            let replaced = (!t.starts_with('#') && t.contains('='))
                .then(|| values.iter().find(|(s, k, _)| *s == section && *k == key))
                .flatten();
            match replaced {
                Some((_, k, v)) => out.push_str(&format!("{k} = {v}\n")),
                // Keys the package does not set stay at the agent's default (commented
                // out, so a later agent's default applies, not today's).
                None if !t.starts_with('#') && t.contains('=') => {
                    out.push_str("# ");
                    out.push_str(line);
                    out.push('\n');
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Where a package puts what the agent's config names (TOML literal strings: no
/// escapes, so Windows paths stay readable).
#[derive(Debug, Clone)]
pub struct Layout {
    /// The trust document.
    pub trust: String,
    /// The origin's CA certificate, if shipped.
    pub origin_ca: String,
    /// The agent's state.
    pub state: String,
    /// Delivered releases.
    pub releases: String,
    /// How to restart the service.
    pub restart: String,
    /// How an admin runs `status` with this config.
    pub status: String,
}

/// The architecture an executable was built for, in Debian's names (`amd64`,
/// `arm64`), read from its header: a Windows (PE) file when `windows`, else a Linux
/// (ELF) one. The wrong kind of binary is refused before it is packaged.
pub fn check_executable(path: &Path, windows: bool) -> Result<String> {
    let head = std::fs::File::open(path)
        .and_then(|f| {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, 4096), &mut b)?;
            Ok(b)
        })
        .unwrap_or_default();
    let u16_at = |i: usize| head.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let arch = if windows {
        let pe = head
            .get(0x3c..0x40)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        match pe {
            Some(at) if head.starts_with(b"MZ") && head.get(at..at + 4) == Some(b"PE\0\0") => {
                match u16_at(at + 4) {
                    Some(0x8664) => Some("amd64"),
                    Some(0xaa64) => Some("arm64"),
                    _ => None,
                }
            }
            _ => None,
        }
    } else if head.starts_with(b"\x7fELF") {
        match u16_at(18) {
            Some(0x3e) => Some("amd64"),
            Some(0xb7) => Some("arm64"),
            _ => None,
        }
    } else {
        None
    };
    if let Some(a) = arch {
        return Ok(a.to_owned());
    }
    Err(Error::usage(
        format!(
            "{} is not a 64-bit {} executable (x86-64 or ARM64)",
            path.display(),
            if windows { "Windows" } else { "Linux" }
        ),
        if windows {
            "cross-build it: `cargo build --release --target x86_64-pc-windows-gnu -p \
             shoal-agent`, then --agent target/x86_64-pc-windows-gnu/release/shoal-agent.exe"
        } else {
            "build it: `cargo build --release -p shoal-agent`, then --agent \
             target/release/shoal-agent"
        },
    ))
}

/// Runs `build` in a fresh staging directory `<out>/.<name>-<pid>-<tag>` (the output
/// directory is created), and removes the staging directory afterwards, whatever happened.
pub(crate) fn with_staging<T>(
    o: &PackageOptions,
    tag: &str,
    build: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    std::fs::create_dir_all(&o.out)
        .map_err(|e| Error::other(format!("creating {}: {e}", o.out.display()), ""))?;
    let stage = o
        .out
        .join(format!(".{}-{}-{tag}", o.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let result = build(&stage);
    let _ = std::fs::remove_dir_all(&stage);
    result
}

/// Runs a packaging tool; an error names it and says how to get it (`install`), or
/// quotes what it printed when it failed.
pub(crate) fn run_tool(cmd: &mut std::process::Command, install: &str) -> Result<()> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| Error::other(format!("running {tool}: {e}"), install))?;
    if !out.status.success() {
        return Err(Error::other(
            format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "",
        ));
    }
    Ok(())
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::other(format!("reading {}: {e}", p.display()), ""))
}
