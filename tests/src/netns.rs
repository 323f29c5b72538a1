//! Test hosts in network namespaces on one Linux bridge (needs root).
//!
//! [`Lan::new`] builds a bridge with address `198.18.0.1/24` in the test's own namespace
//! and `n` hosts `198.18.0.10 …`, each in its own namespace with a veth on the bridge,
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

/// A bridge and its namespaced hosts.
pub struct Lan {
    bridge: String,
    hosts: Vec<String>,
    veths: Vec<String>,
    children: Vec<Child>,
}

impl Lan {
    /// The bridge's address in the test's namespace (where an in-process origin listens).
    pub const GATEWAY: &'static str = "198.18.0.1";

    /// Builds the bridge and `n` hosts (at most 200).
    pub fn new(n: usize) -> Result<Lan, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut lan = Lan {
            bridge: format!("shb{tag}"),
            hosts: Vec::new(),
            veths: Vec::new(),
            children: Vec::new(),
        };
        let br = lan.bridge.clone();
        ip(&["link", "add", &br, "type", "bridge", "mcast_snooping", "0"])?;
        ip(&["addr", "add", &format!("{}/24", Self::GATEWAY), "dev", &br])?;
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
            let addr = format!("{}/24", Self::host_ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(lan)
    }

    /// Host `i`'s address.
    pub fn host_ip(i: usize) -> String {
        format!("198.18.0.{}", 10 + i)
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
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i], program])
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
