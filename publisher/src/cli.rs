//! The command line: flags, user-facing output and exit codes. Each subcommand calls
//! one library function; this module only parses, prints and maps errors to codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode as ProcessExit;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{Error, ExitCode, Result};
use crate::keygen::{KeygenOptions, RotateOptions};
use crate::keystore::KeyRole;
use crate::release::{ReleaseOptions, ReleaseOutcome};
use crate::serve;
use crate::source::Source;
use crate::verify::VerifyOptions;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  verify found a missing, altered or forged file
  2  bad flags or arguments
  3  refused: conflicts with what is already published or stored
     (e.g. a release version reused with other files, keys that already exist)
  4  a file, key, certificate or network operation failed";

const DAY: u64 = 24 * 60 * 60;

/// Publish signed Shoal releases and serve them.
#[derive(Parser, Debug)]
#[command(name = "shoal-publisher", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create root and release keys and the first trust document.
    #[command(after_help = EXIT_CODES)]
    Keygen {
        /// Key directory to create (must not hold keys yet).
        #[arg(long)]
        keys: PathBuf,
        /// Product name, e.g. acme-driver.
        #[arg(long)]
        product: String,
        /// Number of root keys.
        #[arg(long, default_value_t = 1)]
        root_keys: u32,
        /// Root signatures required to change trust.
        #[arg(long, default_value_t = 1)]
        root_threshold: u32,
        /// Lifetime of the trust document, in days.
        #[arg(long, default_value_t = 730, value_parser = clap::value_parser!(u64).range(1..=36500))]
        expires_days: u64,
    },
    /// Chunk, hash, lay out and sign a release of a channel.
    #[command(after_help = EXIT_CODES)]
    Release {
        /// Key directory.
        #[arg(long)]
        keys: PathBuf,
        /// Release directory to write (what the origin serves).
        #[arg(long)]
        repo: PathBuf,
        /// Channel, e.g. stable.
        #[arg(long)]
        channel: String,
        /// Human version string of this release, e.g. 2.4.1.
        #[arg(long)]
        version: String,
        /// Operating system of the artifacts (linux, windows, any, …).
        #[arg(long, default_value = "any")]
        os: String,
        /// CPU architecture of the artifacts (x86_64, aarch64, any, …).
        #[arg(long, default_value = "any")]
        arch: String,
        /// Manifest lifetime in days; agents refuse it afterwards.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=36500))]
        expires_days: u64,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        /// Artifact files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Re-sign channels' current manifests (same files, next manifest version, new
    /// expiry). Run it well before `expires`: agents refuse an expired manifest.
    #[command(after_help = EXIT_CODES)]
    Refresh {
        /// Key directory.
        #[arg(long)]
        keys: PathBuf,
        /// Release directory.
        #[arg(long)]
        repo: PathBuf,
        /// Channel to refresh (repeatable); default all.
        #[arg(long)]
        channel: Vec<String>,
        /// New manifest lifetime in days.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=36500))]
        expires_days: u64,
    },
    /// Check a release directory or a served origin end to end.
    #[command(after_help = EXIT_CODES)]
    Verify {
        /// Origin base URL (https://…); omit and use --repo for a directory.
        url: Option<String>,
        /// Release directory.
        #[arg(long, conflicts_with = "url")]
        repo: Option<PathBuf>,
        /// Trust document to start from (what agents ship); default: trust/1.json of the
        /// release itself.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Channel to check (repeatable); required with a URL, default all for --repo.
        #[arg(long)]
        channel: Vec<String>,
        /// Extra CA certificate (PEM) to trust for the origin, e.g. a self-signed one.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Serve a release directory over HTTPS.
    #[command(after_help = EXIT_CODES)]
    Serve {
        /// Release directory.
        #[arg(long)]
        repo: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// PEM certificate chain.
        #[arg(long, requires = "key", conflicts_with = "self_signed")]
        cert: Option<PathBuf>,
        /// PEM private key.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Use (and create if needed) a self-signed certificate.
        #[arg(long)]
        self_signed: bool,
        /// Where the self-signed certificate lives.
        #[arg(long, requires = "self_signed")]
        tls_dir: Option<PathBuf>,
        /// Extra DNS name or IP for the self-signed certificate (repeatable).
        #[arg(long, requires = "self_signed")]
        san: Vec<String>,
    },
    /// What an origin (`shoal-publisher serve`) sent per release, read from its
    /// /metrics; with --endpoints, the share of the endpoints' bytes it did not send.
    #[command(after_help = EXIT_CODES)]
    Stats {
        /// Origin base URL (https://…).
        url: String,
        /// Extra CA certificate (PEM) to trust for the origin, e.g. a self-signed one.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// How many endpoints took each release (for the offload).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        endpoints: Option<u64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Build your agent package: the Shoal agent with your trust document, origin and
    /// channel, as a service endpoints install with their package manager.
    #[command(after_help = EXIT_CODES)]
    AgentPackage(crate::package::PackageArgs),
    /// Replace the root or release keys by publishing the next trust document.
    #[command(after_help = EXIT_CODES)]
    RotateKey {
        /// Key directory.
        #[arg(long)]
        keys: PathBuf,
        /// Which keys to replace.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Number of new keys.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Signatures required from the new keys.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        /// Lifetime of the new trust document, in days.
        #[arg(long, default_value_t = 730, value_parser = clap::value_parser!(u64).range(1..=36500))]
        expires_days: u64,
        /// Release directory: publish the new trust document there and, after a release
        /// key rotation, re-sign every channel's current manifest.
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Lifetime of re-signed manifests, in days.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=36500))]
        manifest_expires_days: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Root,
    Release,
}

/// Unix seconds now.
pub use shoal_cli::unix_now as now_unix;

/// Parses the command line, runs it, prints the outcome, returns the exit code.
pub fn main() -> ProcessExit {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ProcessExit::from(if e.use_stderr() {
                ExitCode::Usage as u8
            } else {
                0
            });
        }
    };
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    shoal_cli::init(default_level);
    match run(cli.command) {
        Ok(()) => ProcessExit::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ProcessExit::from(e.exit_code() as u8)
        }
    }
}

fn run(cmd: Command) -> Result<()> {
    let now = now_unix();
    match cmd {
        Command::Keygen {
            keys,
            product,
            root_keys,
            root_threshold,
            expires_days,
        } => {
            let r = crate::keygen::keygen(&KeygenOptions {
                keys: keys.clone(),
                product,
                root_keys,
                root_threshold,
                expires_in: expires_days.saturating_mul(DAY),
                now,
            })?;
            println!("created keys in {}", keys.display());
            for k in &r.root {
                println!("  root key    {k}");
            }
            for k in &r.release {
                println!("  release key {k}");
            }
            println!("trust document: {}", r.trust_path.display());
            println!("ship this trust document with your agent package; keep root keys offline");
        }
        Command::Release {
            keys,
            repo,
            channel,
            version,
            os,
            arch,
            expires_days,
            quiet,
            files,
        } => {
            let o = ReleaseOptions {
                keys,
                repo: repo.clone(),
                channel: channel.clone(),
                version: version.clone(),
                files,
                os,
                arch,
                expires_in: expires_days.saturating_mul(DAY),
                quiet,
                now,
            };
            match crate::release::run(&o)? {
                ReleaseOutcome::Published { version: v } => println!(
                    "published {version} on channel {channel} as manifest version {v} in {}",
                    repo.display()
                ),
                ReleaseOutcome::AlreadyPublished { version: v } => println!(
                    "{version} is already published on channel {channel} (manifest version {v}); nothing to do"
                ),
            }
        }
        Command::Refresh {
            keys,
            repo,
            channel,
            expires_days,
        } => {
            let done = crate::refresh::run(&crate::refresh::RefreshOptions {
                keys,
                repo,
                channels: channel,
                expires_in: expires_days.saturating_mul(DAY),
                now,
            })?;
            for (ch, v, expires) in done {
                println!(
                    "refreshed channel {ch}: manifest version {v}, expires at {expires} (Unix time)"
                );
            }
        }
        Command::Verify {
            url,
            repo,
            trust,
            channel,
            ca,
        } => {
            let (source, label) = match (url, repo) {
                (Some(u), None) => {
                    if channel.is_empty() {
                        return Err(Error::usage(
                            "verify URL needs --channel",
                            "a static origin cannot list its channels: name them with --channel",
                        ));
                    }
                    let s = Source::http(&u, ca.as_deref()).map_err(|e| Error::other(e, ""))?;
                    (s, u)
                }
                (None, Some(r)) => (Source::Dir(r.clone()), r.display().to_string()),
                _ => {
                    return Err(Error::usage(
                        "verify needs an origin URL or --repo DIR",
                        "e.g. `shoal-publisher verify --repo ./release`",
                    ));
                }
            };
            let report = crate::verify::run(&VerifyOptions {
                source,
                anchor: trust,
                channels: channel,
                now,
            })
            .map_err(Error::Verify)?;
            if report.anchor_from_release {
                eprintln!(
                    "note: trust was anchored on the release's own trust/1.json; pass --trust \
                     with the document your agents ship to check against it"
                );
            }
            println!("ok: {label}: trust version {}", report.trust_version);
            for (ch, v, rel, n, bytes) in &report.channels {
                println!(
                    "ok: channel {ch}: manifest version {v}, release {rel}, {n} artifact(s), {} verified",
                    crate::progress::human_bytes(*bytes)
                );
            }
        }
        Command::AgentPackage(args) => crate::package::run(args)?,
        Command::Stats {
            url,
            ca,
            endpoints,
            json,
        } => {
            let source = Source::http(&url, ca.as_deref()).map_err(|e| Error::other(e, ""))?;
            let text = source
                .read_small("metrics", crate::stats::MAX_METRICS)
                .map_err(|e| Error::other(format!("{url}/metrics: {e}"), "is the origin up?"))?
                .ok_or_else(|| {
                    Error::other(
                        format!("{url}/metrics does not exist"),
                        "stats reads the /metrics of `shoal-publisher serve`; a plain static \
                         host or CDN keeps its own logs",
                    )
                })?;
            let text = String::from_utf8_lossy(&text);
            let stats = crate::stats::from_metrics(&text, endpoints)
                .map_err(|e| Error::other(format!("{url}/metrics: {e}"), ""))?;
            if json {
                let out = serde_json::to_string_pretty(&stats)
                    .map_err(|e| Error::other(e.to_string(), ""))?;
                println!("{out}");
            } else {
                print!("{}", crate::stats::to_text(&stats, endpoints));
            }
        }
        Command::Serve {
            repo,
            listen,
            cert,
            key,
            self_signed,
            tls_dir,
            san,
        } => serve_cmd(repo, listen, cert, key, self_signed, tls_dir, san)?,
        Command::RotateKey {
            keys,
            role,
            count,
            threshold,
            expires_days,
            repo,
            manifest_expires_days,
        } => {
            let r = crate::keygen::rotate(&RotateOptions {
                keys,
                role: match role {
                    RoleArg::Root => KeyRole::Root,
                    RoleArg::Release => KeyRole::Release,
                },
                count,
                threshold,
                expires_in: expires_days.saturating_mul(DAY),
                manifest_expires_in: manifest_expires_days.saturating_mul(DAY),
                repo: repo.clone(),
                now,
            })?;
            println!("published trust version {}", r.version);
            for k in &r.new_keys {
                println!("  new key {k}");
            }
            for (ch, v) in &r.resigned {
                println!("re-signed channel {ch} as manifest version {v}");
            }
            if repo.is_none() {
                println!(
                    "note: copy trust/{}.json from the key directory to the origin, or pass --repo",
                    r.version
                );
            }
        }
    }
    Ok(())
}

fn serve_cmd(
    repo: PathBuf,
    listen: SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: bool,
    tls_dir: Option<PathBuf>,
    san: Vec<String>,
) -> Result<()> {
    if !repo.is_dir() {
        return Err(Error::usage(
            format!("{} is not a directory", repo.display()),
            "--repo takes the directory that `shoal-publisher release` wrote",
        ));
    }
    let server_cert = match (cert, key, self_signed) {
        (Some(c), Some(k), false) => serve::tls::load(&c, &k)?,
        (None, None, true) => {
            let dir = tls_dir.unwrap_or_else(serve::tls::default_self_signed_dir);
            let mut names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            if !listen.ip().is_unspecified() {
                names.push(listen.ip().to_string());
            }
            names.extend(san);
            names.dedup();
            serve::tls::self_signed(&dir, &names)?
        }
        _ => {
            return Err(Error::usage(
                "serve needs --cert and --key, or --self-signed",
                "plain HTTP is not offered; any static HTTPS host can serve the release too",
            ));
        }
    };
    let tls = server_cert.server_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::other(format!("starting the runtime: {e}"), ""))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            Error::other(
                format!("cannot listen on {listen}: {e}"),
                "pick a free port with --listen, e.g. 127.0.0.1:8443",
            )
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::other(e.to_string(), ""))?;
        println!("serving {} on https://{addr}", repo.display());
        println!("certificate: {}", server_cert.cert_path.display());
        println!("sha256 fingerprint: {}", server_cert.fingerprint());
        let metrics = Arc::new(serve::Metrics::default());
        serve::run(
            listener,
            tls,
            &repo,
            metrics.clone(),
            shoal_cli::terminated(),
        )
        .await
        .map_err(|e| Error::other(format!("serving: {e}"), ""))?;
        println!("stopped; {}", metrics.summary());
        Ok(())
    })
}
