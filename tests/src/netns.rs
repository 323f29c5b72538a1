//! Test hosts in network namespaces on one Linux bridge (needs root).
//!
//! [`Lan::new`] builds a bridge with address `198.18.N.1/24` in the test's own namespace
//! (`N` chosen free under a file lock, so tests in parallel processes get separate
//! subnets) and `n` hosts `198.18.N.10 …`, each in its own namespace with a veth on the bridge,
//! multicast routed onto it and bridge multicast snooping off (so mDNS works between
//! hosts). Dropping the `Lan` kills the processes started through it and deletes the
//! namespaces, veths and bridge, also when the test panics. Names carry the test
//! process id, so parallel tests do not collide.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this process can create namespaces (root, with `ip` available).
pub fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A token-bucket shaper on the egress of `dev` (in namespace `ns`, if given).
fn tbf(ns: Option<&str>, dev: &str, mbit: u32) -> Result<(), String> {
    let mut args: Vec<String> = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n".into(), ns.into()]);
    }
    // The burst must hold at least one timer tick's worth of bytes at this rate.
    let burst_kb = (mbit / 8 * 4).max(64);
    args.extend(
        ["qdisc", "add", "dev", dev, "root", "tbf", "rate"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend([
        format!("{mbit}mbit"),
        "burst".into(),
        format!("{burst_kb}kb"),
        "latency".into(),
        "100ms".into(),
    ]);
    let out = Command::new("tc")
        .args(&args)
        .output()
        .map_err(|e| format!("tc {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A bridge and its namespaced hosts.
pub struct Lan {
    subnet: u8,
    bridge: String,
    hosts: Vec<String>,
    veths: Vec<String>,
    children: Vec<Child>,
}

impl Lan {
    /// The bridge's address in the test's namespace (where an in-process origin listens).
    pub fn gateway(&self) -> String {
        format!("198.18.{}.1", self.subnet)
    }

    /// Host `i`'s address.
    pub fn host_ip(&self, i: usize) -> String {
        format!("198.18.{}.{}", self.subnet, 10 + i)
    }

    /// Host `i`'s namespace name.
    pub fn namespace(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// A command that runs `program` inside host `i` (through `ip netns exec`, which
    /// execs it: the child's PID is the program's). The caller owns the process.
    pub fn command_in(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i]]).arg(program);
        cmd
    }

    /// Bytes host `i` has received and sent on its link so far, read from the bridge
    /// side of its veth (what the bridge sent it, what it sent the bridge).
    pub fn host_link_bytes(&self, i: usize) -> (u64, u64) {
        (self.link_stat(i, "tx_bytes"), self.link_stat(i, "rx_bytes"))
    }

    /// Packets host `i` has received and sent on its link so far (see
    /// [`Lan::host_link_bytes`]).
    pub fn host_link_packets(&self, i: usize) -> (u64, u64) {
        (
            self.link_stat(i, "tx_packets"),
            self.link_stat(i, "rx_packets"),
        )
    }

    /// One counter of the bridge side of host `i`'s veth (0 if unreadable).
    fn link_stat(&self, i: usize, what: &str) -> u64 {
        std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/{what}",
            self.veths[i]
        ))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Builds the bridge and `n` hosts (at most 200).
    pub fn new(n: usize) -> Result<Lan, String> {
        // Choose a free 198.18.N.0/24 while holding a lock shared by every test process.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("shoal-netns.lock"))
            .map_err(|e| format!("netns lock: {e}"))?;
        lock.lock().map_err(|e| format!("netns lock: {e}"))?;
        let used = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let subnet = (1..=250u8)
            .find(|n| !used.contains(&format!(" 198.18.{n}.1/")))
            .ok_or("no free 198.18.N.0/24 subnet")?;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut lan = Lan {
            subnet,
            bridge: format!("shb{tag}"),
            hosts: Vec::new(),
            veths: Vec::new(),
            children: Vec::new(),
        };
        let br = lan.bridge.clone();
        ip(&["link", "add", &br, "type", "bridge", "mcast_snooping", "0"])?;
        ip(&["addr", "add", &format!("{}/24", lan.gateway()), "dev", &br])?;
        drop(lock);
        ip(&["link", "set", &br, "up"])?;
        for i in 0..n.min(200) {
            let ns = format!("shoal{tag}h{i}");
            let veth = format!("shv{tag}h{i}");
            ip(&["netns", "add", &ns])?;
            lan.hosts.push(ns.clone());
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            lan.veths.push(veth.clone());
            ip(&["link", "set", &veth, "master", &br])?;
            ip(&["link", "set", &veth, "up"])?;
            let addr = format!("{}/24", lan.host_ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(lan)
    }

    /// Shapes every host's link to `mbit` in both directions.
    pub fn shape_hosts(&self, mbit: u32) -> Result<(), String> {
        (0..self.hosts.len()).try_for_each(|i| self.shape_host(i, mbit))
    }

    /// Shapes host `i`'s link to `mbit` in both directions (replacing earlier shaping).
    pub fn shape_host(&self, i: usize, mbit: u32) -> Result<(), String> {
        let (ns, veth) = (&self.hosts[i], &self.veths[i]);
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", veth, "root"])
            .output();
        let _ = Command::new("tc")
            .args(["-n", ns, "qdisc", "del", "dev", "eth0", "root"])
            .output();
        tbf(None, veth, mbit)?;
        tbf(Some(ns), "eth0", mbit)
    }

    /// A TCP listener bound to `port` on host `i` (its socket lives in that namespace,
    /// whichever thread later serves it).
    pub fn listen_on(&self, i: usize, port: u16) -> std::net::TcpListener {
        let addr = format!("{}:{port}", self.host_ip(i));
        let l = self
            .spawn_thread_in(i, move || std::net::TcpListener::bind(addr))
            .join()
            .expect("bind thread")
            .expect("bind in the namespace");
        l.set_nonblocking(true).expect("non-blocking listener");
        l
    }

    /// Starts `program args` inside host `i`; the `Lan` kills it when dropped.
    pub fn spawn(
        &mut self,
        i: usize,
        program: &str,
        args: &[String],
        out: Stdio,
        err: Stdio,
    ) -> u32 {
        let child = self
            .command_in(i, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn in namespace");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Runs `f` on a new thread inside host `i`'s namespace: sockets it opens and threads
    /// it starts (an mDNS daemon, a runtime) live on that host.
    pub fn spawn_thread_in<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.hosts[i]);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: a valid namespace fd; affects only this new thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {path}");
            f()
        })
    }

    /// Sends SIGTERM to every process started here and waits for them.
    pub fn terminate_all(&mut self) {
        for c in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.hosts {
            let _ = ip(&["netns", "del", ns]);
        }
        for v in &self.veths {
            let _ = ip(&["link", "del", v]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
