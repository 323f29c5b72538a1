//! The processes one lab run starts: each is reaped with `wait4`, which hands back its
//! CPU time, and each is killed by its own PID if the run ends early. Peak memory is
//! sampled from `/proc/PID/status` (`VmHWM`) while the process runs: `wait4`'s figure
//! would include the lab's own pages that the child shared between fork and exec.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a reaped process used.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// Exit code, or `128 + signal`.
    pub code: i32,
    /// User plus system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set size, bytes, as last sampled ([`Proc::sample_memory`]).
    pub max_rss: u64,
    /// When the lab saw it exit.
    pub at: Instant,
}

/// One started process.
pub struct Proc {
    pid: libc::pid_t,
    usage: Option<Usage>,
    max_rss: u64,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log` (created or truncated).
    pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Proc, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {cmd:?}: {e}"))?;
        // The `Child` handle is dropped (which neither waits nor kills); this type reaps
        // the PID itself so that it gets the resource usage.
        Ok(Proc {
            pid: child.id() as libc::pid_t,
            usage: None,
            max_rss: 0,
        })
    }

    /// Reads the running program's peak RSS so far (`VmHWM`, reset by exec, so it is the
    /// program's own); call it often for processes that exit by themselves.
    pub fn sample_memory(&mut self) {
        if self.usage.is_some() {
            return;
        }
        let hwm = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            });
        if let Some(kib) = hwm {
            self.max_rss = self.max_rss.max(kib * 1024);
        }
    }

    /// Reaps the process if it has exited; returns its usage once it has.
    pub fn poll(&mut self) -> Option<Usage> {
        if self.usage.is_none() {
            let mut status = 0;
            // SAFETY: plain syscall on our own child; `ru` is written by the kernel.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == self.pid {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                self.usage = Some(Usage {
                    code,
                    cpu_s: secs(ru.ru_utime) + secs(ru.ru_stime),
                    max_rss: self.max_rss,
                    at: Instant::now(),
                });
            }
        }
        self.usage
    }

    /// Sends `signal` unless the process has been reaped already.
    fn signal(&mut self, signal: libc::c_int) {
        if self.poll().is_none() {
            // SAFETY: our own unreaped child, so the PID cannot have been reused.
            unsafe { libc::kill(self.pid, signal) };
        }
    }

    /// SIGTERM, then waits up to `limit` (then SIGKILL) and returns the usage.
    pub fn stop(&mut self, limit: Duration) -> Usage {
        self.sample_memory();
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(u) = self.poll() {
                return u;
            }
            if Instant::now() > deadline {
                self.signal(libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.usage.is_none() {
            self.stop(Duration::from_secs(2));
        }
    }
}
