//! The command line of `shoal-agent`: flags, user-facing output, exit codes. Each
//! subcommand calls one library function.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shoal_protocol::swarm::SwarmConfig;
use tokio::sync::watch;

use crate::discovery::DiscoveryConfig;
use crate::error::{Error, exit};
use crate::fetch::{FetchOptions, run};
use crate::link::Link;
use crate::transfer::{TransferOptions, WRITE_TIMEOUT};

const EXIT_CODES: &str = "\
Exit codes:
  0  the release is verified and written
  1  the release could not be verified (bad signature, rollback, expired, bad index)
  2  bad flags or arguments
  3  neither the origin nor the LAN could provide the release
  4  a local file or network operation failed";

/// The Shoal endpoint agent.
#[derive(Parser, Debug)]
#[command(name = "shoal-agent", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Follow a channel: fetch each new release with LAN peers, deliver it, install it,
    /// keep seeding. Settings come from the config file (every key has a default).
    #[command(after_help = EXIT_CODES)]
    Run {
        /// Config file (TOML); default /etc/shoal/agent.toml when it exists.
        #[arg(long, env = "SHOAL_AGENT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Download a channel's current release once, with help from LAN peers.
    #[command(after_help = EXIT_CODES)]
    Fetch {
        /// Origin base URL (https://…).
        url: String,
        /// The vendor's trust document (shipped with the agent package).
        #[arg(long)]
        trust: PathBuf,
        /// Channel, e.g. stable.
        #[arg(long)]
        channel: String,
        /// Directory for the finished artifacts.
        #[arg(long)]
        out: PathBuf,
        /// Piece store (resumes and delta updates); default OUT/.shoal-state.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Address to accept peers on.
        #[arg(long, default_value = "0.0.0.0:0")]
        listen: SocketAddr,
        /// A peer to connect to (repeatable), for networks without multicast.
        #[arg(long = "peer")]
        peers: Vec<SocketAddr>,
        /// Do not discover peers over mDNS (use --peer only).
        #[arg(long)]
        no_mdns: bool,
        /// Use only this interface for mDNS (repeatable); default all.
        #[arg(long = "interface")]
        interfaces: Vec<String>,
        /// mDNS group: agents meet only agents of the same vendor and group (the group
        /// is never sent in clear).
        #[arg(long, default_value = "default")]
        group: String,
        /// A private swarm's key file (`shoal-agent swarm-key new` writes one): peers
        /// must hold the key, and everything between them is encrypted.
        #[arg(long)]
        swarm_key: Option<PathBuf>,
        /// This machine's link next to its neighbours': slow leaves origin fetches to
        /// other agents where there are enough; auto: slow on Wi-Fi or under 100 Mbit/s.
        #[arg(long, value_enum, default_value_t = Link::Auto)]
        link: Link,
        /// CA certificate (PEM) for the origin: when given, the only one trusted for it.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Accept a plain-HTTP origin (tests only: no transport security).
        #[arg(long)]
        danger_allow_http: bool,
        /// Keep serving peers this many seconds after the download finished.
        #[arg(long, default_value_t = 0)]
        seed_secs: u64,
        /// Longest wait for LAN peers before the first origin fetch, in seconds (it
        /// ends sooner once peers have joined and no new one has for 0.4 s).
        #[arg(long, default_value_t = 2.0)]
        origin_grace: f64,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Create or inspect a private swarm's key (`[private] key_file` in the config).
    #[command(subcommand, name = "swarm-key")]
    SwarmKey(SwarmKeyCommand),
    /// Run as a Windows service (Windows starts this; the vendor's .msi registers it).
    #[command(after_help = EXIT_CODES)]
    Service {
        /// The name the service is registered under.
        #[arg(long)]
        name: String,
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Show this agent: its release and progress, bytes from peers and the origin, its
    /// peers and bans, the last channel check. Reads the running daemon's API.
    #[command(after_help = VIEW_HELP)]
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the LAN swarm as this agent sees it: every agent it hears of, per release,
    /// how complete, and what the swarm saved the origin. Reads the running daemon's API.
    #[command(after_help = VIEW_HELP)]
    Swarm {
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `shoal-agent swarm-key …`.
#[derive(Subcommand, Debug)]
enum SwarmKeyCommand {
    /// Create a new random swarm key: written to a new file readable only by its owner,
    /// or printed. Give the same key to every agent of the organisation.
    New {
        /// The file to create (it must not exist); default: print the key.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the fingerprints of the keys in a key file (they name a key without
    /// revealing it; the agent logs the same).
    Fingerprint {
        /// The key file.
        file: PathBuf,
    },
}

const VIEW_HELP: &str = "\
Exit codes:
  0  shown
  2  bad flags, a config file that does not parse, or the agent wants a token (--token)
  3  no daemon answers at the API address
  4  a config file given with --config cannot be read";

/// Where the daemon's API is and how to read it.
#[derive(clap::Args, Debug)]
struct ApiArgs {
    /// The daemon's config file, for its [api] listen; default /etc/shoal/agent.toml
    /// when it exists.
    #[arg(long, env = "SHOAL_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// The API's address (overrides the config), e.g. 127.0.0.1:7401.
    #[arg(long)]
    api: Option<SocketAddr>,
    /// The API token, needed only from another host (or set SHOAL_API_TOKEN).
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Parses the command line, runs it, returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    // A Windows service must reach the service manager before anything else: no
    // runtime, no console logging.
    if let Command::Service { name, config } = cli.command {
        return match crate::service::run(crate::service::ServiceArgs { name, config }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(e.code)
            }
        };
    }
    let level = if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "warn"
    };
    shoal_cli::init(level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(exit::IO);
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.code)
        }
    }
}

async fn dispatch(cmd: Command) -> Result<(), Error> {
    match cmd {
        Command::Run { config } => {
            let default = std::path::Path::new(crate::config::DEFAULT_CONFIG);
            let path = config.or_else(|| default.exists().then(|| default.to_owned()));
            let cfg = crate::config::Config::load(path.as_deref())?;
            let (stop_tx, stop_rx) = watch::channel(false);
            tokio::spawn(async move {
                shoal_cli::terminated().await;
                stop_tx.send_replace(true);
            });
            crate::daemon::run(cfg, stop_rx).await
        }
        // Handled before the runtime starts (see `main`).
        Command::Service { name, config } => {
            crate::service::run(crate::service::ServiceArgs { name, config })
        }
        Command::SwarmKey(SwarmKeyCommand::New { out }) => {
            crate::secure::new_key_file(out.as_deref())
        }
        Command::SwarmKey(SwarmKeyCommand::Fingerprint { file }) => {
            let keys = crate::secure::SwarmKeys::load(&file)?;
            for (i, f) in keys.fingerprints().iter().enumerate() {
                let role = if i == 0 { "used" } else { "accepted" };
                println!("{f}  {role}");
            }
            Ok(())
        }
        Command::Status { api } => show(crate::show::View::Status, api).await,
        Command::Swarm { api } => show(crate::show::View::Swarm, api).await,
        Command::Fetch {
            url,
            trust,
            channel,
            out,
            state,
            listen,
            peers,
            no_mdns,
            interfaces,
            group,
            swarm_key,
            link,
            ca,
            danger_allow_http,
            seed_secs,
            origin_grace,
            quiet,
        } => {
            if !(0.0..=600.0).contains(&origin_grace) {
                return Err(Error::new(
                    exit::USAGE,
                    "--origin-grace must be 0 to 600 seconds",
                    "",
                ));
            }
            let private = swarm_key
                .as_deref()
                .map(crate::secure::SwarmKeys::load)
                .transpose()?;
            let product = crate::release::anchor_product(&trust)?;
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                Error::new(
                    exit::IO,
                    format!("cannot listen on {listen}: {e}"),
                    "pick a free address with --listen",
                )
            })?;
            let addr = listener
                .local_addr()
                .map_err(|e| Error::io("listener", e))?;
            let link = link.resolve(if no_mdns { &[] } else { &interfaces });
            if !quiet {
                eprintln!("listening for peers on {addr}");
                if link.light {
                    eprintln!(
                        "slow link ({}): origin fetches left to other agents where there are enough",
                        link.reason
                    );
                }
            }
            let o = FetchOptions {
                origin: url,
                trust,
                channel,
                state: state.unwrap_or_else(|| out.join(".shoal-state")),
                out,
                ca,
                danger_allow_http,
                discovery: (!no_mdns)
                    .then(|| DiscoveryConfig::new(interfaces, &product, &group, private.as_ref())),
                transfer: TransferOptions {
                    swarm: SwarmConfig {
                        origin_grace: Duration::from_secs_f64(origin_grace),
                        ..SwarmConfig::default()
                    },
                    peers,
                    older: Vec::new(),
                    gossip: None,
                    write_timeout: WRITE_TIMEOUT,
                    overlay: shoal_protocol::swarm::PeerSetConfig::default(),
                    me: crate::transfer::new_peer_id(link.light)?,
                    identity: crate::transfer::Identity::this_host(),
                    private,
                },
            };
            let (stop_tx, stop_rx) = watch::channel(false);
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            // Stop on SIGTERM/Ctrl-C, or `seed_secs` after the download finished.
            tokio::spawn({
                let stop_tx = stop_tx.clone();
                async move {
                    shoal_cli::terminated().await;
                    stop_tx.send_replace(true);
                }
            });
            tokio::spawn(async move {
                if done_rx.await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(seed_secs)).await;
                    stop_tx.send_replace(true);
                }
            });
            let show = progress_printer(quiet);
            let report = run(o, listener, Some(done_tx), stop_rx, show).await?;
            let c = report.progress.counters;
            let total = (c.from_peers + c.from_origin).max(1);
            println!(
                "release {}: {} file(s) verified; {} from peers ({:.0}%), {} from the origin",
                report.release,
                report.files.len(),
                shoal_cli::human_bytes(c.from_peers),
                100.0 * c.from_peers as f64 / total as f64,
                shoal_cli::human_bytes(c.from_origin),
            );
            for f in &report.files {
                println!("  {}", f.display());
            }
            Ok(())
        }
    }
}

async fn show(view: crate::show::View, a: ApiArgs) -> Result<(), Error> {
    // The default config may be root's alone (it holds the token): then the default
    // address it would most likely name is tried.
    let default = std::path::Path::new(crate::config::DEFAULT_CONFIG);
    let readable = std::fs::File::open(default).is_ok();
    let path = a
        .config
        .or_else(|| (a.api.is_none() && readable).then(|| default.to_owned()));
    let addr = crate::show::api_address(a.api, path.as_deref())?;
    let text = crate::show::fetch(view, addr, a.token.as_deref(), a.json).await?;
    print!("{text}");
    Ok(())
}

fn progress_printer(quiet: bool) -> impl Fn(&crate::transfer::Progress) + Send + 'static {
    let tty = std::io::stderr().is_terminal();
    let bar = (!quiet && tty).then(|| {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} pieces  {msg}")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b
    });
    let last = std::sync::Mutex::new(std::time::Instant::now() - Duration::from_secs(10));
    move |p| {
        let c = p.counters;
        let msg = format!(
            "peers {} / origin {}",
            shoal_cli::human_bytes(c.from_peers),
            shoal_cli::human_bytes(c.from_origin)
        );
        if let Some(b) = &bar {
            b.set_length(u64::from(p.total));
            b.set_position(u64::from(p.have));
            b.set_message(msg);
            if p.complete {
                b.finish_and_clear();
            }
        } else if !quiet
            && let Ok(mut t) = last.lock()
            && (t.elapsed() >= Duration::from_secs(1) || p.complete)
        {
            *t = std::time::Instant::now();
            eprintln!("{}/{} pieces, {msg}", p.have, p.total);
        }
    }
}
