//! One lab session: the LAN, the payload and its signed release(s), and the runs of each
//! system on them (start the origin, start the agents, watch them finish, stop
//! everything, check every copy).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::files::{overwrite_spread, set_executable, sha256_hex, tail};
use super::procs::Proc;
use super::{Bins, Record, Scenario, System, torrent};
use crate::netns::Lan;

/// The fixed parts of one lab session: binaries, payload, keys, release, LAN.
pub struct Lab {
    bins: Bins,
    scenario: Scenario,
    work: PathBuf,
    lan: Lan,
    /// The versions of the file, oldest first: one, or two when measuring a delta.
    versions: Vec<Payload>,
    /// How many of them are published (the channel points at the last of those).
    published: usize,
    hook: PathBuf,
}

/// One version of the delivered file.
struct Payload {
    version: &'static str,
    file: PathBuf,
    /// SHA-256, hex.
    sha: String,
}

const NAME: &str = "update.bin";
const ORIGIN_PORT: u16 = 8443;

impl Lab {
    /// Builds the LAN, the payload and a signed release of it under `work` (the lab's
    /// own directory: whatever an earlier lab left there is replaced).
    pub fn new(bins: Bins, scenario: Scenario, work: &Path) -> Result<Lab, String> {
        if scenario.agents == 0 || scenario.agents > 150 {
            return Err("agents must be between 1 and 150".into());
        }
        if work.join("keys").exists() {
            std::fs::remove_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
        }
        std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
        let lan = Lan::new(1 + scenario.agents)?;
        lan.shape_host(0, scenario.origin_mbit)?;
        for i in 1..=scenario.agents {
            lan.shape_host(i, scenario.host_mbit(i - 1))?;
        }
        if let Some(pct) = scenario.loss_pct {
            for i in 0..=scenario.agents {
                drop_packets(lan.namespace(i), pct)?;
            }
        }
        let src = work.join("src");
        std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
        let v1 = src.join("v1.bin");
        crate::random_file(&v1, scenario.size as usize, scenario.seed);
        let mut versions = vec![Payload {
            version: "1.0.0",
            sha: sha256_hex(&v1)?,
            file: v1.clone(),
        }];
        if let Some(pct) = scenario.delta_pct {
            // The measured release v2 overwrites `pct` % of v1.
            let v2 = src.join("v2.bin");
            std::fs::copy(&v1, &v2).map_err(|e| e.to_string())?;
            overwrite_spread(&v2, pct / 100.0, scenario.seed)?;
            versions.push(Payload {
                version: "2.0.0",
                sha: sha256_hex(&v2)?,
                file: v2,
            });
        }
        let hook = work.join("aria2-done.sh");
        std::fs::write(
            &hook,
            "#!/bin/sh\n# aria2: GID, file count, first file\ndate +%s.%N > \"$3.lab-done\"\n",
        )
        .map_err(|e| e.to_string())?;
        set_executable(&hook)?;
        let mut lab = Lab {
            bins,
            work: work.to_owned(),
            lan,
            versions,
            published: 0,
            hook,
            scenario,
        };
        lab.publisher(&["keygen", "--keys", &lab.path("keys"), "--product", "lab"])?;
        lab.publish_next()?;
        Ok(lab)
    }

    fn path(&self, rel: &str) -> String {
        self.work.join(rel).to_string_lossy().into_owned()
    }

    /// The session's swarm key file (written on first use, readable by its owner only).
    fn swarm_key(&self) -> Result<String, String> {
        let path = self.work.join("swarm.key");
        if !path.exists() {
            let mut seed = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
                .map_err(|e| e.to_string())?;
            let key = shoal_protocol::discovery::SwarmKey::from_bytes(seed);
            std::fs::write(&path, format!("{}\n", key.to_text())).map_err(|e| e.to_string())?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
        }
        Ok(path.to_string_lossy().into_owned())
    }

    fn publisher(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new(&self.bins.publisher)
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", self.bins.publisher.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "shoal-publisher {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Publishes the next version on the channel.
    fn publish_next(&mut self) -> Result<(), String> {
        let Payload { version, file, .. } = &self.versions[self.published];
        // Each version's file is published under the same name, as a vendor would.
        let staged = self.work.join(format!("stage-{version}")).join(NAME);
        std::fs::create_dir_all(staged.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::copy(file, &staged).map_err(|e| e.to_string())?;
        self.publisher(&[
            "release",
            "--keys",
            &self.path("keys"),
            "--repo",
            &self.path("repo"),
            "--channel",
            "stable",
            "--version",
            version,
            "--quiet",
            staged.to_str().ok_or("non-UTF-8 path")?,
        ])?;
        self.published += 1;
        Ok(())
    }

    /// The version the channel points at now.
    fn current(&self) -> &Payload {
        &self.versions[self.published - 1]
    }

    /// Packets the loss rules dropped so far, all hosts together (0 without `loss_pct`).
    pub fn dropped_packets(&self) -> u64 {
        (0..=self.scenario.agents)
            .filter_map(|i| {
                let out = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        self.lan.namespace(i),
                        "nft",
                        "list",
                        "table",
                    ])
                    .args(["inet", "shoal_lab"])
                    .output()
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let after = text.split("counter packets ").nth(1)?;
                after.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// The scenario this lab runs.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Runs every system in `systems`, one after another, calling `each` with each
    /// record as it is made.
    pub fn run_all(
        &mut self,
        systems: &[System],
        mut each: impl FnMut(&Record),
    ) -> Result<Vec<Record>, String> {
        let mut records = Vec::new();
        for &sys in systems {
            let r = self.run(sys)?;
            each(&r);
            records.push(r);
        }
        Ok(records)
    }

    /// One run of `system`.
    pub fn run(&mut self, system: System) -> Result<Record, String> {
        let dir = self.work.join(system.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if self.versions.len() > 1 {
            self.prepare_previous(system, &dir)?;
        }
        let mut origin = self.start_origin(&dir)?;
        let result = self.measure(system, &dir);
        let origin_bytes = self.origin_bytes();
        let origin_usage = origin.stop(Duration::from_secs(10));
        let mut r = result?;
        r.origin_bytes = origin_bytes?;
        r.origin_copies = r.origin_bytes as f64 / self.scenario.size as f64;
        r.origin_cpu_s = origin_usage.cpu_s;
        Ok(r)
    }

    /// Gives every agent of `system` the previous release, the way that system would
    /// hold it: Shoal fetches it (its piece store keeps it), aria2 finds the old file
    /// where the new one goes, curl keeps nothing it could reuse.
    /// (Shoal must therefore run first in a delta session: only it needs the channel to
    /// point at the previous release for a while.)
    fn prepare_previous(&mut self, system: System, dir: &Path) -> Result<(), String> {
        match system {
            System::Shoal | System::ShoalPrivate => {
                if self.published > 1 {
                    return Err("in a delta session Shoal must run first (its agents fetch the previous release before the new one is published)".into());
                }
                let mut origin = self.start_origin(dir)?;
                let prepared = self.measure(system, dir);
                origin.stop(Duration::from_secs(10));
                prepared?;
                // Keep the piece store (OUT/.shoal-state), drop the delivered file so the
                // new one's arrival is what the measurement sees.
                for i in 1..=self.scenario.agents {
                    std::fs::remove_file(dir.join(format!("agent{i}")).join(NAME))
                        .map_err(|e| e.to_string())?;
                }
            }
            System::Aria2 { .. } => {
                let previous = self.versions[0].file.clone();
                for i in 1..=self.scenario.agents {
                    let out = dir.join(format!("agent{i}"));
                    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
                    std::fs::copy(&previous, out.join(NAME)).map_err(|e| e.to_string())?;
                }
            }
            System::Https => {}
        }
        if self.published < self.versions.len() {
            self.publish_next()?;
        }
        Ok(())
    }

    fn origin_url(&self) -> String {
        format!("https://{}:{ORIGIN_PORT}", self.lan.host_ip(0))
    }

    fn cert(&self) -> String {
        self.path("tls/cert.pem")
    }

    /// Starts `shoal-publisher serve` on host 0 and waits until it answers.
    fn start_origin(&self, dir: &Path) -> Result<Proc, String> {
        let ip = self.lan.host_ip(0);
        let mut cmd = self.lan.command_in(0, &self.bins.publisher);
        cmd.args(["serve", "--repo", &self.path("repo"), "--listen"])
            .arg(format!("{ip}:{ORIGIN_PORT}"))
            .args([
                "--self-signed",
                "--tls-dir",
                &self.path("tls"),
                "--san",
                &ip,
            ])
            .env("SHOAL_LOG", "warn");
        let log = dir.join("origin.log");
        let mut p = Proc::spawn(&mut cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.lines().any(|l| l.starts_with("serving")) {
                return Ok(p);
            }
            if p.poll().is_some() || Instant::now() > deadline {
                return Err(format!("the origin did not start:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The origin's `shoal_origin_sent_bytes_total`, asked up to 3 times: right after a
    /// large LAN finishes, the machine can be too busy to answer within one timeout.
    fn origin_bytes(&self) -> Result<u64, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match self.origin_bytes_once() {
                Ok(b) => return Ok(b),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn origin_bytes_once(&self) -> Result<u64, String> {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "--max-time",
                "10",
                "--cacert",
                &self.cert(),
            ])
            .arg(format!("{}/metrics", self.origin_url()))
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("shoal_origin_sent_bytes_total "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                format!(
                    "no byte counter from the origin's /metrics: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    }

    /// The command that makes agent `i` (host `i`) fetch with `system` into `out`.
    fn agent_command(
        &self,
        system: System,
        i: usize,
        out: &Path,
        dir: &Path,
    ) -> Result<Command, String> {
        let url = self.origin_url();
        let artifact = format!("{url}/artifacts/{}/{NAME}", self.current().sha);
        let out_s = out.to_str().ok_or("non-UTF-8 path")?;
        Ok(match system {
            System::Shoal | System::ShoalPrivate => {
                let mut c = self.lan.command_in(i, &self.bins.agent);
                c.args(["fetch", &url, "--trust", &self.path("keys/trust/1.json")])
                    .args(["--channel", "stable", "--out", out_s, "--listen"])
                    .arg(format!("{}:7400", self.lan.host_ip(i)))
                    .args(["--interface", "eth0", "--ca", &self.cert()])
                    .args(["--seed-secs", "3600", "--quiet"])
                    .args(["--link", if self.marked_slow(i) { "slow" } else { "auto" }])
                    .env(
                        "SHOAL_LOG",
                        std::env::var("SHOAL_LAB_AGENT_LOG").unwrap_or_else(|_| "info".into()),
                    );
                if system == System::ShoalPrivate {
                    c.args(["--swarm-key", &self.swarm_key()?]);
                }
                c
            }
            System::Https => {
                let mut c = self.lan.command_in(i, "curl");
                c.args(["-sS", "--fail", "--cacert", &self.cert(), "-o"])
                    .arg(out.join(NAME))
                    .arg(artifact);
                c
            }
            System::Aria2 { piece_kib } => {
                let torrent = dir.join("update.torrent");
                if !torrent.exists() {
                    let meta = torrent::metainfo(
                        &self.current().file,
                        NAME,
                        piece_kib as u64 * 1024,
                        &artifact,
                    )
                    .map_err(|e| format!("torrent: {e}"))?;
                    std::fs::write(&torrent, meta).map_err(|e| e.to_string())?;
                }
                let mut c = self.lan.command_in(i, "aria2c");
                c.arg(format!("--dir={out_s}"))
                    .args([
                        "--enable-dht=false",
                        "--enable-dht6=false",
                        "--bt-enable-lpd=true",
                        "--bt-lpd-interface=eth0",
                        "--enable-peer-exchange=true",
                        "--seed-time=60",
                        "--seed-ratio=0.0",
                        "--check-integrity=true",
                        "--file-allocation=none",
                        "--summary-interval=0",
                        "--console-log-level=warn",
                        "--show-console-readout=false",
                        "--allow-overwrite=true",
                        "--auto-file-renaming=false",
                    ])
                    .arg(format!("--ca-certificate={}", self.cert()))
                    .arg(format!("--on-bt-download-complete={}", self.hook.display()))
                    .arg(torrent);
                c
            }
        })
    }

    /// Whether agent `i` (host `i`, from 1) is slow and says so.
    fn marked_slow(&self, i: usize) -> bool {
        self.scenario
            .slow
            .is_some_and(|s| s.marked && i >= 1 && i <= s.agents)
    }

    /// Starts every agent (late ones late), waits until all hold a copy, stops them.
    fn measure(&mut self, system: System, dir: &Path) -> Result<Record, String> {
        let sc = self.scenario.clone();
        let n = sc.agents;
        let late_from = sc.late.map_or(n + 1, |l| n + 1 - l.agents.min(n));
        let late_after = Duration::from_secs_f64(sc.late.map_or(0.0, |l| l.after_s));
        // Generous: every agent fetching everything from the origin, three times over.
        let limit = Duration::from_secs_f64(
            60.0 + late_after.as_secs_f64()
                + 3.0 * n as f64 * sc.size as f64 * 8.0 / (sc.origin_mbit as f64 * 1e6),
        );
        let links_before: Vec<(u64, u64)> = (0..=n).map(|i| self.lan.host_link_bytes(i)).collect();
        let mut procs: Vec<Option<Proc>> = (0..=n).map(|_| None).collect();
        let mut finish: Vec<Option<f64>> = vec![None; n + 1];
        let t0 = Instant::now();
        let t0_wall = SystemTime::now();
        let outs: Vec<PathBuf> = (0..=n).map(|i| dir.join(format!("agent{i}"))).collect();
        let mut failure = None;
        while finish[1..].iter().any(Option::is_none) {
            let now = t0.elapsed();
            if now > limit {
                failure = Some(format!(
                    "{}: agents {:?} did not finish within {limit:?}",
                    system.name(),
                    (1..=n).filter(|&i| finish[i].is_none()).collect::<Vec<_>>()
                ));
                break;
            }
            for i in 1..=n {
                if procs[i].is_none() && (i < late_from || now >= late_after) {
                    std::fs::create_dir_all(&outs[i]).map_err(|e| e.to_string())?;
                    let mut cmd = self.agent_command(system, i, &outs[i], dir)?;
                    procs[i] = Some(Proc::spawn(&mut cmd, &dir.join(format!("agent{i}.log")))?);
                }
                let Some(p) = procs[i].as_mut() else { continue };
                if finish[i].is_some() {
                    continue;
                }
                p.sample_memory();
                let exited = p.poll();
                finish[i] = match system {
                    System::Shoal | System::ShoalPrivate => outs[i]
                        .join(NAME)
                        .exists()
                        .then(|| t0.elapsed().as_secs_f64()),
                    System::Https => exited
                        .filter(|u| u.code == 0)
                        .map(|u| (u.at - t0).as_secs_f64()),
                    System::Aria2 { .. } => {
                        std::fs::read_to_string(outs[i].join(format!("{NAME}.lab-done")))
                            .ok()
                            .and_then(|s| s.trim().parse::<f64>().ok())
                            .map(|at| {
                                at - t0_wall
                                    .duration_since(UNIX_EPOCH)
                                    .map_or(0.0, |d| d.as_secs_f64())
                            })
                    }
                };
                if finish[i].is_none()
                    && let Some(u) = exited
                {
                    let log = std::fs::read_to_string(dir.join(format!("agent{i}.log")))
                        .unwrap_or_default();
                    failure = Some(format!(
                        "{} agent {i} exited with {} before finishing:\n{}",
                        system.name(),
                        u.code,
                        tail(&log, 20)
                    ));
                }
            }
            if failure.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let links_after: Vec<(u64, u64)> = (0..=n).map(|i| self.lan.host_link_bytes(i)).collect();
        let mut cpu = 0.0;
        let mut rss = 0u64;
        for p in procs.iter_mut().flatten() {
            let u = p.stop(Duration::from_secs(10));
            cpu += u.cpu_s;
            rss = rss.max(u.max_rss);
        }
        if let Some(f) = failure {
            return Err(f);
        }
        let mut verified = true;
        for out in &outs[1..] {
            verified &=
                sha256_hex(&out.join(NAME)).ok().as_deref() == Some(self.current().sha.as_str());
        }
        let finish_s: Vec<f64> = finish[1..].iter().map(|f| f.unwrap_or(f64::NAN)).collect();
        let time_s = finish_s.iter().copied().fold(0.0, f64::max);
        let rx: u64 = (1..=n).map(|i| links_after[i].0 - links_before[i].0).sum();
        let bound_s = sc.bound_s();
        Ok(Record {
            system: system.name(),
            agents: n,
            size_bytes: sc.size,
            origin_mbit: sc.origin_mbit,
            host_mbit: sc.host_mbit,
            late: sc.late,
            slow: sc.slow,
            delta_pct: sc.delta_pct,
            loss_pct: sc.loss_pct,
            bound_s,
            time_s,
            bound_ratio: time_s / bound_s,
            finish_s,
            origin_bytes: 0,
            origin_copies: 0.0,
            origin_link_bytes: links_after[0].1 - links_before[0].1,
            agent_rx_copies: rx as f64 / n as f64 / sc.size as f64,
            agent_cpu_s: cpu,
            origin_cpu_s: 0.0,
            agent_max_rss_mib: rss as f64 / (1024.0 * 1024.0),
            verified,
        })
    }
}

/// Makes namespace `ns` drop `pct` percent of the packets it sends, at random.
fn drop_packets(ns: &str, pct: f64) -> Result<(), String> {
    if !(0.0..=50.0).contains(&pct) {
        return Err(format!("loss {pct} % is outside 0 to 50"));
    }
    let per_10k = (pct * 100.0).round() as u32;
    let rules = format!(
        "add table inet shoal_lab\n\
         add chain inet shoal_lab out {{ type filter hook output priority 0; }}\n\
         add rule inet shoal_lab out numgen random mod 10000 < {per_10k} counter drop\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e} (install nftables for --loss)"))?;
    use std::io::Write as _;
    child
        .stdin
        .take()
        .ok_or("nft stdin")?
        .write_all(rules.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns}: {} (install nftables for --loss)",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
